"""Publish a dataset's rows as events (``mmads events replay``), in timestamp order, keyed by entity id.

Pacing: as fast as possible by default; ``rate`` sends R messages per second; ``speedup`` keeps the
dataset's own gaps divided by X (``speedup=3600`` plays an hour per second). Each message's Kafka
timestamp is its send time, which the jobs' freshness measurement starts from. The returned count
is what the "caught up" check compares with (Tansu's end offsets are wrong, see docs/architecture.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from infra.config import MmadsConfig
from infra.dataset import Dataset, load_dataset
from infra.errors import ConfigError, StackError, StackNotRunningError
from streaming.events import TOPIC_KINDS, TopicKind, dataset_events
from streaming.kafka_io import make_producer

logger = logging.getLogger(__name__)


def topic_name(cfg: MmadsConfig, kind: str) -> str:
    """The configured topic name of ``items``, ``behaviors`` or ``impressions``.

    Raises:
        ConfigError: ``kind`` is none of them.
    """
    if kind not in TOPIC_KINDS:
        raise ConfigError(f"unknown topic {kind!r}: expected one of {list(TOPIC_KINDS)}")
    return str(getattr(cfg.kafka.topics, kind))


def publish(cfg: MmadsConfig, topic: str, events: Iterable[tuple[bytes | None, bytes]], *,
            rate: float | None = None, total: int | None = None, progress: bool = False) -> int:
    """Send ``(key, value)`` pairs to ``topic``, optionally at ``rate`` messages per second.

    Returns:
        The number of messages acknowledged by the broker.

    Raises:
        StackError: the broker did not acknowledge every message.
    """
    producer = make_producer(cfg, client_id="mmads-replay")
    sent = 0
    start = time.monotonic()
    try:
        for key, value in tqdm(events, total=total, disable=not progress, desc=f"replay {topic}", unit="msg"):
            if rate:
                wait = start + sent / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            producer.send(topic, key=key, value=value)
            sent += 1
        producer.flush(timeout=60)
    except Exception as exc:
        raise StackError(f"replay to {topic} failed after {sent} messages: {exc}") from exc
    finally:
        producer.close(timeout=10)
    logger.info("published %d messages to %s in %.1fs", sent, topic, time.monotonic() - start)
    return sent


BROKER_PROBE_S = 2.0


def require_broker(cfg: MmadsConfig) -> None:
    """Fail at once, with the line ``mmads stack status`` prints for the broker, when it is down.

    Raises:
        StackNotRunningError: the broker does not answer within :data:`BROKER_PROBE_S` seconds.
    """
    from infra.stack import probe_kafka

    row = probe_kafka(cfg, BROKER_PROBE_S)
    if not row.healthy:
        raise StackNotRunningError(f"{row.part} at {row.endpoint}: {row.detail}; run `mmads stack up`")


def _paced(events: Iterable[tuple[pd.Timestamp, bytes, bytes]], speedup: float) -> Iterable[tuple[bytes, bytes]]:
    start = time.monotonic()
    first: pd.Timestamp | None = None
    for ts, key, value in events:
        first = ts if first is None else first
        wait = start + (ts - first).total_seconds() / speedup - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        yield key, value


def replay(dataset: Dataset | str | Path, cfg: MmadsConfig, topic: TopicKind | str, rate: float | None = None,
           speedup: float | None = None, progress: bool = True) -> int:
    """Publish one frame of a dataset to its topic as JSON events (the event contract of docs/events.md).

    Args:
        dataset: a loaded dataset or its directory.
        cfg: the configuration (broker, topic names).
        topic: ``items``, ``behaviors`` or ``impressions``.
        rate: messages per second (None: as fast as possible).
        speedup: replay the dataset's own time gaps divided by this factor (exclusive with ``rate``).
        progress: show a progress bar.

    Returns:
        The number of messages published.

    Raises:
        ConfigError: unknown topic, or both ``rate`` and ``speedup`` given, or a non-positive one.
        StackNotRunningError: the broker is down (checked before the dataset is read).
        StackError: the broker did not acknowledge the messages.
    """
    name = topic_name(cfg, topic)
    if rate is not None and speedup is not None:
        raise ConfigError("replay takes --rate or --speedup, not both")
    if (rate is not None and rate <= 0) or (speedup is not None and speedup <= 0):
        raise ConfigError(f"replay rate/speedup must be positive, got rate={rate} speedup={speedup}")
    require_broker(cfg)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(
        dataset, window=cfg.data.plausible_time_window)
    frame = {"items": ds.items, "behaviors": ds.behaviors, "impressions": ds.impressions}[topic]
    rows = dataset_events(ds, topic)  # type: ignore[arg-type]
    pairs: Iterable[tuple[bytes | None, bytes]]
    pairs = _paced(rows, speedup) if speedup else ((k, v) for _, k, v in rows)
    return publish(cfg, name, pairs, rate=rate, total=len(frame), progress=progress)
