"""The behavior job's state: per-user entries, the changelog that survives restarts, the item cache.

A :class:`UserEntry` is the pure history state of :mod:`feature_repo.history` plus ``last_offset``,
the highest input offset already folded in (or dead-lettered) for that user. Because a user's
events all live in one partition, and are applied in offset order, "skip an event whose offset is
``<= last_offset``" makes re-delivery after a crash harmless: the changelog write and the offset
commit are not atomic, so a restarted job may see events its restored state already contains.

The changelog topic (``cfg.kafka.topics.behavior_changelog``, keyed by user id) gets one record per
changed user at every commit point, written to the same partition number as the input partition,
so a process that is assigned input partition p restores exactly changelog partition p. The
latest record per user wins, which is also what log compaction keeps.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from feature_repo.history import HistoryState
from infra.config import MmadsConfig
from streaming.kafka_io import make_consumer

logger = logging.getLogger(__name__)


class UserEntry(NamedTuple):
    """A user's history state and the highest input offset applied to it (-1: none)."""

    state: HistoryState
    last_offset: int = -1


def encode_entry(user_id: int, entry: UserEntry) -> bytes:
    """The changelog value of one user."""
    return json.dumps({
        "user_id": user_id, "item_ids": list(entry.state.item_ids), "item_ts": list(entry.state.item_ts),
        "last_event_ts_us": entry.state.last_event_us, "offset": entry.last_offset,
    }, separators=(",", ":")).encode()


def decode_entry(value: bytes, n: int) -> tuple[int, UserEntry]:
    """Parse a changelog value into ``(user_id, entry)`` with history cap ``n``."""
    doc = json.loads(value)
    us = doc.get("last_event_ts_us")
    last = None if us is None else int(us)
    ids = tuple(int(i) for i in doc["item_ids"])[:n]
    # a record written before the lean row has no item times: the last event time stands in for them
    fallback = -1 if last is None else last
    times = tuple(int(t) for t in doc.get("item_ts", [fallback] * len(ids)))[:n]
    state = HistoryState(n=n, item_ids=ids, item_ts=times, last_event_us=last)
    return int(doc["user_id"]), UserEntry(state, int(doc["offset"]))


def restore_changelog(cfg: MmadsConfig, partitions: Iterable[int],
                      poll_ms: int = 200) -> dict[int, dict[int, UserEntry]]:
    """Read changelog partitions from the beginning; the latest record per user wins.

    Tansu reports end offsets too low (the last batch's start + 1), never too high, so reading
    until every position has reached the reported end AND a poll comes back empty reads it all.

    Args:
        cfg: the configuration (broker, changelog topic, history cap N).
        partitions: the partition numbers to restore.
        poll_ms: how long one poll waits.

    Returns:
        ``partition -> {user_id: entry}``.
    """
    from kafka.structs import TopicPartition

    parts = sorted(set(partitions))
    out: dict[int, dict[int, UserEntry]] = {p: {} for p in parts}
    if not parts:
        return out
    topic = cfg.kafka.topics.behavior_changelog
    tps = [TopicPartition(topic, p) for p in parts]
    consumer = make_consumer(cfg, group=None, client_id="mmads-behaviors-restore", max_poll_records=5000)
    started = time.monotonic()
    n_records = 0
    try:
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        while True:
            batch = consumer.poll(timeout_ms=poll_ms)
            for tp, records in batch.items():
                for r in records:
                    uid, entry = decode_entry(r.value, cfg.model.history_len)
                    out[tp.partition][uid] = entry
                    n_records += 1
            if not batch and all(consumer.position(tp) >= ends.get(tp, 0) for tp in tps):
                break
    finally:
        consumer.close(autocommit=False)
    logger.info("restored %d users of partitions %s from %d changelog records in %.2fs",
                sum(len(u) for u in out.values()), parts, n_records, time.monotonic() - started)
    return out


class ItemCache:
    """Item vectors by id in one growing matrix (row 0 is the zero vector for unknown ids).

    Args:
        dim: the vector dimension d.
        fetch: looks vectors up by id (e.g. :meth:`MilvusSink.get_vectors`); ids it does not
            return are unknown for now.
        recheck_s: an unknown id is looked up again at most this often.
    """

    def __init__(self, dim: int, fetch: Callable[[list[int]], dict[int, np.ndarray]],
                 recheck_s: float = 0.2) -> None:
        self.dim = dim
        self._fetch = fetch
        self.recheck_s = recheck_s
        self.matrix = np.zeros((1024, dim), dtype=np.float32)
        self.index: dict[int, int] = {}
        self._checked: dict[int, float] = {}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.index

    def put(self, item_id: int, vector: np.ndarray) -> None:
        """Store (or replace) one vector."""
        row = self.index.get(item_id)
        if row is None:
            row = len(self.index) + 1
            if row >= len(self.matrix):
                self.matrix = np.vstack([self.matrix, np.zeros_like(self.matrix)])
            self.index[item_id] = row
        self.matrix[row] = vector
        self._checked.pop(item_id, None)

    def ensure(self, item_ids: Iterable[int]) -> None:
        """Fetch the ids not cached yet (unknown ones at most every ``recheck_s``).

        Raises:
            StackError: the vector store is unreachable.
        """
        now = time.monotonic()
        want = {int(i) for i in item_ids if i not in self.index}
        want = {i for i in want if now - self._checked.get(i, -1e9) >= self.recheck_s}
        if not want:
            return
        found = self._fetch(sorted(want))
        for i, v in found.items():
            self.put(i, v)
        for i in want - set(found):
            self._checked[i] = now

    def rows(self, item_ids: Any) -> np.ndarray:
        """Matrix rows of ``item_ids`` (0 for unknown ids)."""
        get = self.index.get
        return np.fromiter((get(int(i), 0) for i in item_ids), dtype=np.int64)
