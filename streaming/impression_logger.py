"""The impression logger (``mmads stream impressions``): the label log for training, in batches.

Impressions are buffered and written every ``offline_flush_s`` seconds / ``offline_flush_rows`` rows
as one parquet part per partition under ``<state_dir>/feature_repo/offline/impressions/``, named by
the partition and offset range it holds, THEN the offsets are committed. Every row carries its
``kafka_partition`` and ``kafka_offset``; a crash between the write and the commit re-delivers the
tail, and :func:`read_impression_log` drops the duplicates by ``(kafka_partition, kafka_offset)``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.data_sources import offline_dir
from infra.config import MmadsConfig
from infra.errors import InvalidEventError
from streaming.buffers import FlushPolicy
from streaming.dlq import DeadLetter
from streaming.events import ImpressionEvent, parse_event
from streaming.loop import StatelessProcessor, run_job
from streaming.metrics import observe_freshness, timed
from streaming.stats import JobStats

logger = logging.getLogger(__name__)
JOB = "impressions"
LOG_NAME = "impressions"
LOG_SCHEMA = pa.schema([
    ("user_id", pa.int64()), ("item_id", pa.int64()), ("clicked", pa.int8()),
    ("ts", pa.timestamp("us", tz="UTC")), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
])


def impression_log_dir(cfg: MmadsConfig) -> Path:
    """Folder of the impression log part files."""
    return offline_dir(cfg, LOG_NAME)


def read_impression_log(cfg: MmadsConfig) -> pd.DataFrame:
    """Every logged impression once (deduplicated by partition and offset), sorted by ``ts``.

    Returns:
        Columns user_id, item_id, clicked, ts (UTC), kafka_partition, kafka_offset.
    """
    files = sorted(impression_log_dir(cfg).glob("part-*.parquet"))
    if not files:
        return LOG_SCHEMA.empty_table().to_pandas()
    df = pa.concat_tables([pq.read_table(f, schema=LOG_SCHEMA) for f in files]).to_pandas()
    df = df.drop_duplicates(["kafka_partition", "kafka_offset"])
    return df.sort_values(["ts", "kafka_partition", "kafka_offset"], kind="stable").reset_index(drop=True)


class ImpressionLogger(StatelessProcessor):
    """The processor of the impression logger (see the module docstring).

    Args:
        cfg: the configuration.
        stats: counters to update.
    """

    def __init__(self, cfg: MmadsConfig, stats: JobStats) -> None:
        self.cfg = cfg
        self.stats = stats
        self.rows: list[tuple[int, int, int, Any, int, int]] = []
        self.produced_ms: list[int] = []  # Kafka message times of ``rows`` (freshness at the write)
        self.policy = FlushPolicy(cfg.streaming.offline_flush_rows, cfg.streaming.offline_flush_s)

    def process(self, records: list[Any]) -> list[DeadLetter]:
        """Validate and buffer one batch; returns the dead letters."""
        letters: list[DeadLetter] = []
        window = self.cfg.data.plausible_time_window
        with timed("decode", len(records)):
            for r in records:
                try:
                    ev = cast(ImpressionEvent, parse_event("impressions", r.value, window))
                except InvalidEventError as exc:
                    letters.append(DeadLetter.of(r, exc.reason))
                    continue
                self.rows.append((ev.user_id, ev.item_id, ev.clicked, ev.ts, r.partition, r.offset))
                self.produced_ms.append(int(r.timestamp))
        if records:
            self.policy.touch(len(records) - len(letters))
        return letters

    def needs_flush(self) -> bool:
        """True when the buffered impressions are due."""
        return self.policy.due()

    def flush(self) -> None:
        """Write the buffered impressions, one part file per partition."""
        if self.rows:
            df = pd.DataFrame(self.rows, columns=LOG_SCHEMA.names)
            df["ts"] = pd.to_datetime(df["ts"], utc=True)
            folder = impression_log_dir(self.cfg)
            folder.mkdir(parents=True, exist_ok=True)
            for part, chunk in df.groupby("kafka_partition", sort=True):
                off = chunk["kafka_offset"].to_numpy()
                name = f"part-p{int(cast(int, part)):04d}-{int(off.min()):012d}-{int(off.max()):012d}.parquet"
                _write_atomic(pa.Table.from_pandas(chunk, schema=LOG_SCHEMA, preserve_index=False), folder / name)
            self.stats.written += len(df)
            observe_freshness(JOB, (time.time() * 1000 - np.asarray(self.produced_ms, dtype=np.float64)) / 1000)
            self.rows, self.produced_ms = [], []
        self.policy.reset()

    def close(self) -> None:
        """Nothing to release."""


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def run_impressions(cfg: MmadsConfig, *, stop_event: threading.Event | None = None,
                    max_idle_s: float | None = None, model_dir: Path | str | None = None) -> JobStats:
    """Run the impression logger until stopped (``mmads stream impressions``).

    Args:
        cfg: the configuration.
        stop_event: set it to stop gracefully (SIGINT/SIGTERM do the same in the main thread).
        max_idle_s: stop after this long without impressions (None: forever).
        model_dir: unused; accepted so every job has the same signature.

    Returns:
        The job's counters.
    """
    stats = JobStats(job=JOB)
    batch = max(cfg.streaming.behavior_batch_size, cfg.streaming.batch_size)
    return run_job(cfg, JOB, cfg.kafka.topics.impressions, ImpressionLogger(cfg, stats), batch_size=batch,
                   max_wait_ms=cfg.streaming.max_wait_ms, stop_event=stop_event, max_idle_s=max_idle_s,
                   stats=stats)


def main(argv: list[str] | None = None) -> int:
    """``python -m streaming.impression_logger --config FILE [--max-idle-s S]``."""
    from streaming.entry import job_main

    return job_main(lambda cfg, args: run_impressions(cfg, max_idle_s=args.max_idle_s), "the impression logger",
                    argv, job=JOB)


if __name__ == "__main__":
    raise SystemExit(main())

