"""``mmads bench milvus``: Milvus Lite as an embedded file vs as a server, the way mmads uses it.

For each deployment the same work runs through :class:`streaming.milvus_sink.MilvusSink` (the
indexer's writer) and :class:`serving.retrieval.Retriever` (the ranking service's reader):

* upserts of clustered 64-d item vectors in the indexer's micro-batches (64 rows), items/s;
* ``/recommend``-shaped searches: 4 query vectors x 85 hits, p50/p99 ms;
* ``/similar``-shaped searches: 1 query x 11 hits, p50/p99 ms;
* for the server only, the same searches from two processes at once (a file can be opened by one
  process only, which is why the embedded stack runs Milvus Lite as a server).

Numbers feed ``docs/scaling.md``. The Milvus Lite server is what ``mmads stack up`` starts; a Milvus
standalone or distributed cluster is a different engine and is not measured here.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from infra import stack
from infra.config import MmadsConfig, load_config
from infra.processes import free_port
from serving.retrieval import Retriever
from streaming.milvus_sink import MilvusSink

BATCH = 64
RECOMMEND = (4, 85)
SIMILAR = (1, 11)


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(32, dim))
    x = centres[rng.integers(0, 32, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _fill(cfg: MmadsConfig, vectors: np.ndarray) -> float:
    """Upsert every vector in indexer-sized batches; returns items/s."""
    sink = MilvusSink(cfg, vectors.shape[1])
    sink.ensure_collection()
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    start = time.perf_counter()
    for lo in range(0, len(vectors), BATCH):
        part = slice(lo, lo + BATCH)
        sink.upsert(ids[part], vectors[part], ["c"] * len(ids[part]), np.full(len(ids[part]), 0, np.int64), "bench")
    sink.maybe_flush(force=True)
    return len(vectors) / (time.perf_counter() - start)


def _search_ms(cfg: MmadsConfig, vectors: np.ndarray, shape: tuple[int, int], n: int, seed: int) -> list[float]:
    retriever = Retriever(cfg)
    rng = np.random.default_rng(seed)
    nq, limit = shape
    retriever.search(vectors[:nq], limit)  # connect, load
    out = []
    for _ in range(n):
        q = vectors[rng.integers(0, len(vectors), nq)]
        t = time.perf_counter()
        retriever.search(q, limit)
        out.append((time.perf_counter() - t) * 1000.0)
    retriever.close()
    return out


def _search_worker(cfg_json: str, vectors: np.ndarray, n: int, seed: int, queue: Any) -> None:
    cfg = MmadsConfig.model_validate_json(cfg_json)
    queue.put(_search_ms(cfg, vectors, RECOMMEND, n, seed))


def _two_processes(cfg: MmadsConfig, vectors: np.ndarray, n: int) -> tuple[list[float], float]:
    """Both processes search the same server at once: their latencies and the combined searches/s."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_search_worker, args=(cfg.model_dump_json(), vectors, n, s, queue)) for s in (1, 2)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    lat = [x for _ in procs for x in queue.get(timeout=600)]
    for p in procs:
        p.join(timeout=60)
    return lat, len(lat) / (time.perf_counter() - start)


def _pct(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q)) if samples else math.nan


def run(quick: bool = False) -> dict[str, Any]:
    """Run the benchmark, print a table and return the results (keys in the table)."""
    n_items, n_search = (5_000, 100) if quick else (20_000, 300)
    base = load_config(env={})
    vectors = _vectors(n_items, base.model.dim)
    res: dict[str, Any] = {"n_items": n_items, "dim": base.model.dim, "searches": n_search}
    with tempfile.TemporaryDirectory(prefix="mmads-bench-milvus-") as tmp:
        work = Path(tmp)
        file_cfg = base.with_overrides(state_dir=work / "file", milvus={"uri": str(work / "items.db")})
        res["file_upsert_items_per_s"] = _fill(file_cfg, vectors)
        for name, shape in (("recommend", RECOMMEND), ("similar", SIMILAR)):
            lat = _search_ms(file_cfg, vectors, shape, n_search, seed=0)
            res[f"file_{name}_p50_ms"], res[f"file_{name}_p99_ms"] = _pct(lat, 50), _pct(lat, 99)

        server_cfg = base.with_overrides(state_dir=work / "server", kafka={"port": free_port()},
                                         milvus={"port": free_port()})
        stack.up(server_cfg)
        try:
            res["server_upsert_items_per_s"] = _fill(server_cfg, vectors)
            time.sleep(2.0)
            for name, shape in (("recommend", RECOMMEND), ("similar", SIMILAR)):
                lat = _search_ms(server_cfg, vectors, shape, n_search, seed=0)
                res[f"server_{name}_p50_ms"], res[f"server_{name}_p99_ms"] = _pct(lat, 50), _pct(lat, 99)
            one = _search_ms(server_cfg, vectors, RECOMMEND, n_search, seed=3)
            res["server_recommend_per_s_1proc"] = 1000.0 / float(np.mean(one))
            lat2, rate2 = _two_processes(server_cfg, vectors, n_search)
            res["server_recommend_p99_ms_2proc"] = _pct(lat2, 99)
            res["server_recommend_per_s_2proc"] = rate2
        finally:
            stack.down(server_cfg)
    print_table(res)
    return res


def print_table(res: dict[str, Any]) -> None:
    """Print file vs server side by side."""
    def f(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.1f}"

    rows = [
        ("upsert items/s (batches of 64)", f(res["file_upsert_items_per_s"]), f(res["server_upsert_items_per_s"])),
        ("search 4 x 85 p50 / p99 ms", f"{f(res['file_recommend_p50_ms'])} / {f(res['file_recommend_p99_ms'])}",
         f"{f(res['server_recommend_p50_ms'])} / {f(res['server_recommend_p99_ms'])}"),
        ("search 1 x 11 p50 / p99 ms", f"{f(res['file_similar_p50_ms'])} / {f(res['file_similar_p99_ms'])}",
         f"{f(res['server_similar_p50_ms'])} / {f(res['server_similar_p99_ms'])}"),
        ("4 x 85 searches/s, 1 process", "", f(res["server_recommend_per_s_1proc"])),
        ("4 x 85 searches/s, 2 processes (p99 ms)", "one process only",
         f"{f(res['server_recommend_per_s_2proc'])} ({f(res['server_recommend_p99_ms_2proc'])})"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'Milvus Lite, ' + format(res['n_items'], ',') + ' items':<{width}}  {'file':>18}  {'server':>18}")
    for name, a, b in rows:
        print(f"{name:<{width}}  {a:>18}  {b:>18}")


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
