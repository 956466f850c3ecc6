"""``mmads bench serving``: load the ranking service and print a latency/throughput table.

Builds a synthetic world in a temporary state dir (clustered item vectors in Feast online and in a
Milvus collection, users whose histories sit in one cluster, a CTR model with random weights saved
like a trained one), starts the embedded stack, serves the model with uvicorn on 127.0.0.1, and runs
closed-loop clients over keep-alive connections (:class:`LeanClient`; each sends its next request
when the previous answer arrives):

* ``/rank`` with 200 candidates at 1, 4 and 16 clients (SQLite online store) on one worker process;
  ``rps_c4``/``rps_c16`` again with ``THROUGHPUT_WORKERS`` worker processes (one per core, as the
  service is deployed here for throughput); and at 1 client on Redis (a ``redis-server`` started on
  a free loopback port);
* the ODFV variant: the same request's features read through Feast's ``ctr_serving`` feature
  service (SimTier evaluated by Feast per request), then scored by the same model;
* ``/recommend`` with k = 100 at 1 client;
* item -> recommendable: an item event produced on Kafka, the item indexer running, until
  ``/recommend`` returns it for a user whose history is close to it (needs the streaming indexer
  and the text/image backbones; null with a note when they are not available).

Load only ever targets 127.0.0.1 and is bounded in request count and time. The world comes from
:mod:`benchmarks.serving_world` (also the serving tests' fixture builder).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from benchmarks.row_size import user_row_sizes
from benchmarks.serving_world import World, build_world
from feature_repo.store import open_store, write_online_items, write_online_users
from infra.config import MmadsConfig
from infra.errors import StackError
from infra.processes import free_port, port_open

logger = logging.getLogger(__name__)

def percentile_ms(samples_s: list[float], q: float) -> float:
    """The ``q``-th percentile of latencies given in seconds, in ms (nan when empty)."""
    return float(np.percentile(np.asarray(samples_s) * 1000.0, q)) if samples_s else math.nan


# ---- load generation ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Sizes:
    """Benchmark sizes."""

    n_items: int
    n_users: int
    n_c1: int
    duration_s: float
    fresh_trials: int


QUICK = Sizes(n_items=2000, n_users=200, n_c1=200, duration_s=4.0, fresh_trials=5)
FULL = Sizes(n_items=10_000, n_users=1000, n_c1=1000, duration_s=10.0, fresh_trials=20)
N_CANDIDATES = 200
RECOMMEND_K = 100
MAX_REQUEST_S = 30.0
INDEXER_START_S = 240.0
THROUGHPUT_WORKERS = 2  # one per core of this machine


@dataclass
class LoadResult:
    """Latencies (s) of the successful requests, wall time, and failed request count."""

    latencies: list[float]
    elapsed_s: float
    errors: int

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return len(self.latencies) / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _rank_bodies(world: World, n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    ids = np.concatenate([world.items["item_id"].to_numpy(), world.missing_item_ids])
    users = world.users["user_id"].to_numpy()
    return [json.dumps({"user_id": int(rng.choice(users)),
                        "candidate_item_ids": rng.choice(ids, N_CANDIDATES, replace=False).tolist()}).encode()
            for _ in range(n)]


def _recommend_bodies(world: World, n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    users = world.users["user_id"].to_numpy()
    return [json.dumps({"user_id": int(u), "k": RECOMMEND_K}).encode() for u in rng.choice(users, n)]


class LeanClient:
    """One keep-alive HTTP/1.1 connection over the standard library, for load generation.

    The load generator shares this 2-core machine with the service, so its CPU per request is taken
    from the service: ``http.client`` spends a fraction of what httpx does per request. A connection
    the server closes (``connection: close``) or that fails is reopened for the next request.

    Args:
        url: ``http://host:port/path``.
    """

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://host:port/path, got {url!r}")
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path or "/"
        self._conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> int:
        """POST a JSON body and read the whole answer; returns the status (0: the connection failed)."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=MAX_REQUEST_S)
        try:
            self._conn.request("POST", self.path, body, {"content-type": "application/json"})
            resp = self._conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return 0
        if resp.will_close:
            self.close()
        return resp.status

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def closed_loop(url: str, bodies: list[bytes], clients: int, *, count: int | None = None,
                duration_s: float | None = None, warmup: int = 10) -> LoadResult:
    """Closed-loop load: each client sends its next request when the previous answer arrives.

    Args:
        url: the endpoint (POST, JSON bodies), on 127.0.0.1.
        bodies: request bodies, used round-robin.
        clients: concurrent clients (threads, one :class:`LeanClient` connection each).
        count: requests per client (after ``warmup``), or
        duration_s: how long to run (one of the two bounds is required; both may be given).
        warmup: unmeasured requests per client first.

    Returns:
        The latencies of successful requests, wall time and the number of failed requests.
    """
    import threading

    if count is None and duration_s is None:
        raise ValueError("closed_loop needs a count or a duration")
    lock = threading.Lock()
    lat: list[float] = []
    errors = [0]
    start_gate = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        mine: list[float] = []
        bad = 0
        h = LeanClient(url)
        try:
            for i in range(warmup):
                h.post(bodies[(k + i) % len(bodies)])
            start_gate.wait()
            deadline = time.perf_counter() + (duration_s if duration_s is not None else math.inf)
            i = 0
            while (count is None or i < count) and time.perf_counter() < deadline:
                t = time.perf_counter()
                if h.post(bodies[(k * 7919 + i) % len(bodies)]) == 200:
                    mine.append(time.perf_counter() - t)
                else:
                    bad += 1
                i += 1
        finally:
            h.close()
        with lock:
            lat.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for th in threads:
        th.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    return LoadResult(lat, time.perf_counter() - t0, errors[0])


