"""The behavior-feature job (``mmads stream behaviors``): behaviors -> per-user history -> Feast.

Per micro-batch: validate (bad events are dead-lettered), fold each event into its user's history
with the pure :func:`feature_repo.history.step`, write the changed users to Feast ``user_behavior``
online in ONE call (coalesced per user), and buffer one offline snapshot per event (the row the
batch path of :func:`feature_repo.history.history_snapshots` produces), so historical retrieval
sees exactly what online saw. The rows are lean: history item ids and times, no vectors (readers
gather those from the item rows, :func:`feature_repo.history.gather`).

Which items are indexed comes from a local :class:`ItemCache` filled from Milvus by id. A behavior
whose item is not indexed yet (the items and behaviors topics race) waits in a bounded retry buffer;
later events of the same user queue behind it so the history keeps event order. It is applied as soon as the
item shows up, or dead-lettered after ``retry_max_wait_s`` (or when the buffer is full).

Commit points (every ``offline_flush_s`` / ``offline_flush_rows``): append the offline snapshots,
write the changelog records of the changed users, THEN commit offsets (never past an event still
in the retry buffer). After a crash the state is restored from the changelog and re-delivered
events already folded in are skipped by offset (:mod:`streaming.behavior_state`); re-delivered
events not yet in the changelog are re-applied to the same state, giving the same rows again.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from itertools import chain
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa

from feature_repo.history import BehaviorEvent as HistoryEvent
from feature_repo.history import HistorySnapshot, HistoryState, step
from feature_repo.schema import USER_VIEW
from feature_repo.store import append_offline, open_store, write_online_users
from infra.config import MmadsConfig
from infra.errors import InvalidEventError, StackError
from streaming.behavior_state import ItemCache, UserEntry, encode_entry, restore_changelog
from streaming.buffers import FlushPolicy, feast_call
from streaming.dlq import DeadLetter
from streaming.events import BehaviorEvent, parse_event
from streaming.kafka_io import make_producer
from streaming.loop import run_job
from streaming.metrics import timed
from streaming.milvus_sink import MilvusSink
from streaming.stats import FreshnessLog, JobStats

logger = logging.getLogger(__name__)
JOB = "behaviors"
CHANGELOG_BATCH_BYTES = 512 * 1024


@dataclass(frozen=True)
class _Waiting:
    event: BehaviorEvent
    record: Any
    since: float


_EPOCH_DAY = date(1970, 1, 1).toordinal()


def epoch_us(t: datetime) -> int:
    """Epoch microseconds of a datetime whose wall time is UTC (as every parsed event time is).

    Built from the fields: ``pd.Timestamp(t)`` of pydantic's datetime took 2.9 us an event (a tenth
    of the job's per-event time) and aware datetime arithmetic 1.5 us; this takes 0.35 us.
    """
    days = t.toordinal() - _EPOCH_DAY
    return ((days * 86_400 + t.hour * 3_600 + t.minute * 60 + t.second) * 1_000_000) + t.microsecond


class _BatchWork:
    """Copy-on-write view of the job state for one batch; nothing is mutated until it succeeds."""

    def __init__(self, job: BehaviorJob, now: float) -> None:
        self.job = job
        self.now = now
        self.entries: dict[int, tuple[int, UserEntry]] = {}
        self.queues: dict[int, deque[_Waiting]] = {}
        self.applied: list[tuple[HistorySnapshot, Any]] = []
        self.letters: list[DeadLetter] = []
        self.skipped = 0

    def entry(self, uid: int, part: int) -> UserEntry:
        if uid in self.entries:
            return self.entries[uid][1]
        found = self.job.users.get(part, {}).get(uid)
        return found if found is not None else UserEntry(HistoryState.empty(self.job.n))

    def queue(self, uid: int) -> deque[_Waiting]:
        if uid not in self.queues:
            self.queues[uid] = deque(self.job.waiting.get(uid, ()))
        return self.queues[uid]

    def blocked(self, uid: int) -> bool:
        return bool(self.queues[uid]) if uid in self.queues else uid in self.job.waiting

    def apply(self, ev: BehaviorEvent, rec: Any) -> None:
        e = self.entry(ev.user_id, rec.partition)
        state, snap = step(e.state, HistoryEvent._make((ev.user_id, ev.item_id, ev.action, epoch_us(ev.ts))))
        self.entries[ev.user_id] = (rec.partition, UserEntry._make((state, rec.offset)))
        self.applied.append((snap, rec))

    def dead_letter(self, uid: int, w: _Waiting, reason: str) -> None:
        self.letters.append(DeadLetter.of(w.record, reason))
        e = self.entry(uid, w.record.partition)
        self.entries[uid] = (w.record.partition, UserEntry(e.state, max(e.last_offset, w.record.offset)))

    def drain(self, uid: int) -> None:
        """Apply the user's waiting events whose items are known now; expire the head if too old."""
        q = self.queue(uid)
        while q:
            w = q[0]
            if w.record.offset <= self.entry(uid, w.record.partition).last_offset:
                self.skipped += 1
            elif w.event.item_id in self.job.cache:
                self.apply(w.event, w.record)
            elif self.now - w.since >= self.job.cfg.streaming.retry_max_wait_s:
                self.dead_letter(uid, w, f"unknown item {w.event.item_id}: not indexed after "
                                         f"{self.job.cfg.streaming.retry_max_wait_s:g}s")
            else:
                return
            q.popleft()

    def offer(self, ev: BehaviorEvent, rec: Any) -> None:
        """A new event: queue behind a blocked user, skip if already applied, apply, or start waiting."""
        uid = ev.user_id
        if self.blocked(uid):
            self.queue(uid).append(_Waiting(ev, rec, self.now))
        elif rec.offset <= self.entry(uid, rec.partition).last_offset:
            self.skipped += 1
        elif ev.item_id in self.job.cache:
            self.apply(ev, rec)
        else:
            self.queue(uid).append(_Waiting(ev, rec, self.now))

    def enforce_bound(self) -> None:
        """Dead-letter the oldest waiting heads while the retry buffer holds too many events."""
        cap = self.job.cfg.streaming.retry_buffer_size
        while True:
            views = {uid: q for uid, q in self.job.waiting.items() if uid not in self.queues}
            views.update({uid: q for uid, q in self.queues.items() if q})
            if sum(len(q) for q in views.values()) <= cap:
                return
            uid = min(views, key=lambda u: (views[u][0].since, views[u][0].record.offset))
            q = self.queue(uid)
            self.dead_letter(uid, q.popleft(), f"retry buffer full ({cap} events waiting for unknown items)")
            self.drain(uid)


