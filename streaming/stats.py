"""Job counters, freshness measurements and the "caught up" check (no Tansu end offsets involved).

Each job process writes ``<state_dir>/streaming/stats/<job>-<pid>.json`` every few seconds and at
every commit: its counters and the offsets it has committed per partition. Freshness samples
(Kafka message timestamp -> the moment the row was written to every sink) are appended to
``<state_dir>/streaming/freshness/<job>-<pid>.csv`` (and observed by the process's
``mmads_stream_freshness_seconds`` histogram). :func:`wait_caught_up` compares committed
offsets with the number of messages a producer reports it wrote, because Tansu reports wrong end
offsets (docs/architecture.md, Tansu).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from infra.config import MmadsConfig
from infra.errors import StackError
from infra.processes import pid_alive, write_json_atomic
from streaming.metrics import observe_freshness

logger = logging.getLogger(__name__)


def stats_dir(cfg: MmadsConfig) -> Path:
    """Folder of the per-process stats files."""
    return Path(cfg.state_dir) / "streaming" / "stats"


def freshness_dir(cfg: MmadsConfig) -> Path:
    """Folder of the per-process freshness logs."""
    return Path(cfg.state_dir) / "streaming" / "freshness"


@dataclass
class JobStats:
    """Counters of one job process (what ``run_<job>`` returns).

    Attributes:
        job: the job name (``items``, ``behaviors``, ``impressions``).
        processed: messages consumed whose outcome is final (written or dead-lettered).
        written: messages whose data reached the sinks.
        dead_lettered: messages sent to the dead-letter topic.
        batches: micro-batches handled.
        retries: sink failures retried with backoff.
        commits: offset commits.
        committed: ``"topic:partition" -> next offset`` last committed by this process.
        assigned: ``"topic:partition"`` currently owned by this process (readiness: a job is ready
            to consume once its processes together own every partition of its topic).
        batch_ms: recent batch latencies (ms), for p50/p99 in the log.
        metrics_port: where the process serves ``/metrics``, ``/healthz``, ``/readyz`` (None: nowhere).
    """

    job: str
    processed: int = 0
    written: int = 0
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0
    commits: int = 0
    started_at: float = field(default_factory=time.time)
    committed: dict[str, int] = field(default_factory=dict)
    assigned: list[str] = field(default_factory=list)
    batch_ms: list[float] = field(default_factory=list)
    metrics_port: int | None = None

    def add_batch_ms(self, ms: float) -> None:
        """Remember one batch latency (keeps the last 1,000)."""
        self.batch_ms.append(ms)
        if len(self.batch_ms) > 1000:
            del self.batch_ms[:-1000]

    def summary(self) -> str:
        """One log line of the counters."""
        lat = np.asarray(self.batch_ms) if self.batch_ms else np.zeros(1)
        return (f"{self.job}: processed={self.processed} written={self.written} "
                f"dead_lettered={self.dead_lettered} batches={self.batches} retries={self.retries} "
                f"commits={self.commits} batch_ms p50={np.percentile(lat, 50):.1f} "
                f"p99={np.percentile(lat, 99):.1f}")


class StatsWriter:
    """Writes a job's stats file atomically (a reader never sees half a file).

    Args:
        cfg: the configuration (state dir).
        stats: the counters to write.
        topic: the input topic.
    """

    def __init__(self, cfg: MmadsConfig, stats: JobStats, topic: str) -> None:
        self.stats = stats
        self.topic = topic
        # host and pid: replicas in containers all run as pid 1 and may share a state volume
        self.path = stats_dir(cfg) / f"{stats.job}-{socket.gethostname()}-{os.getpid()}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self) -> None:
        """Replace the stats file with the current counters."""
        doc = {k: v for k, v in asdict(self.stats).items() if k != "batch_ms"}
        doc.update(topic=self.topic, pid=os.getpid(), updated_at=time.time())
        write_json_atomic(self.path, doc)


def read_stats(cfg: MmadsConfig) -> list[dict[str, object]]:
    """Every job stats file under the state dir (unreadable files are skipped)."""
    out = []
    for path in sorted(stats_dir(cfg).glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            logger.debug("skipping unreadable stats file %s", path)
    return out


def committed_counts(cfg: MmadsConfig) -> dict[str, int]:
    """Per topic, the number of messages fully handled.

    That is the sum over partitions of the highest offset any process committed (the offsets of a
    fresh topic start at 0 and are dense).
    """
    best: dict[str, int] = {}
    for doc in read_stats(cfg):
        committed = doc.get("committed")
        if not isinstance(committed, dict):
            continue
        for tp, off in committed.items():
            best[tp] = max(best.get(tp, 0), int(off))
    totals: dict[str, int] = {}
    for tp, off in best.items():
        topic = tp.rsplit(":", 1)[0]
        totals[topic] = totals.get(topic, 0) + off
    return totals


def wait_caught_up(cfg: MmadsConfig, expected: dict[str, int], timeout_s: float = 60.0,
                   check: Callable[[], None] | None = None) -> dict[str, int]:
    """Wait until the jobs have committed at least ``expected[topic]`` messages of each topic.

    Args:
        cfg: the configuration (state dir).
        expected: topic name -> messages produced to it (e.g. the sum of :func:`replay` results).
        timeout_s: how long to wait.
        check: called on every poll (about ten times a second); what it raises propagates, so a
            caller can stop waiting at once (the main job's dead-letter check).

    Returns:
        The committed counts per topic when caught up.

    Raises:
        StackError: not caught up within ``timeout_s`` (the message shows how far each topic got).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        counts = committed_counts(cfg)
        if check is not None:
            check()
        if all(counts.get(t, 0) >= n for t, n in expected.items()):
            return counts
        if time.monotonic() > deadline:
            got = ", ".join(f"{t}: {counts.get(t, 0)}/{n}" for t, n in expected.items())
            raise StackError(f"streaming jobs did not catch up within {timeout_s:.0f}s ({got})")
        time.sleep(0.1)


def wait_ready(cfg: MmadsConfig, topics: dict[str, int], timeout_s: float = 120.0,
               alive: Callable[[], bool] | None = None) -> None:
    """Wait until the live job processes together own every partition of each topic.

    Args:
        cfg: the configuration (state dir).
        topics: topic name -> partition count.
        timeout_s: how long to wait.
        alive: returns False when a job process died (stop waiting at once).

    Raises:
        StackError: not ready within ``timeout_s``, or a job process died.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        owned: dict[str, set[str]] = {t: set() for t in topics}
        for doc in read_stats(cfg):
            pid = doc.get("pid")
            if not isinstance(pid, int) or not pid_alive(pid):
                continue
            assigned = doc.get("assigned")
            for tp in assigned if isinstance(assigned, list) else []:
                topic = str(tp).rsplit(":", 1)[0]
                if topic in owned:
                    owned[topic].add(str(tp))
        if all(len(owned[t]) >= n for t, n in topics.items()):
            return
        if alive is not None and not alive():
            raise StackError("a streaming job exited while starting (see its log)")
        if time.monotonic() > deadline:
            got = ", ".join(f"{t}: {len(owned[t])}/{n} partitions" for t, n in topics.items())
            raise StackError(f"streaming jobs not ready within {timeout_s:.0f}s ({got})")
        time.sleep(0.2)


class FreshnessLog:
    """Appends freshness samples: ``key, produced_ms, written_ms`` per message.

    Args:
        cfg: the configuration (state dir).
        job: the job name (file prefix).
    """

    def __init__(self, cfg: MmadsConfig, job: str) -> None:
        self.job = job
        self.path = freshness_dir(cfg) / f"{job}-{os.getpid()}.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, keys: np.ndarray, produced_ms: np.ndarray, written_ms: int) -> None:
        """Append one batch of samples (all written at ``written_ms``); they also feed the freshness histogram."""
        if len(keys) == 0:
            return
        observe_freshness(self.job, (written_ms - np.asarray(produced_ms, dtype=np.int64)) / 1000.0)
        produced = np.asarray(produced_ms, dtype=np.int64).tolist()  # Python ints: 3x faster to format
        lines = "".join(f"{k},{p},{written_ms}\n"
                        for k, p in zip(np.asarray(keys, dtype=np.int64).tolist(), produced, strict=True))
        with open(self.path, "a") as f:
            f.write(lines)


def read_freshness(cfg: MmadsConfig, job: str) -> pd.DataFrame:
    """All freshness samples of a job: columns ``key``, ``produced_ms``, ``written_ms``, ``latency_ms``."""
    frames = [pd.read_csv(p, names=["key", "produced_ms", "written_ms"], dtype=np.int64)
              for p in sorted(freshness_dir(cfg).glob(f"{job}-*.csv")) if p.stat().st_size]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=np.int64)
                             for c in ("key", "produced_ms", "written_ms", "latency_ms")})
    df = pd.concat(frames, ignore_index=True)
    df["latency_ms"] = df["written_ms"] - df["produced_ms"]
    return df


def freshness_summary(cfg: MmadsConfig, job: str, first_only: bool = True) -> dict[str, float]:
    """p50/p99/max of a job's freshness (ms); ``first_only`` keeps each key's first write only.

    Returns:
        ``{"n", "p50_ms", "p99_ms", "max_ms"}`` (NaN percentiles when there are no samples).
    """
    df = read_freshness(cfg, job)
    if first_only and len(df):
        df = df.sort_values("written_ms").drop_duplicates(["key", "produced_ms"])
    lat = df["latency_ms"].to_numpy(dtype=np.float64)
    if len(lat) == 0:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"n": float(len(lat)), "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max())}