# ---- processes: the service, redis, the item indexer --------------------------------------------

def _write_config(cfg: MmadsConfig, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path


def _clean_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MMADS_")}
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


@contextmanager
def _process(argv: list[str], log: Path, ready: Callable[[], bool], what: str, timeout_s: float = 180.0
             ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (output to ``log``) until the block ends; wait for ``ready()`` first."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=_clean_env())
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise StackError(f"{what} did not start (exit {proc.poll()}); log tail:\n{tail}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def service(cfg: MmadsConfig, run_dir: Path, work: Path, *, odfv: bool = False,
            extra: tuple[str, ...] = ()) -> Iterator[str]:
    """Serve ``run_dir`` in a child process on a free 127.0.0.1 port; yields the base URL."""
    import httpx

    port = free_port()
    config = _write_config(cfg, work / f"serve-{port}.yaml")
    argv = [sys.executable, "-m", "benchmarks.bench_serving", "--serve", "--config", str(config),
            "--run", str(run_dir), "--port", str(port), *(["--odfv"] if odfv else []), *extra]
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/metrics", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    with _process(argv, work / f"serve-{port}.log", ready, "the ranking service"):
        yield base


@contextmanager
def redis_server(work: Path) -> Iterator[str]:
    """A throwaway ``redis-server`` on a free loopback port; yields its connection string."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with _process(argv, work / "redis.log", lambda: port_open("127.0.0.1", port), "redis-server", 30):
        yield f"127.0.0.1:{port}"


def _serve_main(argv: list[str]) -> int:
    """Child process: serve a run with the fast path or the ODFV path (``--odfv``)."""
    import argparse

    import uvicorn

    from infra.config import load_config
    from serving.app import create_app
    from serving.features import FeatureFetcher
    from serving.metrics import ServiceMetrics
    from serving.model_loader import load_model
    from serving.ranker_service import RankingService
    from serving.retrieval import Retriever

    p = argparse.ArgumentParser()
    p.add_argument("--serve", action="store_true")
    p.add_argument("--config", required=True)
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--odfv", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    cfg = load_config(args.config, env={})
    if args.workers > 1:  # the product's own multi-worker mode (fast path only)
        from serving.server import serve

        serve(args.run, cfg, "127.0.0.1", args.port, log_level="warning", workers=args.workers)
        return 0
    svc = RankingService(cfg, load_model(args.run, cfg), FeatureFetcher(cfg, via_odfv=args.odfv), Retriever(cfg),
                         ServiceMetrics())
    app = create_app(args.run, cfg, host="127.0.0.1", service=svc)
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                                  lifespan="off")).run()
    return 0


# ---- item announced on Kafka -> recommendable --------------------------------------------------

FRESH_TITLES = [("red leather ankle boots", "red leather boots for the ankle"),
                ("blue cotton summer dress", "summer dress in blue cotton"),
                ("black wool winter coat", "winter coat of black wool"),
                ("green ceramic coffee mug", "coffee mug made of green ceramic"),
                ("white canvas running shoes", "running shoes in white canvas")]


def _poll_recommended(url: str, user_id: int, item_id: int, timeout_s: float) -> float | None:
    """Seconds until ``/recommend`` returns ``item_id`` for ``user_id`` (None on timeout)."""
    import httpx

    start = time.perf_counter()
    with httpx.Client(timeout=MAX_REQUEST_S) as h:
        while time.perf_counter() - start < timeout_s:
            body = h.post(f"{url}/recommend", json={"user_id": user_id, "k": RECOMMEND_K}).json()
            if any(it["item_id"] == item_id for it in body.get("items", [])):
                return time.perf_counter() - start
            time.sleep(0.01)
    return None


def _fresh_trial(cfg: MmadsConfig, encoder: Any, producer: Any, store: Any, url: str, i: int,
                 timeout_s: float = 15.0) -> float | None:
    """Write a user whose recent behavior is a paraphrase of a new item, announce the item, time it."""
    from streaming.events import encode_value, iso_utc

    title, paraphrase = FRESH_TITLES[i % len(FRESH_TITLES)]
    item_id, user_id, seen_id = 50_000_000 + i, 40_000_000 + i, 30_000_000 + i
    now = pd.Timestamp.now(tz="UTC")
    seen = pd.DataFrame({"item_id": [seen_id], "title": [f"{paraphrase} {i}"], "category": ["fresh"],
                         "image_path": [None], "created_at": [now]})
    vec = encoder.encode_items(seen)[0]
    # the seen item's row, as the indexer writes it: serving gathers the user's history vector from it
    write_online_items(store, pd.DataFrame({"item_id": [seen_id], "emb": [vec], "category": ["fresh"],
                                            "created_at": [now], "event_timestamp": [now]}))
    write_online_users(store, pd.DataFrame({"user_id": [user_id], "hist_item_ids": [[seen_id]],
                                            "hist_ts": [[int(now.value) // 1000]], "last_event_ts": [now],
                                            "event_timestamp": [now]}))
    value = encode_value({"item_id": item_id, "title": f"{title} {i}", "category": "fresh", "image_uri": None,
                          "created_at": iso_utc(now)})
    producer.send(cfg.kafka.topics.items, key=str(item_id).encode(), value=value)
    producer.flush()
    return _poll_recommended(url, user_id, item_id, timeout_s)


def item_to_recommendable(cfg: MmadsConfig, world: World, work: Path, trials: int) -> tuple[list[float], str]:
    """Latencies (s) from an item event produced on Kafka until ``/recommend`` returns the item.

    The service runs with ``max_candidates = k = 100``, so every retrieved candidate is returned:
    the time measured is produce -> encoded -> in Milvus and Feast -> retrieved by ANN -> ranked.

    Returns:
        The latencies, and a note (why some or all trials have no number).
    """
    try:
        from encoders import pretrained_encoder
        from streaming.kafka_io import make_producer
    except ImportError as exc:
        return [], f"the streaming item indexer or encoders are not available: {exc}"
    fcfg = cfg.with_overrides(serving={"max_candidates": RECOMMEND_K, "max_k": RECOMMEND_K})
    encoder = pretrained_encoder(fcfg, seed=fcfg.model.seed)  # the indexer's default encoder
    config = _write_config(fcfg, work / "indexer.yaml")
    argv = [sys.executable, "-m", "streaming.item_indexer", "--config", str(config), "--log-level", "WARNING"]
    log = work / "indexer.log"
    producer = make_producer(fcfg)
    lat: list[float] = []
    misses = 0
    try:
        with _process(argv, log, lambda: True, "the item indexer"), service(fcfg, world.run_dir, work) as url:
            store = open_store(fcfg)
            # warm-up: the indexer loads its backbones and joins its consumer group first
            if _fresh_trial(fcfg, encoder, producer, store, url, 10_000, timeout_s=INDEXER_START_S) is None:
                tail = log.read_text(errors="replace")[-500:]
                return [], f"the item indexer indexed nothing within {INDEXER_START_S:.0f} s; log tail: {tail}"
            for i in tqdm(range(trials), desc="item -> recommendable", leave=False):
                got = _fresh_trial(fcfg, encoder, producer, store, url, i)
                if got is None:
                    misses += 1
                else:
                    lat.append(got)
    finally:
        producer.close()
    note = f"{len(lat)} of {trials} trials" + (f"; {misses} not recommended within 15 s" if misses else "")
    return lat, note


# ---- the benchmark ------------------------------------------------------------------------------

def _bench_config(work: Path) -> MmadsConfig:
    from infra.config import load_config

    return load_config(env={}).with_overrides(
        state_dir=work / "state", kafka={"port": free_port()}, milvus={"port": free_port(), "collection": "bench"},
        serving={"port": free_port()})


def _rank_phases(url: str, world: World, sizes: Sizes) -> dict[str, Any]:
    bodies = _rank_bodies(world, 500, seed=1)
    c1 = closed_loop(f"{url}/rank", bodies, 1, count=sizes.n_c1)
    c4 = closed_loop(f"{url}/rank", bodies, 4, duration_s=sizes.duration_s)
    c16 = closed_loop(f"{url}/rank", bodies, 16, duration_s=sizes.duration_s)
    rec = closed_loop(f"{url}/recommend", _recommend_bodies(world, 500, seed=2), 1, count=sizes.n_c1 // 2)
    return {
        "p50_ms_c1": percentile_ms(c1.latencies, 50), "p99_ms_c1": percentile_ms(c1.latencies, 99),
        "rps_c1": c1.rps, "rps_c4_1worker": c4.rps, "p99_ms_c4_1worker": percentile_ms(c4.latencies, 99),
        "rps_c16_1worker": c16.rps, "p99_ms_c16_1worker": percentile_ms(c16.latencies, 99),
        "recommend_p50_ms_c1": percentile_ms(rec.latencies, 50),
        "recommend_p99_ms_c1": percentile_ms(rec.latencies, 99),
        "errors": c1.errors + c4.errors + c16.errors + rec.errors,
    }


def _redis_phase(cfg: MmadsConfig, world: World, work: Path, sizes: Sizes) -> tuple[float | None, str]:
    import shutil

    try:
        with redis_server(work) as conn:
            rcfg = cfg.with_overrides(state_dir=work / "state_redis",
                                      feast={"online_store": "redis", "redis_connection_string": conn})
            (work / "state_redis" / "feature_repo").mkdir(parents=True)
            shutil.copy(Path(cfg.state_dir) / "feature_repo" / "registry.db",
                        work / "state_redis" / "feature_repo" / "registry.db")
            store = open_store(rcfg)
            for lo in range(0, len(world.items), 5000):
                write_online_items(store, world.items.iloc[lo:lo + 5000])
            write_online_users(store, world.users)
            with service(rcfg, world.run_dir, work) as url:
                c1 = closed_loop(f"{url}/rank", _rank_bodies(world, 500, seed=1), 1, count=sizes.n_c1)
        return percentile_ms(c1.latencies, 99), ""
    except StackError as exc:
        return None, str(exc).splitlines()[0]


def _measure(cfg: MmadsConfig, work: Path, sizes: Sizes) -> dict[str, Any]:
    cfg = cfg.with_overrides(serving={"max_candidates": 1000, "max_k": 500})
    run_dir = work / "run"
    world = build_world(cfg, run_dir, n_items=sizes.n_items, n_users=sizes.n_users, n_missing=50,
                        n_categories=16, models=("simtier_make",))
    rows = user_row_sizes(open_store(cfg), world.users["user_id"].tolist(), cfg.model.history_len)
    with service(cfg, run_dir, work) as url:
        res = _rank_phases(url, world, sizes)
    res.update(rows)
    # Throughput as deployed on this machine: one worker process per core (`mmads serve --workers 2`);
    # a single Python process is bound by its GIL to ~1 core (the *_1worker keys above).
    with service(cfg, run_dir, work, extra=("--workers", str(THROUGHPUT_WORKERS))) as url:
        bodies = _rank_bodies(world, 500, seed=1)
        closed_loop(f"{url}/rank", bodies, 4, count=50)  # fill both item caches
        c4w = closed_loop(f"{url}/rank", bodies, 4, duration_s=sizes.duration_s)
        c16w = closed_loop(f"{url}/rank", bodies, 16, duration_s=sizes.duration_s)
    res.update(rps_c4=c4w.rps, p99_ms_c4=percentile_ms(c4w.latencies, 99), rps_c16=c16w.rps,
               p99_ms_c16=percentile_ms(c16w.latencies, 99), throughput_workers=THROUGHPUT_WORKERS)
    res["errors"] += c4w.errors + c16w.errors
    with service(cfg, run_dir, work, odfv=True) as url:
        odfv = closed_loop(f"{url}/rank", _rank_bodies(world, 500, seed=1), 1, count=max(50, sizes.n_c1 // 4))
    res["odfv_p50_ms_c1"] = percentile_ms(odfv.latencies, 50)
    res["odfv_p99_ms_c1"] = percentile_ms(odfv.latencies, 99)
    res["speedup_vs_odfv"] = res["odfv_p99_ms_c1"] / res["p99_ms_c1"]
    res["p99_ms_c1_redis"], note = _redis_phase(cfg, world, work, sizes)
    if note:
        res["redis_note"] = note
    lat, fresh_note = item_to_recommendable(cfg, world, work, sizes.fresh_trials)
    res["item_to_recommendable_p50_ms"] = percentile_ms(lat, 50) if lat else None
    res["item_to_recommendable_p99_ms"] = percentile_ms(lat, 99) if lat else None
    res["item_to_recommendable_note"] = fresh_note
    return res


def run(quick: bool) -> dict[str, Any]:
    """Run the serving benchmark (see the module docstring) and print a table.

    Args:
        quick: small sizes (2k items, 200 requests at 1 client, 4 s per concurrency level).

    Returns:
        ``p50_ms_c1``, ``p99_ms_c1``, ``rps_c4``, ``rps_c16`` (2 workers; ``*_1worker``: one),
        ``odfv_p99_ms_c1``, ``speedup_vs_odfv``,
        ``p99_ms_c1_redis``, ``recommend_p99_ms_c1``, ``item_to_recommendable_p99_ms`` (None with a
        note when not measurable) and more detail keys.
    """
    from infra import stack

    sizes = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="mmads-bench-serving-") as tmp:
        work = Path(tmp)
        cfg = _bench_config(work)
        stack.up(cfg)
        try:
            res = _measure(cfg, work, sizes)
        finally:
            stack.down(cfg)
    res.update({"n_items": sizes.n_items, "candidates": N_CANDIDATES, "recommend_k": RECOMMEND_K,
                "torch_threads_per_request": 1})
    print_table(res)
    return res


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:,.1f}" if isinstance(v, float) else str(v)


def print_table(res: dict[str, Any]) -> None:
    """Print the results with the issue's targets."""
    rows = [
        ("/rank p50 / p99 ms, 1 client (200 cand., SQLite)", f"{_fmt(res['p50_ms_c1'])} / {_fmt(res['p99_ms_c1'])}",
         "p99 <= 20"),
        (f"/rank requests/s, 4 clients, {res['throughput_workers']} workers", _fmt(res["rps_c4"]), ">= 200"),
        (f"/rank requests/s, 16 clients, {res['throughput_workers']} workers", _fmt(res["rps_c16"]), ""),
        ("/rank requests/s, 4 / 16 clients, 1 worker",
         f"{_fmt(res['rps_c4_1worker'])} / {_fmt(res['rps_c16_1worker'])}", ""),
        ("ODFV variant p50 / p99 ms, 1 client", f"{_fmt(res['odfv_p50_ms_c1'])} / {_fmt(res['odfv_p99_ms_c1'])}", ""),
        ("speed-up vs ODFV (p99)", _fmt(res["speedup_vs_odfv"]), ">= 5x"),
        ("/rank p99 ms, 1 client, Redis", _fmt(res["p99_ms_c1_redis"]), ""),
        (f"/recommend p50 / p99 ms, k = {RECOMMEND_K}, {res['n_items']:,} items",
         f"{_fmt(res['recommend_p50_ms_c1'])} / {_fmt(res['recommend_p99_ms_c1'])}", "p99 <= 60"),
        ("item event -> recommendable p50 / p99 ms",
         f"{_fmt(res['item_to_recommendable_p50_ms'])} / {_fmt(res['item_to_recommendable_p99_ms'])}", "p99 <= 1500"),
        ("failed requests", str(res["errors"]), "0"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'serving benchmark':<{width}}  {'measured':>18}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>18}  {target}")
    for key in ("redis_note", "item_to_recommendable_note"):
        if res.get(key):
            print(f"note: {res[key]}")


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        raise SystemExit(_serve_main(sys.argv[1:]))
    raise SystemExit("usage: mmads bench serving [--quick] [--json FILE]")