class BehaviorJob:
    """The processor of the behavior job (see the module docstring).

    Args:
        cfg: the configuration.
        cache: which items are indexed (their vectors by id).
        write_users: writes ``user_behavior`` rows (an Arrow table of :data:`feature_repo.schema.USER_SCHEMA`, one row
            per user) online in one call (:func:`feast_user_writer`).
        write_changelog: makes ``(partition, user_id, value)`` changelog records durable
            (:func:`kafka_changelog_writer`).
        stats: counters to update.
        freshness: where freshness samples go (None: not recorded).
    """

    def __init__(self, cfg: MmadsConfig, cache: ItemCache, write_users: Callable[[pa.Table], None],
                 write_changelog: Callable[[list[tuple[int, int, bytes]]], None], stats: JobStats,
                 freshness: FreshnessLog | None = None) -> None:
        self.cfg = cfg
        self.n = cfg.model.history_len
        self.cache = cache
        self.write_users = write_users
        self.write_changelog = write_changelog
        self.stats = stats
        self.freshness = freshness
        self.users: dict[int, dict[int, UserEntry]] = {}
        self.waiting: dict[int, deque[_Waiting]] = {}
        self.changed: dict[int, tuple[int, UserEntry]] = {}
        self.offline: list[pa.Table] = []
        self.policy = FlushPolicy(cfg.streaming.offline_flush_rows, cfg.streaming.offline_flush_s)

    def process(self, records: list[Any]) -> list[DeadLetter]:
        """Fold one batch into the state and write the changed users online; returns dead letters."""
        letters: list[DeadLetter] = []
        valid: list[tuple[BehaviorEvent, Any]] = []
        window = self.cfg.data.plausible_time_window
        with timed("decode", len(records)):
            for r in records:
                try:
                    valid.append((cast(BehaviorEvent, parse_event("behaviors", r.value, window)), r))
                except InvalidEventError as exc:
                    letters.append(DeadLetter.of(r, exc.reason))
        waiting_ids = {w.event.item_id for q in self.waiting.values() for w in q}
        with timed("milvus"):
            self.cache.ensure(waiting_ids | {ev.item_id for ev, _ in valid})
        work = _BatchWork(self, time.monotonic())
        for uid in list(self.waiting):
            work.drain(uid)
        for ev, r in valid:
            work.offer(ev, r)
        work.enforce_bound()
        if work.applied:
            self._write_online(work)
        self._adopt(work, bool(records))
        return letters + work.letters

    def _write_online(self, work: _BatchWork) -> None:
        """One Feast online write of every user changed by the batch (their latest state)."""
        snaps = list({snap.user_id: snap for snap, _ in work.applied}.values())
        with timed("feast"):
            self.write_users(self.snapshot_table(snaps))
        if self.freshness is not None:
            self.freshness.record(np.array([s.user_id for s, _ in work.applied]),
                                  np.array([r.timestamp for _, r in work.applied]), int(time.time() * 1000))

    def _adopt(self, work: _BatchWork, had_records: bool) -> None:
        """The batch's writes succeeded: make its view the job state."""
        for uid, (part, entry) in work.entries.items():
            self.users.setdefault(part, {})[uid] = entry
            self.changed[uid] = (part, entry)
        for uid, q in work.queues.items():
            if q:
                self.waiting[uid] = q
            else:
                self.waiting.pop(uid, None)
        if work.applied:
            self.offline.append(self.snapshot_table([s for s, _ in work.applied]))
        self.stats.written += len(work.applied)
        if had_records or work.entries:
            self.policy.touch(len(work.applied))

    def snapshot_table(self, snaps: list[HistorySnapshot]) -> pa.Table:
        """Offline ``user_behavior`` rows, one per snapshot, built column-wise in Arrow."""
        lengths = np.fromiter((len(s.hist_item_ids) for s in snaps), dtype=np.int64, count=len(snaps))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        total = int(lengths.sum())  # chain.from_iterable walks the tuples in C (a generator: 50 ns an element)
        flat_ids = np.fromiter(chain.from_iterable(s.hist_item_ids for s in snaps), dtype=np.int64, count=total)
        flat_ts = np.fromiter(chain.from_iterable(s.hist_ts for s in snaps), dtype=np.int64, count=total)
        ts_type = pa.timestamp("us", tz="UTC")
        last = np.fromiter((s.last_event_us for s in snaps), dtype=np.int64, count=len(snaps))
        event = np.fromiter((s.event_us for s in snaps), dtype=np.int64, count=len(snaps))
        return pa.table({
            "user_id": pa.array(np.array([s.user_id for s in snaps], dtype=np.int64)),
            "hist_item_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat_ids)),
            "hist_ts": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat_ts)),
            "last_event_ts": pa.array(last, type=ts_type),
            "event_timestamp": pa.array(event, type=ts_type),
        })

    def needs_flush(self) -> bool:
        """True when snapshots or changed users are due."""
        return self.policy.due()

    def flush(self) -> None:
        """Append the offline snapshots, then write the changelog of the changed users."""
        if self.offline:
            append_offline(self.cfg, USER_VIEW, pa.concat_tables(self.offline))
            self.offline = []
        if self.changed:
            self.write_changelog([(part, uid, encode_entry(uid, e)) for uid, (part, e) in self.changed.items()])
            self.changed.clear()
        self.policy.reset()

    def held_offsets(self) -> dict[tuple[str, int], int]:
        """Per partition, the lowest offset still waiting in the retry buffer."""
        held: dict[tuple[str, int], int] = {}
        for q in self.waiting.values():
            for w in q:
                key = (w.record.topic, w.record.partition)
                held[key] = min(held.get(key, w.record.offset), w.record.offset)
        return held

    def has_pending(self) -> bool:
        """True while events wait for their items."""
        return bool(self.waiting)

    def on_assigned(self, partitions: list[tuple[str, int]]) -> None:
        """Restore the users of the assigned partitions from the changelog."""
        self.users.update(restore_changelog(self.cfg, [p for _, p in partitions]))

    def on_revoked(self, partitions: list[tuple[str, int]]) -> None:
        """Forget the users and waiting events of partitions that moved to another process."""
        gone = {p for _, p in partitions}
        for p in gone:
            self.users.pop(p, None)
        for uid in [u for u, q in self.waiting.items() if q and q[0].record.partition in gone]:
            del self.waiting[uid]

    def close(self) -> None:
        """Nothing to release (the writers belong to the caller)."""


