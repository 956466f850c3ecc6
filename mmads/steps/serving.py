"""Main-job stage that starts the ranking service and checks it: latency, parity, retrieval.

* sample ``/rank`` requests (one per sampled test user, 200 candidates) give ``serving.p50_ms/p99_ms``;
* parity: for the same (user, candidates) at the end of the replay, Feast historical retrieval
  (offline) must equal the online features (``offline_online_max_abs_diff``), and the service's
  scores must equal the offline model's scores on the offline features (``serving_offline_max_abs_diff``);
  a difference above ``checks.parity_tolerance`` fails the stage, naming the worst rows;
* requests carry the ids as the dataset wrote them (strings stay strings), as a client would;
* retrieval: ``/recommend`` (k=100) for >= 200 test users; recall@100 of their test-period clicked
  items, overall and for new items, beside a most-popular baseline with the same history exclusion.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from tqdm import tqdm

from infra.processes import start_process, stop_process
from training.models.registry import DEFAULT_MODEL

if TYPE_CHECKING:
    import httpx

    from mmads.context import RunContext

logger = logging.getLogger(__name__)

N_RANK_USERS = 200
N_CANDIDATES = 200
N_PARITY_USERS = 20
N_RETRIEVAL_USERS = 300
K = 100
SERVICE = "serving"


def _client(ctx: RunContext) -> httpx.Client:
    import httpx

    return httpx.Client(base_url=f"http://{ctx.cfg.serving.host}:{ctx.cfg.serving.port}", timeout=30.0)


def start_service(ctx: RunContext) -> None:
    """Start ``mmads serve`` on the run directory and wait for /healthz."""
    (ctx.run_dir / "serving.json").write_text(json.dumps({"model": DEFAULT_MODEL}))
    stop_process(ctx.cfg.state_dir, SERVICE)
    argv = [sys.executable, "-m", "mmads", "--config", str(ctx.config_file), "serve", "--run", str(ctx.run_dir)]
    start_process(ctx.cfg.state_dir, SERVICE, argv, role="client", host=ctx.cfg.serving.host,
                  port=ctx.cfg.serving.port, ready_timeout_s=180)
    with _client(ctx) as client:
        deadline = time.monotonic() + 60
        while True:
            r = client.get("/healthz")
            if r.status_code == 200:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service is not healthy: {r.status_code} {r.text[:300]}")
            time.sleep(0.5)


def _test_frame(ctx: RunContext) -> tuple[pd.DataFrame, pd.Timestamp, set[int]]:
    ds = ctx.dataset
    cut = pd.Timestamp(ctx.result("validate")["cut_time"])
    test = ds.impressions[ds.impressions["ts"] >= cut]
    new_items = set(ds.items.loc[ds.items["created_at"] > cut, "item_id"].tolist())
    return test, cut, new_items


def _rank_requests(ctx: RunContext, client: httpx.Client) -> tuple[list[dict[str, Any]], list[float]]:
    test, _, _ = _test_frame(ctx)
    rng = np.random.default_rng(ctx.cfg.model.seed)
    users = test["user_id"].unique()
    users = rng.choice(users, size=min(N_RANK_USERS, len(users)), replace=False)
    all_items = ctx.dataset.items["item_id"].to_numpy()
    requests, latencies = [], []
    n_cands = min(N_CANDIDATES, len(all_items))
    for uid in tqdm(users, desc="/rank samples", unit="req"):
        own = test.loc[test["user_id"] == uid, "item_id"].unique()[:n_cands]
        fill = rng.choice(np.setdiff1d(all_items, own), size=n_cands - len(own), replace=False)
        cands = [int(i) for i in np.concatenate([own, fill])]
        # ids as the dataset wrote them: the service maps them like every other part
        spelled = [ctx.dataset.item_key(i) for i in cands]
        body = {"user_id": ctx.dataset.user_key(uid), "candidate_item_ids": spelled}
        t0 = time.perf_counter()
        r = client.post("/rank", json=body)
        latencies.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"/rank answered {r.status_code}: {r.text[:300]}")
        response = r.json()
        if {str(it["item_id"]) for it in response["items"]} != {str(i) for i in spelled}:
            raise RuntimeError(f"/rank answered other ids than it was asked about (user {body['user_id']})")
        requests.append({"request": body, "response": response, "user": int(uid), "items": cands})
    return requests, latencies


def _worst(rows: list[tuple[float, dict[str, Any]]], n: int = 5) -> list[dict[str, Any]]:
    return [r for _, r in sorted(rows, key=lambda x: -x[0])[:n]]


def _parity(ctx: RunContext, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Offline (historical retrieval at t) vs online features, and service vs offline model scores.

    Raises:
        ParityError: a difference above ``checks.parity_tolerance``, naming the worst users, items
            and features.
    """
    from feature_repo.online import OnlineFeatureReader
    from feature_repo.simtier import SIMTIER_COLUMNS
    from feature_repo.store import open_store
    from infra.errors import ParityError
    from infra.ids import id_to_int64
    from mmads.steps.modeling import item_vectors
    from training.models.ranker import Ranker
    from training.training_set import build_training_set

    store = open_store(ctx.cfg)
    sample = requests[:N_PARITY_USERS]
    # offline "as of just after the last event", not "now": the online rows hold the latest values,
    # and a dataset's clock is its own (a 1990s log is decades before now, beyond the feature TTLs;
    # a log running ahead of the wall clock would be cut at now)
    ds = ctx.dataset
    last = max(ds.behaviors["ts"].max(), ds.impressions["ts"].max(), ds.items["created_at"].max())
    t = last + pd.Timedelta(seconds=1)
    entity = pd.DataFrame([(q["user"], i) for q in sample for i in q["items"]], columns=["user_id", "item_id"])
    entity["ts"] = t
    entity["clicked"] = np.int8(0)
    path = ctx.run_dir / "parity_offline.parquet"
    build_training_set(ctx.cfg, store, entity, path, progress=False)
    offline = pd.read_parquet(path)
    cols = SIMTIER_COLUMNS(ctx.cfg.model.n_tiers)
    reader = OnlineFeatureReader(store, ctx.cfg)
    ranker = Ranker.load(ctx.run_dir / "ctr" / "models" / DEFAULT_MODEL)
    offline_scores = ranker.score(offline, item_vectors(ctx))
    feat_rows: list[tuple[float, dict[str, Any]]] = []
    score_rows: list[tuple[float, dict[str, Any]]] = []
    side_rows: list[dict[str, Any]] = []
    lo = 0
    for q in sample:
        n = len(q["items"])
        off = offline.iloc[lo:lo + n]
        on = reader.read(q["user"], q["items"])
        sim_gap = np.abs(off[cols].to_numpy(np.float64) - on.simtier)
        emb_gap = np.abs(np.stack(list(off["item_emb"])) - on.item_emb).max(axis=1)
        for j, item in enumerate(q["items"]):
            c = int(np.argmax(sim_gap[j]))
            gap, feature = (float(sim_gap[j, c]), cols[c]) if sim_gap[j, c] >= emb_gap[j] else \
                (float(emb_gap[j]), "item_emb")
            feat_rows.append((gap, {"user": ctx.dataset.user_key(q["user"]), "item": ctx.dataset.item_key(item),
                                    "feature": feature, "diff": gap}))
        for name, values in on.side.items():
            side_rows += [{"user": ctx.dataset.user_key(q["user"]), "item": ctx.dataset.item_key(item),
                           "feature": name, "offline": a, "online": b}
                          for item, a, b in zip(q["items"], off[name].tolist(), values, strict=True) if not _same(a, b)]
        served = {id_to_int64(it["item_id"]): it["score"] for it in q["response"]["items"]}
        svc = np.array([served[i] for i in q["items"]])
        gaps = np.abs(svc - offline_scores[lo:lo + n])
        score_rows += [(float(g), {"user": ctx.dataset.user_key(q["user"]), "item": ctx.dataset.item_key(i),
                                   "feature": "score", "served": float(a), "offline": float(b)})
                       for g, i, a, b in zip(gaps, q["items"], svc, offline_scores[lo:lo + n], strict=True)]
        lo += n
    feat_diff = max((g for g, _ in feat_rows), default=0.0)
    score_diff = max((g for g, _ in score_rows), default=0.0)
    tol = ctx.cfg.checks.parity_tolerance
    if feat_diff > tol:
        raise ParityError("offline-online", feat_diff, tol, _worst(feat_rows))
    if side_rows:
        raise ParityError(f"offline-online side-feature ({len(side_rows)} values differ)", 1.0, tol, side_rows)
    if score_diff > tol:
        raise ParityError("serving-offline", score_diff, tol, _worst(score_rows))
    return {"checked": int(len(entity)), "users": len(sample), "offline_online_max_abs_diff": feat_diff,
            "serving_offline_max_abs_diff": score_diff, "side_feature_mismatches": len(side_rows), "tolerance": tol}


