"""Batch benchmark: the training set on DuckDB vs Spark (rows/s, parity, peak memory), and DDP training.

The feature data is the feature-store benchmark's (``benchmarks.bench_features``: users x 10
history snapshots of N items, d-dim item vectors), written into two repos, one per offline store.

* **parity set** (quick: 100k impressions; full: 200k): built by both stores; DuckDB rows/s, Spark
  rows/s (JVM already started by a 1k-row warm-up) and the largest SimTier difference between
  the two outputs, matched row by row.
* **scale set** (full only: 10M impressions, written as Parquet in 1M-row chunks and read by
  Spark; nothing is collected to the driver): Spark rows/s and peak memory.

Peak memory is the resident memory of this process and all its descendants (the Spark driver JVM,
which runs the tasks in ``local[N]``, and its Python workers), sampled every 0.2 s. The Spark
session gets ``spark.driver.memory`` 2 GiB (heap) and spills the join to a scratch directory in
the benchmark's temporary folder (the full run needs tens of GB of free disk there).

The DDP figures come from :func:`training.distributed.measure_ddp` (the same model trained by one
process and by two, each with one torch thread; samples/s of the training loop, and the AUC gap).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.bench_features import DAYS, T0, _impressions, _load
from feature_repo.simtier import SIMTIER_COLUMNS
from feature_repo.store import apply_repo
from infra.config import MmadsConfig, load_config
from training.spark_training_set import build_training_set_spark
from training.training_set import build_training_set

logger = logging.getLogger(__name__)

KEYS = ["user_id", "item_id", "ts", "clicked"]
_SCALE_CHUNK = 1_000_000


class PeakRss:
    """Peak resident memory of this process and its descendants, sampled in a thread while active.

    Besides the total, the peak of each part: this Python process (``driver_python``), JVMs
    (``jvm``: Spark's driver, which runs the tasks in ``local[N]``) and every other descendant
    (``workers``: Spark's Python workers and daemon).
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.peak_parts: dict[str, int] = {"driver_python": 0, "jvm": 0, "workers": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def parts() -> dict[str, int]:
        """Resident bytes now, per part (see the class)."""
        me = psutil.Process()
        out = {"driver_python": me.memory_info().rss, "jvm": 0, "workers": 0}
        for p in me.children(recursive=True):
            try:
                part = "jvm" if p.name().startswith("java") else "workers"
                out[part] += p.memory_info().rss
            except psutil.Error:  # a worker that just exited
                continue
        return out

    def _sample(self) -> None:
        now = self.parts()
        self.peak_bytes = max(self.peak_bytes, sum(now.values()))
        for k, v in now.items():
            self.peak_parts[k] = max(self.peak_parts[k], v)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    @property
    def peak_gib(self) -> float:
        """The peak of the total in GiB."""
        return self.peak_bytes / 2**30

    def parts_gib(self) -> dict[str, float]:
        """The peak of each part in GiB (their sum can exceed :attr:`peak_gib`: peaks at different times)."""
        return {k: round(v / 2**30, 3) for k, v in self.peak_parts.items()}


def _configs(tmp: str, spark_dir: Path) -> tuple[MmadsConfig, MmadsConfig]:
    base = load_config()
    duck = base.with_overrides(state_dir=f"{tmp}/duckdb", feast={"offline_store": "duckdb"})
    spark = base.with_overrides(state_dir=f"{tmp}/spark", feast={"offline_store": "spark", "spark": {
        "driver_memory": "2g", "executor_memory": "2g",
        "conf": {"spark.local.dir": str(spark_dir), "spark.ui.showConsoleProgress": "false"}}})
    return duck, spark


def _scale_impressions(path: Path, rows: int, n_users: int, n_items: int) -> Path:
    """``rows`` impressions as Parquet (microsecond timestamps), written chunk by chunk."""
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("clicked", pa.int8()),
                        ("ts", pa.timestamp("us", tz="UTC"))])
    with pq.ParquetWriter(path, schema) as writer:
        for k, lo in enumerate(range(0, rows, _SCALE_CHUNK)):
            chunk = _impressions(min(_SCALE_CHUNK, rows - lo), n_users, n_items, seed=100 + k)
            chunk["ts"] = chunk["ts"].dt.floor("us")
            writer.write_table(pa.Table.from_pandas(chunk[schema.names], schema=schema, preserve_index=False))
    return path


def _max_abs_diff(duck: Path, spark: Path, n_tiers: int) -> dict[str, float]:
    """Row-matched comparison of two training sets: SimTier max |diff|, differing histories, row counts."""
    cols = KEYS + ["hist_item_ids"] + SIMTIER_COLUMNS(n_tiers)
    a, b = (pq.read_table(p, columns=cols).to_pandas() for p in (duck, spark))
    if len(a) != len(b):
        return {"max_abs_diff": float("inf"), "hist_mismatches": -1, "rows_duckdb": len(a), "rows_spark": len(b)}
    a, b = (f.sort_values(KEYS, kind="stable").reset_index(drop=True) for f in (a, b))
    keys_equal = bool((a[KEYS] == b[KEYS]).all().all())
    tiers = SIMTIER_COLUMNS(n_tiers)
    diff = float(np.abs(a[tiers].to_numpy(np.float64) - b[tiers].to_numpy(np.float64)).max(initial=0.0))
    hist = int(sum(list(x) != list(y) for x, y in zip(a["hist_item_ids"], b["hist_item_ids"], strict=True)))
    return {"max_abs_diff": diff if keys_equal else float("inf"), "hist_mismatches": hist,
            "rows_duckdb": len(a), "rows_spark": len(b)}


def _ddp(quick: bool) -> tuple[dict[str, float], dict[str, Any]]:
    """DDP figures of :func:`training.distributed.measure_ddp` (1 and 2 processes, one thread each).

    Returns:
        The three contract keys, and the rest (each round's rates, the median per-round ratio).
    """
    from training.distributed import measure_ddp

    got = measure_ddp(quick)
    keys = ("ddp_samples_per_s_1proc", "ddp_samples_per_s_2proc", "ddp_auc_diff")
    return {k: float(got[k]) for k in keys}, {k: v for k, v in got.items() if k not in keys}


@contextmanager
def _spark_stopped_after(cfg: MmadsConfig) -> Iterator[None]:
    from training.spark_training_set import spark_session

    try:
        yield
    finally:
        spark_session(cfg).stop()


def _spark_phase(spark_cfg: MmadsConfig, imps: pd.DataFrame, out: Path, scale_rows: int | None,
                 users: int, items: int) -> dict[str, Any]:
    store = apply_repo(spark_cfg)
    _load(spark_cfg, users, items)
    res: dict[str, Any] = {}
    with _spark_stopped_after(spark_cfg):
        started = time.perf_counter()
        build_training_set(spark_cfg, store, imps.iloc[:1000], out / "spark_warmup", progress=False)
        res["cold_start_s"] = time.perf_counter() - started
        with PeakRss() as rss:
            summary = build_training_set(spark_cfg, store, imps, out / "spark", progress=False)
        res["parity"] = {"rows_per_s": summary.rows_per_s, "seconds": summary.seconds, "peak_rss_gib": rss.peak_gib,
                         "peak_rss_parts_gib": rss.parts_gib()}
        if scale_rows:
            src = _scale_impressions(out / "scale_impressions.parquet", scale_rows, users, items)
            with PeakRss() as rss:
                summary = build_training_set_spark(spark_cfg, store, src, out / "spark_scale")
            res["scale"] = {"rows": summary.rows, "rows_per_s": summary.rows_per_s, "seconds": summary.seconds,
                            "peak_rss_gib": rss.peak_gib, "peak_rss_parts_gib": rss.parts_gib()}
    return res


def run(quick: bool) -> dict[str, Any]:
    """Run the benchmark and print a table.

    Args:
        quick: 100k-row parity set, 1k users, 2k items, no scale set (3 minutes on 2 cores);
            full: 200k-row parity set, 5k users, 10k items and a 10M-row Spark scale set.

    Returns:
        ``duckdb_rows_per_s``, ``spark_rows_per_s`` (the scale set's when full),
        ``spark_duckdb_max_abs_diff`` (SimTier columns, rows matched), ``spark_peak_rss_gib``,
        ``ddp_samples_per_s_1proc``, ``ddp_samples_per_s_2proc``, ``ddp_auc_diff``, plus details.
    """
    users, items = (1000, 2000) if quick else (5000, 10000)
    parity_rows = 100_000 if quick else 200_000
    scale_rows = None if quick else 10_000_000
    imps = _impressions(parity_rows, users, items)
    with tempfile.TemporaryDirectory(prefix="mmads-bench-batch-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        duck_cfg, spark_cfg = _configs(tmp, Path(tmp) / "spark-scratch")
        spark = _spark_phase(spark_cfg, imps, out, scale_rows, users, items)
        duck_store = apply_repo(duck_cfg)
        _load(duck_cfg, users, items)
        with PeakRss() as rss:
            duck = build_training_set(duck_cfg, duck_store, imps, out / "duckdb.parquet", progress=False)
        parity = _max_abs_diff(out / "duckdb.parquet", out / "spark", duck_cfg.model.n_tiers)
    measured = spark.get("scale", spark["parity"])
    ddp, ddp_details = _ddp(quick)
    result: dict[str, Any] = {
        "duckdb_rows_per_s": duck.rows_per_s,
        "spark_rows_per_s": measured["rows_per_s"],
        "spark_duckdb_max_abs_diff": parity["max_abs_diff"],
        "spark_peak_rss_gib": measured["peak_rss_gib"],
        **ddp,
        "details": {"ddp": ddp_details, "quick": quick, "users": users, "items": items,
                    "parity_rows": parity_rows, "scale_rows": scale_rows, "days": DAYS, "t0": str(T0),
                    "spark_master": spark_cfg.feast.spark.spark_conf().get("spark.master"),
                    "spark_cold_start_s": spark["cold_start_s"], "spark_parity": spark["parity"],
                    "spark_scale": spark.get("scale"), "parity": parity,
                    "duckdb": {"rows_per_s": duck.rows_per_s, "seconds": duck.seconds, "peak_rss_gib": rss.peak_gib},
                    "loadavg_1m_end": os.getloadavg()[0]},
    }
    _print_table(result)
    return result


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _print_table(r: dict[str, Any]) -> None:
    d = r["details"]
    print(f"batch benchmark ({'quick' if d['quick'] else 'full'}: {d['users']} users, {d['items']} items, "
          f"spark {d['spark_master']})")
    print(f"  duckdb  {d['parity_rows']:>11,} rows  {d['duckdb']['rows_per_s']:>9,.0f} rows/s"
          f"  peak RSS {d['duckdb']['peak_rss_gib']:.2f} GiB")
    for rows, p in ((d["parity_rows"], d["spark_parity"]), (d["scale_rows"], d["spark_scale"])):
        if p:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in p["peak_rss_parts_gib"].items())
            print(f"  spark   {rows:>11,} rows  {p['rows_per_s']:>9,.0f} rows/s"
                  f"  peak RSS {p['peak_rss_gib']:.2f} GiB ({parts})")
    print(f"  spark JVM start + 1k-row warm-up {d['spark_cold_start_s']:.1f} s")
    print(f"  spark vs duckdb: SimTier max |diff| {r['spark_duckdb_max_abs_diff']:.2e}, "
          f"histories differing {d['parity']['hist_mismatches']}")
    print(f"  DDP samples/s 1 / 2 processes: {_fmt(r['ddp_samples_per_s_1proc'], ',.0f')} / "
          f"{_fmt(r['ddp_samples_per_s_2proc'], ',.0f')} (median of {len(d['ddp']['ddp_rounds'])} rounds; median "
          f"per-round ratio {d['ddp']['ddp_ratio_median_of_rounds']:.2f}); AUC diff {_fmt(r['ddp_auc_diff'], '.4f')}"
          f"   (1-min load average at the end: {d['loadavg_1m_end']:.1f})")
