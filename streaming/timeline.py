"""Replay a whole dataset on one merged timeline: items, behaviors and impressions in time order.

The main job uses this instead of three per-topic replays so the jobs see the marketplace as it
happened: an item is announced before the behaviors that touch it, and the item indexer receives new
items at the marketplace's own pace (so item freshness is measured under a realistic load, not
behind a backlog of the whole catalogue).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterator

import pandas as pd
from tqdm import tqdm

from infra.config import MmadsConfig
from infra.dataset import Dataset
from infra.errors import ConfigError, MmadsError, StackError
from streaming.events import TOPIC_KINDS, TopicKind, dataset_events
from streaming.kafka_io import make_producer
from streaming.replay import topic_name

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0


def _tagged(ds: Dataset, rank: int, kind: TopicKind) -> Iterator[tuple[pd.Timestamp, int, str, bytes, bytes]]:
    for ts, key, value in dataset_events(ds, kind):
        yield ts, rank, kind, key, value


def _merged(ds: Dataset) -> Iterator[tuple[pd.Timestamp, int, str, bytes, bytes]]:
    """Every event as ``(ts, topic rank, kind, key, value)``; ties: items before behaviors before impressions."""
    streams = [_tagged(ds, rank, kind) for rank, kind in enumerate(TOPIC_KINDS)]
    yield from heapq.merge(*streams, key=lambda e: (e[0], e[1]))


def replay_timeline(ds: Dataset, cfg: MmadsConfig, *, rate: float | None = None,
                    progress: bool = True, check: Callable[[], None] | None = None) -> dict[str, int]:
    """Publish every event of ``ds`` in time order to its topic.

    Args:
        ds: the loaded dataset.
        cfg: the configuration (broker, topic names).
        rate: total messages per second over all topics (None: as fast as possible).
        progress: show a progress bar.
        check: called about once a second while publishing; an :class:`MmadsError` it raises stops
            the replay and propagates (the main job's dead-letter check).

    Returns:
        Messages acknowledged per topic name (what the caught-up check compares with).

    Raises:
        ConfigError: a non-positive rate.
        StackError: the broker did not acknowledge every message.
    """
    if rate is not None and rate <= 0:
        raise ConfigError(f"replay rate must be positive, got {rate}")
    names: dict[str, str] = {kind: topic_name(cfg, kind) for kind in TOPIC_KINDS}
    total = len(ds.items) + len(ds.behaviors) + len(ds.impressions)
    counts = dict.fromkeys(names.values(), 0)
    producer = make_producer(cfg, client_id="mmads-replay")
    start = time.monotonic()
    next_check = start + CHECK_INTERVAL_S
    sent = 0
    try:
        for _, _, kind, key, value in tqdm(_merged(ds), total=total, disable=not progress, desc="replay",
                                           unit="msg"):
            if rate:
                wait = start + sent / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            producer.send(names[kind], key=key, value=value)
            counts[names[kind]] += 1
            sent += 1
            if check is not None and time.monotonic() >= next_check:
                check()
                next_check = time.monotonic() + CHECK_INTERVAL_S
        producer.flush(timeout=60)
    except MmadsError:
        raise
    except Exception as exc:
        raise StackError(f"replay failed after {sent} messages: {exc}") from exc
    finally:
        producer.close(timeout=10)
    logger.info("published %s in %.1fs", counts, time.monotonic() - start)
    return counts