def tune_gc() -> None:
    """Fewer garbage collections in the job process (call once, after start-up).

    The job allocates a few short-lived objects per event (the parsed event, the new state, the
    snapshot) and holds a long-lived state per user plus Feast's registry objects. With the default
    thresholds (700, 10, 10) the collector ran gen-2 passes over all of that every few batches: 7.7
    of 10.8 CPU seconds in a 58,000-event in-process run. Freezing what start-up built and
    collecting gen 0 every 50,000 allocations took it to 0.4 s; nothing the job keeps is cyclic.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def feast_user_writer(store: Any) -> Callable[[pa.Table], None]:
    """A ``write_users`` for :class:`BehaviorJob` that writes to Feast online (failures retried)."""
    def write(rows: pa.Table) -> None:
        feast_call("write user_behavior online", lambda: write_online_users(store, rows))
    return write


def kafka_changelog_writer(cfg: MmadsConfig, producer: Any) -> Callable[[list[tuple[int, int, bytes]]], None]:
    """A ``write_changelog`` for :class:`BehaviorJob`: sends to the changelog topic and waits for acks."""
    topic = cfg.kafka.topics.behavior_changelog

    def write(records: list[tuple[int, int, bytes]]) -> None:
        try:
            for part, uid, value in records:
                producer.send(topic, key=str(uid).encode(), value=value, partition=part)
            producer.flush(timeout=30)
        except Exception as exc:  # noqa: BLE001 - any producer failure means "not durable yet"
            raise StackError(f"changelog write to {topic} failed: {exc}") from exc
    return write


def run_behaviors(cfg: MmadsConfig, *, stop_event: threading.Event | None = None,
                  max_idle_s: float | None = None, model_dir: Path | str | None = None) -> JobStats:
    """Run the behavior job until stopped (``mmads stream behaviors``).

    Args:
        cfg: the configuration.
        stop_event: set it to stop gracefully (SIGINT/SIGTERM do the same in the main thread).
        max_idle_s: stop after this long without events and with nothing waiting (None: forever).
        model_dir: unused (vectors come from Milvus); accepted so every job has the same signature.

    Returns:
        The job's counters.
    """
    milvus = MilvusSink(cfg, cfg.model.dim)
    cache = ItemCache(cfg.model.dim, milvus.get_vectors)
    tune_gc()
    # One changelog record is a whole user row (~1.5 KB at N = 50): with the default 16 KB batches,
    # every tenth send woke the sender thread and made a produce request of its own.
    producer = make_producer(cfg, client_id="mmads-behaviors-changelog", batch_size=CHANGELOG_BATCH_BYTES)
    stats = JobStats(job=JOB)
    proc = BehaviorJob(cfg, cache, feast_user_writer(open_store(cfg)), kafka_changelog_writer(cfg, producer),
                       stats, FreshnessLog(cfg, JOB))
    try:
        return run_job(cfg, JOB, cfg.kafka.topics.behaviors, proc, batch_size=cfg.streaming.behavior_batch_size,
                       max_wait_ms=cfg.streaming.max_wait_ms, stop_event=stop_event, max_idle_s=max_idle_s,
                       stats=stats)
    finally:
        producer.close(timeout=10)
        milvus.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m streaming.behavior_job --config FILE [--max-idle-s S]``."""
    from streaming.entry import job_main

    return job_main(lambda cfg, args: run_behaviors(cfg, max_idle_s=args.max_idle_s), "the behavior job", argv, job=JOB)


if __name__ == "__main__":
    raise SystemExit(main())
