"""Feature-store benchmark: training-set rows/s and online latency (fast path vs ODFV, SQLite, Redis).

Synthetic data shaped like the measurement in docs/architecture.md: users x 10 history snapshots of N items, d-dim
item vectors, impressions spread over the same period. ``run(quick=True)`` uses 100k impressions
and 1k users (skips 1M); the full run uses 5k users and 100k + 1M impressions (minutes, GBs).
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.row_size import user_row_sizes
from feature_repo.history import ItemVectors
from feature_repo.online import ItemRowCache, OnlineFeatureReader
from feature_repo.store import append_offline, apply_repo, write_online_items, write_online_users
from infra.config import MmadsConfig, load_config
from training.training_set import build_training_set

logger = logging.getLogger(__name__)

T0 = pd.Timestamp("2024-01-01", tz="UTC")
DAYS = 30
SNAPSHOTS = 10
CANDIDATES = 200


def _make_items(n_items: int, dim: int, rng: np.random.Generator) -> pd.DataFrame:
    vec = rng.normal(size=(n_items, dim)).astype(np.float32)
    return pd.DataFrame({
        "item_id": np.arange(n_items, dtype=np.int64), "emb": list(vec),
        "category": [f"c{i % 20}" for i in range(n_items)], "created_at": T0, "event_timestamp": T0,
    })


def _hist_ts(last_us: np.ndarray, n: int) -> list[list[int]]:
    """Per user, ``n`` behavior times (µs) a minute apart ending at ``last_us``, newest first."""
    return (np.asarray(last_us, np.int64)[:, None] - 60_000_000 * np.arange(n)[None, :]).tolist()


def _load(cfg: MmadsConfig, n_users: int, n_items: int, seed: int = 0) -> ItemVectors:
    """Write item rows and users x SNAPSHOTS history snapshots (offline), return the item table."""
    rng = np.random.default_rng(seed)
    d, n = cfg.model.dim, cfg.model.history_len
    items = _make_items(n_items, d, rng)
    append_offline(cfg, "item_embeddings", items)
    vectors = ItemVectors(items["item_id"].to_numpy(), np.stack(items["emb"].tolist()))
    for snap in range(SNAPSHOTS):
        ids = rng.integers(0, n_items, size=(n_users, n))
        ts = T0 + pd.to_timedelta(snap * DAYS / SNAPSHOTS, unit="D") + pd.to_timedelta(
            rng.integers(0, 3600, n_users), unit="s")
        append_offline(cfg, "user_behavior", pd.DataFrame({
            "user_id": np.arange(n_users, dtype=np.int64), "hist_item_ids": list(ids),
            "hist_ts": _hist_ts(pd.DatetimeIndex(ts).as_unit("us").asi8, n), "last_event_ts": ts, "event_timestamp": ts,
        }))
    return vectors


def _impressions(rows: int, n_users: int, n_items: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": rng.integers(0, n_users, rows).astype(np.int64),
        "item_id": rng.integers(0, n_items, rows).astype(np.int64),
        "clicked": rng.integers(0, 2, rows).astype(np.int8),
        "ts": T0 + pd.to_timedelta(rng.uniform(0, DAYS * 86400, rows), unit="s"),
    })


def _latency(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    fn()  # warm-up (registry load, connections)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _online(cfg: MmadsConfig, n_users: int, n_items: int, reps: int) -> dict[str, float]:
    """Fill the online store for a few users and all items; p50/p99 of both read paths."""
    store = apply_repo(cfg)
    rng = np.random.default_rng(2)
    items = _make_items(n_items, cfg.model.dim, rng)
    for lo in range(0, n_items, 2000):
        write_online_items(store, items.iloc[lo:lo + 2000])
    n = cfg.model.history_len
    ids = np.stack([rng.choice(n_items, n, replace=False) for _ in range(n_users)])  # a history has no repeats
    write_online_users(store, pd.DataFrame({
        "user_id": np.arange(n_users, dtype=np.int64), "hist_item_ids": list(ids),
        "hist_ts": _hist_ts(np.full(n_users, T0.value // 1000), n), "last_event_ts": T0, "event_timestamp": T0,
    }))
    sizes = user_row_sizes(store, list(range(n_users)), n)
    reader = OnlineFeatureReader(store, cfg)
    cands = rng.choice(n_items, CANDIDATES, replace=False).tolist()
    fast = _latency(lambda: reader.read(int(rng.integers(0, n_users)), cands), reps)
    odfv = _latency(lambda: reader.read_via_odfv(int(rng.integers(0, n_users)), cands), max(reps // 4, 10))
    # the service's reader: the same reads, candidate rows kept for serving.item_cache_ttl_s
    cached_reader = OnlineFeatureReader(store, cfg, item_cache=ItemRowCache(cfg.serving.item_cache_ttl_s,
                                                                           cfg.serving.item_cache_max_items))
    cached = _latency(lambda: cached_reader.read(int(rng.integers(0, n_users)), cands), reps)
    return {"fast_p50": fast[0], "fast_p99": fast[1], "odfv_p50": odfv[0], "odfv_p99": odfv[1],
            "cached_p50": cached[0], "cached_p99": cached[1], "user_row_bytes": sizes["user_row_bytes"]}


def _with_redis(fn: Callable[[str], dict[str, float]]) -> dict[str, float] | None:
    """Run ``fn(connection_string)`` against a throwaway redis-server (None when it is not installed)."""
    from benchmarks.bench_serving import redis_server

    if shutil.which("redis-server") is None:
        logger.warning("redis-server not found: skipping the Redis online benchmark")
        return None
    with tempfile.TemporaryDirectory(prefix="mmads-bench-redis-") as work, redis_server(Path(work)) as conn:
        return fn(conn)


def _historical(cfg: MmadsConfig, sizes: list[int], n_users: int, n_items: int) -> dict[int, dict[str, float]]:
    store = apply_repo(cfg)
    _load(cfg, n_users, n_items)
    out = {}
    for rows in sizes:
        summary = build_training_set(cfg, store, _impressions(rows, n_users, n_items),
                                     Path(cfg.state_dir) / f"train_{rows}.parquet", progress=False)
        out[rows] = {"rows_per_s": summary.rows_per_s, "seconds": summary.seconds,
                     "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    return out


def run(quick: bool) -> dict[str, Any]:
    """Run the benchmark and print a table.

    Args:
        quick: small sizes (100k impressions, 1k users, 2k items; no 1M run; fewer online reps).

    Returns:
        ``historical_rows_per_s_100k``, ``historical_rows_per_s_1m`` (None when quick),
        ``online_fast_p99_ms``, ``online_odfv_p99_ms``, ``online_fast_speedup`` (odfv p99 / fast p99),
        ``online_fast_p99_ms_redis`` (None without redis-server), ``user_row_bytes`` (a full-history
        row as stored online, :mod:`benchmarks.row_size`), plus details.
    """
    n_users, n_items = (1000, 2000) if quick else (5000, 10000)
    sizes = [100_000] if quick else [100_000, 1_000_000]
    reps = 100 if quick else 500
    with tempfile.TemporaryDirectory(prefix="mmads-bench-features-") as tmp:
        base = load_config().with_overrides(state_dir=tmp)
        # online first: a serving process is not one that just built a 1M-row training set
        sqlite = _online(base.with_overrides(state_dir=f"{tmp}/sqlite"), 100, n_items, reps)
        redis = _with_redis(lambda conn: _online(base.with_overrides(
            state_dir=f"{tmp}/redis", feast={"online_store": "redis", "redis_connection_string": conn}),
            100, n_items, reps))
        hist = _historical(base.with_overrides(state_dir=f"{tmp}/hist"), sizes, n_users, n_items)
    result: dict[str, Any] = {
        "historical_rows_per_s_100k": hist[100_000]["rows_per_s"],
        "historical_rows_per_s_1m": hist[1_000_000]["rows_per_s"] if 1_000_000 in hist else None,
        "online_fast_p99_ms": sqlite["fast_p99"],
        "online_odfv_p99_ms": sqlite["odfv_p99"],
        "online_fast_speedup": sqlite["odfv_p99"] / sqlite["fast_p99"],
        "online_fast_p99_ms_redis": redis["fast_p99"] if redis else None,
        "online_fast_cached_p99_ms": sqlite["cached_p99"],
        "user_row_bytes": sqlite["user_row_bytes"],
        "details": {"quick": quick, "loadavg_1m_end": os.getloadavg()[0], "users": n_users,
                    "items": n_items, "historical": hist, "sqlite": sqlite, "redis": redis},
    }
    _print_table(result)
    return result


def _print_table(r: dict[str, Any]) -> None:
    d = r["details"]
    print(f"feature store benchmark ({'quick' if d['quick'] else 'full'}: {d['users']} users, {d['items']} items)")
    for rows, h in d["historical"].items():
        print(f"  training set {rows:>9,} rows  {h['rows_per_s']:>10,.0f} rows/s  {h['seconds']:7.1f} s"
              f"  peak RSS {h['peak_rss_gb']:.2f} GiB")
    for name in ("sqlite", "redis"):
        o = d[name]
        if o:
            print(f"  online {name:6s} 1x{CANDIDATES}  fast p50/p99 {o['fast_p50']:6.1f}/{o['fast_p99']:6.1f} ms"
                  f"  odfv p50/p99 {o['odfv_p50']:6.1f}/{o['odfv_p99']:6.1f} ms"
                  f"  fast + item cache p50/p99 {o['cached_p50']:5.1f}/{o['cached_p99']:5.1f} ms")
    print(f"  user row: {r['user_row_bytes']:,.0f} bytes (full history, as stored online; target <= 1,024)")
    print(f"  fast-path speedup (p99, sqlite): {r['online_fast_speedup']:.1f}x"
          f"   (1-min load average at the end: {d['loadavg_1m_end']:.1f})")


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    res = run(args.quick)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
