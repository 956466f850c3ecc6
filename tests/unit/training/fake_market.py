"""A tiny seeded marketplace in the training-set schema (until the real builder is wired in).

Items have a latent vector (category centre + noise) and an ID-level quality; the observed item
vector is the latent plus noise. Users have an interest point and a behavior log near it. Click
probability rises with the cosine between the item's latent and the mean latent of the user's
history at impression time, with item quality, and with a per-user bias. Items created late have no
training impressions: only content (vectors, SimTier) can tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from feature_repo.simtier import SIMTIER_COLUMNS, simtier

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2024-03-01", tz="UTC")


@dataclass(frozen=True)
class Market:
    """The fake market: the training-set frame and the item-vector table."""

    frame: pd.DataFrame
    item_vectors: pd.DataFrame


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _items(rng: np.random.Generator, n_items: int, n_cats: int, dim: int, days: int) -> pd.DataFrame:
    centres = rng.normal(size=(n_cats, dim))
    cat = rng.integers(0, n_cats, n_items)
    latent = _unit(centres[cat] + 0.9 * rng.normal(size=(n_items, dim)))
    observed = _unit(latent + 0.3 * rng.normal(size=(n_items, dim)) / np.sqrt(dim) * 4)
    created = T0 - 20 * DAY + pd.to_timedelta(rng.uniform(0, days + 20, n_items), unit="D")
    return pd.DataFrame({
        "item_id": np.arange(1000, 1000 + n_items, dtype=np.int64),
        "category": [f"c{c}" for c in cat],
        "created_at": created.floor("us"),
        "latent": list(latent),
        "emb": list(observed.astype(np.float32)),
        "quality": rng.normal(0, 0.6, n_items),
    })


def _user_rows(rng: np.random.Generator, items: pd.DataFrame, n_imp: int, days: int,
               history_len: int) -> list[tuple[pd.Timestamp, int, list[int]]]:
    latent = np.stack(items["latent"].to_numpy())
    created = items["created_at"].dt.tz_convert(None).to_numpy()
    interest = _unit(latent[rng.integers(len(items))] + 0.3 * rng.normal(size=latent.shape[1]))
    near = np.argsort(-(latent @ interest))[: max(30, len(items) // 8)]
    n_beh = int(rng.integers(5, 2 * history_len))
    t0 = T0.tz_convert(None).to_datetime64()
    beh_ts = np.sort(t0 + (rng.uniform(-10, days, n_beh) * 86400e6).astype("timedelta64[us]"))
    beh_items = rng.choice(near, n_beh)
    beh_items = np.where(created[beh_items] < beh_ts, beh_items, rng.choice(near, n_beh))
    imp_ts = np.sort(t0 + (rng.uniform(0, days, n_imp) * 86400e6).astype("timedelta64[us]"))
    rows = []
    for ts in imp_ts:
        k = int(np.searchsorted(beh_ts, ts))
        hist = beh_items[:k][::-1][:history_len].tolist()
        pool = near if rng.random() < 0.5 else np.arange(len(items))
        cand = rng.choice(pool, 8)
        fresh = cand[created[cand] < ts]
        if len(fresh):
            rows.append((pd.Timestamp(ts, tz="UTC"), int(fresh[0]), hist))
    return rows


def fake_market(seed: int = 0, *, n_users: int = 120, n_items: int = 300, imps_per_user: int = 40,
                dim: int = 16, n_tiers: int = 10, history_len: int = 20, n_cats: int = 6,
                days: int = 10, alpha: float = 4.0) -> Market:
    """Build a seeded fake market in the training-set schema.

    Returns:
        The frame (columns of the training-set contract) and the item-vector table.
    """
    rng = np.random.default_rng(seed)
    items = _items(rng, n_items, n_cats, dim, days)
    latent = np.stack(items["latent"].to_numpy())
    user_bias = rng.normal(0, 0.5, n_users)
    recs = []
    for u in range(n_users):
        for ts, item, hist in _user_rows(rng, items, imps_per_user, days, history_len):
            recs.append((u, ts, item, hist))
    user = np.array([r[0] for r in recs])
    item = np.array([r[2] for r in recs])
    hists = [r[3] for r in recs]
    pref = np.array([latent[h].mean(0) @ latent[i] if h else 0.0 for h, i in zip(hists, item, strict=True)])
    logit = alpha * pref + items["quality"].to_numpy()[item] + user_bias[user] - 1.5
    clicked = (rng.random(len(recs)) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    emb = np.stack(items["emb"].to_numpy())
    has_emb = rng.random(len(recs)) > 0.05
    target = emb[item] * has_emb[:, None]
    hist_arr = np.zeros((len(recs), history_len, dim), dtype=np.float32)
    lengths = np.array([len(h) for h in hists])
    for r, h in enumerate(hists):
        hist_arr[r, : len(h)] = emb[h]
    feats = pd.DataFrame(simtier(target, hist_arr, lengths, n_tiers), columns=SIMTIER_COLUMNS(n_tiers))
    ids = items["item_id"].to_numpy()
    frame = pd.DataFrame({
        "user_id": (user + 1).astype(np.int64),
        "item_id": ids[item],
        "ts": pd.to_datetime([r[1] for r in recs], utc=True).astype("datetime64[us, UTC]"),
        "clicked": clicked,
        "category": items["category"].to_numpy()[item],
        "item_created_at": items["created_at"].to_numpy()[item],
        "has_emb": has_emb,
        "item_emb": list(target.astype(np.float32)),
        "hist_item_ids": [ids[h].astype(np.int64) for h in hists],
    })
    frame = pd.concat([frame, feats], axis=1).sort_values("ts", kind="stable").reset_index(drop=True)
    vectors = items[["item_id", "emb", "category", "created_at"]].copy()
    return Market(frame=frame, item_vectors=vectors)