def _same(a: Any, b: Any) -> bool:
    """Two stored side values agree (missing = None or NaN on either side)."""
    missing_a, missing_b = bool(pd.isna(a)), bool(pd.isna(b))
    return (missing_a and missing_b) or (not missing_a and not missing_b and a == b)


def _recall(recs: dict[int, list[int]], truth: dict[int, set[int]]) -> float:
    vals = [len(set(recs[u]) & t) / len(t) for u, t in truth.items() if t and u in recs]
    return float(np.mean(vals)) if vals else float("nan")


def _retrieval(ctx: RunContext, client: httpx.Client) -> tuple[dict[str, Any], list[float]]:
    from feature_repo.online import OnlineFeatureReader
    from feature_repo.store import open_store
    from infra.ids import id_to_int64

    test, cut, new_items = _test_frame(ctx)
    clicked = test[test["clicked"] == 1].groupby("user_id")["item_id"].apply(set)
    rng = np.random.default_rng(ctx.cfg.model.seed + 1)
    users = rng.choice(clicked.index.to_numpy(), size=min(N_RETRIEVAL_USERS, len(clicked)), replace=False)
    imps = ctx.dataset.impressions
    train_clicks = imps[(imps["ts"] < cut) & (imps["clicked"] == 1)]["item_id"].value_counts()
    popular = train_clicks.index.to_numpy()
    reader = OnlineFeatureReader(open_store(ctx.cfg), ctx.cfg)
    recs, pops, latencies = {}, {}, []
    for uid in tqdm(users, desc="/recommend", unit="req"):
        t0 = time.perf_counter()
        r = client.post("/recommend", json={"user_id": ctx.dataset.user_key(uid), "k": K})
        latencies.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"/recommend answered {r.status_code}: {r.text[:300]}")
        recs[int(uid)] = [id_to_int64(it["item_id"]) for it in r.json()["items"]]
        own = set(reader.read(int(uid), [int(popular[0])]).hist_item_ids.tolist())
        pops[int(uid)] = [int(i) for i in popular if i not in own][:K]
    truth = {int(u): clicked[u] for u in users}
    truth_new = {u: t & new_items for u, t in truth.items()}
    n_new = sum(1 for t in truth_new.values() if t)
    return {
        "users": len(users), "k": K, "recall@100": _recall(recs, truth), "recall@100_new": _recall(recs, truth_new),
        "users_with_new_clicks": n_new, "recall@100_popular": _recall(pops, truth),
        "recall@100_new_popular": _recall(pops, truth_new),
        "recommend_p50_ms": float(np.percentile(latencies, 50)),
        "recommend_p99_ms": float(np.percentile(latencies, 99)),
    }, latencies


