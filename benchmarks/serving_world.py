"""The synthetic world the serving benchmark and the serving tests run on.

Clustered unit item vectors written to Feast online (``item_embeddings``) and to a Milvus collection
made like the streaming indexer makes it, users whose histories sit in one cluster
(``user_behavior``), and CTR models with random but large weights saved like trained ones under
``RUN_DIR/ctr/models/<name>`` (so every input moves the scores), with ``RUN_DIR/serving.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from feature_repo.store import apply_repo, open_store, write_online_items, write_online_users
from infra.config import MmadsConfig
from training.models.ctr import CTRModel, model_config
from training.models.inputs import IdVocab
from training.models.ranker import save_model

T0 = pd.Timestamp("2024-06-01", tz="UTC")


@dataclass(frozen=True)
class World:
    """A synthetic serving world (what was written where).

    Attributes:
        items: item_id, emb (d float32, unit norm), category, created_at, event_timestamp: the items
            WITH a vector (written to Feast online and Milvus).
        missing_item_ids: items the model knows that have no vector anywhere.
        users: user_id, hist_item_ids, hist_ts, last_event_ts, event_timestamp (Feast online).
        run_dir: the run directory holding ``ctr/models/<name>``.
        model_names: the models saved (the first is named in ``serving.json``).
    """

    items: pd.DataFrame
    missing_item_ids: np.ndarray
    users: pd.DataFrame
    run_dir: Path
    model_names: tuple[str, ...]


def _item_table(cfg: MmadsConfig, n_items: int, n_categories: int, rng: np.random.Generator) -> pd.DataFrame:
    d = cfg.model.dim
    centres = rng.normal(size=(n_categories, d))
    if d >= n_categories:  # well separated clusters: near-orthogonal centres
        centres = 3.0 * np.eye(n_categories, d) + 0.3 * centres
    cats = rng.integers(0, n_categories, size=n_items)
    vecs = centres[cats] + 0.6 * rng.normal(size=(n_items, d))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    created = T0 + pd.to_timedelta(rng.integers(0, 30 * 86400, size=n_items), unit="s")
    return pd.DataFrame({
        "item_id": np.arange(1000, 1000 + n_items, dtype=np.int64), "emb": list(vecs),
        "category": [f"cat{c}" for c in cats], "created_at": created, "event_timestamp": created,
    })


def _user_table(cfg: MmadsConfig, items: pd.DataFrame, n_users: int, rng: np.random.Generator) -> pd.DataFrame:
    by_cat = {str(k): np.asarray(v, dtype=np.int64) for k, v in items.groupby("category").indices.items()}
    cats = sorted(by_cat)
    rows = []
    for u in range(n_users):
        pool = by_cat[cats[u % len(cats)]]
        n = min(len(pool), int(rng.integers(1, cfg.model.history_len + 1)))
        pick = rng.choice(pool, size=n, replace=False)
        rows.append({"user_id": 1 + u, "hist_item_ids": items["item_id"].to_numpy()[pick].tolist()})
    users = pd.DataFrame(rows)
    users["last_event_ts"] = T0 + pd.Timedelta(days=31)
    last_us = int(users["last_event_ts"].iloc[0].value) // 1000
    users["hist_ts"] = [[last_us - 60_000_000 * k for k in range(len(h))] for h in users["hist_item_ids"]]
    users["event_timestamp"] = users["last_event_ts"]
    return users


def save_random_model(cfg: MmadsConfig, vocab: IdVocab, model_dir: Path, name: str, seed: int) -> str:
    """Save a CTR model with random (but large, so every input matters) weights like a trained one.

    Returns:
        Its model version.
    """
    torch.manual_seed(seed)
    model = CTRModel(model_config(name, vocab, id_dim=8, mlp_hidden=(16, 8), n_tiers=cfg.model.n_tiers,
                                  vec_dim=cfg.model.dim))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.4)
    model.eval()
    return save_model(model, vocab, model_dir, name=name, n_tiers=cfg.model.n_tiers,
                      history_len=cfg.model.history_len, vec_dim=cfg.model.dim)


def write_milvus(cfg: MmadsConfig, items: pd.DataFrame) -> None:
    """Create the item collection like the streaming indexer does and upsert ``items`` (then flush)."""
    from streaming.milvus_sink import MilvusSink

    sink = MilvusSink(cfg, cfg.model.dim)
    try:
        sink.ensure_collection()
        created_ms = (items["created_at"].astype("datetime64[ns, UTC]").astype("int64") // 1_000_000).to_numpy()
        for lo in range(0, len(items), 2000):
            part = items.iloc[lo:lo + 2000]
            sink.upsert(part["item_id"].to_numpy(), np.stack(part["emb"].to_list()), part["category"].tolist(),
                        created_ms[lo:lo + 2000], "bench")
        sink.maybe_flush(force=True)
    finally:
        sink.close()


def build_world(cfg: MmadsConfig, run_dir: Path, *, n_items: int = 60, n_users: int = 8, n_missing: int = 3,
                n_categories: int = 4, models: tuple[str, ...] = ("simtier_make", "simtier"), seed: int = 0,
                milvus: bool = True, apply: bool = True) -> World:
    """Write a synthetic world: Feast online rows, a Milvus collection and saved models.

    Args:
        cfg: the configuration (state dir, Milvus address and collection, dim, tiers, history length).
        run_dir: where the run directory goes (``ctr/models/<name>``, ``serving.json``).
        n_items: items with a vector.
        n_users: users with a history (ids 1..n_users).
        n_missing: extra items known to the model but without a vector (ids after the others).
        n_categories: vector clusters.
        models: model names to save; the first is the run's best (``serving.json``).
        seed: RNG seed.
        milvus: also write the Milvus collection (needs a running Milvus).
        apply: apply the Feast repo first (6-9 s; skip when ``cfg.state_dir`` already holds it).

    Returns:
        What was written.
    """
    rng = np.random.default_rng(seed)
    items = _item_table(cfg, n_items, n_categories, rng)
    users = _user_table(cfg, items, n_users, rng)
    missing = np.arange(1000 + n_items, 1000 + n_items + n_missing, dtype=np.int64)
    store = apply_repo(cfg) if apply else open_store(cfg)
    for lo in range(0, len(items), 5000):
        write_online_items(store, items.iloc[lo:lo + 5000])
    for lo in range(0, len(users), 500):
        write_online_users(store, users.iloc[lo:lo + 500])
    if milvus:
        write_milvus(cfg, items)
    known = np.concatenate([items["item_id"].to_numpy()[: max(1, n_items * 3 // 4)], missing])
    vocab = IdVocab(user_ids=np.sort(users["user_id"].to_numpy(np.int64))[: max(1, n_users - 1)],
                    item_ids=np.sort(known), categories=tuple(sorted(items["category"].unique())))
    run_dir.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(models):
        save_random_model(cfg, vocab, run_dir / "ctr" / "models" / name, name, seed + k)
    (run_dir / "serving.json").write_text(json.dumps({"model": models[0]}))
    return World(items=items, missing_item_ids=missing, users=users, run_dir=run_dir, model_names=models)