def run_serve(ctx: RunContext) -> dict[str, Any]:
    """Start the service, send sample requests, check parity and measure retrieval."""
    start_service(ctx)
    with _client(ctx) as client:
        requests, rank_ms = _rank_requests(ctx, client)
        parity = _parity(ctx, requests)
        retrieval, rec_ms = _retrieval(ctx, client)
        first = ctx.dataset.item_key(int(ctx.dataset.items["item_id"].iloc[0]))
        similar = client.get(f"/similar/{quote(str(first), safe='')}", params={"k": 10})
    if similar.status_code != 200:
        raise RuntimeError(f"/similar answered {similar.status_code}: {similar.text[:300]}")
    served_version = requests[0]["response"]["model_version"] if requests else None
    return {
        "serving": {"model": DEFAULT_MODEL, "model_version": served_version, "requests": len(rank_ms),
                    "candidates": N_CANDIDATES, "p50_ms": float(np.percentile(rank_ms, 50)),
                    "p99_ms": float(np.percentile(rank_ms, 99))},
        "parity": parity,
        "retrieval": retrieval,
        "latency_samples_ms": {"/rank": rank_ms, "/recommend": rec_ms},
    }


def summarize_serve(r: dict[str, Any]) -> str:
    """One line: latency, parity and recall."""
    s, p, q = r["serving"], r["parity"], r["retrieval"]
    return (f"/rank p50 {s['p50_ms']:.1f} ms p99 {s['p99_ms']:.1f} ms; parity offline-online "
            f"{p['offline_online_max_abs_diff']:.1e}, serving-offline {p['serving_offline_max_abs_diff']:.1e}; "
            f"recall@100 {q['recall@100']:.3f} (new {q['recall@100_new']:.3f}, popular {q['recall@100_popular']:.3f})")
