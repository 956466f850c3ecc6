"""The thin consumer loop every streaming job shares: batch, process, write, THEN commit.

The loop owns only I/O policy: micro-batching (size / max wait), retries with exponential backoff
while a sink is down (:class:`~infra.errors.StackError`), dead letters, commits, stats and signals.
The job's logic lives in a :class:`Processor`:

* ``process(records)`` validates, transforms and writes the *online* sinks (Milvus, Feast online) and
  returns dead letters. It is called again with the same records after a failure, so it must be
  idempotent (upserts by id; state is swapped in only after the writes succeeded).
* ``flush()`` makes everything processed so far durable (offline parquet, changelog). The loop
  commits offsets only after a flush succeeded and the dead letters are acknowledged, so a crash
  at any point re-delivers only data whose writes may not have happened.
* ``held_offsets()`` names, per partition, the lowest offset still held in memory (the behavior
  job's retry buffer); commits never pass it.

SIGINT/SIGTERM finish the current batch, flush, commit and close.

Rebalances: kafka-python 3 runs the rebalance listener on its IO thread, while the loop's thread
waits inside ``poll`` (or ``close``) for it, so the listener may flush the processor but must not
block on the client: it commits with ``commit_async`` and awaits the result. A batch that was
collecting records when partitions were revoked waits until the new assignment is known (the
processor dropped the state of every revoked partition meanwhile), then keeps the records of the
partitions this process kept: kafka-python keeps their fetch positions, so they do not come
again. Those of partitions that moved are dropped (the new owner reads them from the commit), and
so are those of partitions lost (they restart from the commit).

Every loop reports to the process's Prometheus metrics (:mod:`streaming.metrics`): outcomes, dead
letters by reason class, the commit phase, lag, and the heartbeat and partitions behind ``/healthz``
and ``/readyz``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from infra.config import MmadsConfig
from infra.errors import BrokerDataLossError, StackError
from streaming.broker_check import BrokerWatch
from streaming.dlq import DeadLetter, DeadLetterWriter, reason_class
from streaming.kafka_io import group_id, make_consumer, make_producer
from streaming.metrics import JobMetrics, start_job, timed
from streaming.stats import JobStats, StatsWriter

with warnings.catch_warnings():  # kafka-python 3 reads its protocol schemas with deprecated importlib calls
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Processor(Protocol):
    """What a streaming job plugs into :func:`run_loop`."""

    def process(self, records: list[Any]) -> list[DeadLetter]:
        """Handle a batch (possibly empty: a timer tick); write online sinks; return dead letters."""
        ...

    def needs_flush(self) -> bool:
        """True when buffered durable writes are due (rows or age)."""
        ...

    def flush(self) -> None:
        """Write buffered durable data (offline files, changelog)."""
        ...

    def held_offsets(self) -> dict[tuple[str, int], int]:
        """``(topic, partition) -> lowest offset still held in memory`` (not yet final)."""
        ...

    def has_pending(self) -> bool:
        """True while events wait in memory (the loop does not stop idle while they do)."""
        ...

    def on_assigned(self, partitions: list[tuple[str, int]]) -> None:
        """Partitions were assigned to this process (restore their state)."""
        ...

    def on_revoked(self, partitions: list[tuple[str, int]]) -> None:
        """Partitions were taken away, after the loop's final flush and commit for them."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class StatelessProcessor:
    """Defaults for a :class:`Processor` that holds nothing in memory between commit points.

    Every consumed message is written or dead-lettered within its batch, so no offset is held back,
    nothing waits for an outside event, and a partition has no state to restore or drop.
    """

    def held_offsets(self) -> dict[tuple[str, int], int]:
        """Nothing is held beyond the next commit point."""
        return {}

    def has_pending(self) -> bool:
        """Nothing waits in memory for an outside event."""
        return False

    def on_assigned(self, partitions: list[tuple[str, int]]) -> None:
        """Stateless: nothing to restore."""

    def on_revoked(self, partitions: list[tuple[str, int]]) -> None:
        """Stateless: the loop flushed and committed before the partitions went."""


@dataclass(frozen=True)
class LoopSettings:
    """Knobs of :func:`run_loop`.

    Attributes:
        batch_size: most records per micro-batch.
        max_wait_ms: how long a batch waits for more records after its first one.
        max_backoff_s: ceiling of the exponential retry backoff.
        stats_interval_s: how often counters are logged and the stats file is written.
        max_idle_s: stop after this long without records and without pending events (None: never).
    """

    batch_size: int
    max_wait_ms: int
    max_backoff_s: float = 10.0
    stats_interval_s: float = 5.0
    max_idle_s: float | None = None


def retry_with_backoff(fn: Callable[[], T], what: str, stop: threading.Event, max_backoff_s: float,
                       stats: JobStats | None = None, beat: Callable[[], None] | None = None) -> T:
    """Call ``fn`` until it does not raise :class:`StackError`, sleeping 0.1, 0.2, 0.4 ... s between tries.

    ``beat`` is called before each retry: a loop waiting out a sink failure is alive (``/healthz``).

    Raises:
        StackError: the last failure, when ``stop`` is set while the sink is still down.
    """
    delay = 0.1
    while True:
        try:
            return fn()
        except StackError as exc:
            if stats is not None:
                stats.retries += 1
            if beat is not None:
                beat()
            if stop.is_set():
                raise
            logger.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
            stop.wait(delay)
            delay = min(delay * 2, max_backoff_s)


def poll_batch(consumer: Any, batch_size: int, max_wait_ms: int, idle_wait_ms: int,
               epoch: Callable[[], int] = lambda: 0,
               settle: Callable[[list[Any]], list[Any]] = lambda records: records) -> list[Any]:
    """Collect one micro-batch.

    Waits up to ``idle_wait_ms`` for a first record, then up to ``max_wait_ms`` more for the batch
    to fill, returning early when the broker has nothing more right now. ``epoch`` counts the
    rebalances that took partitions so far: when it moves during a ``poll``, the records collected
    before that poll go through ``settle`` (which waits for the new assignment and keeps what is
    still this consumer's).
    """
    first = consumer.poll(timeout_ms=idle_wait_ms, max_records=batch_size)
    records = [r for part in first.values() for r in part]
    if not records:
        return []
    deadline = time.monotonic() + max_wait_ms / 1000
    while len(records) < batch_size:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            break
        before = epoch()
        more = consumer.poll(timeout_ms=min(left_ms, 20), max_records=batch_size - len(records))
        got = [r for part in more.values() for r in part]
        if epoch() != before:
            records = settle(records)
        records.extend(got)
        if not got:
            break
    return records


def _kafka_offsets(todo: dict[tuple[str, int], int]) -> dict[Any, Any]:
    """``{(topic, partition): offset}`` as kafka-python's ``{TopicPartition: OffsetAndMetadata}``."""
    from kafka.structs import OffsetAndMetadata, TopicPartition

    return {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in todo.items()}


def _commit_failed(todo: dict[tuple[str, int], int], exc: Exception) -> None:
    # E.g. a rebalance took the partitions: the new owner re-reads them (the writes are idempotent).
    logger.warning("commit of %s failed (%s): the data will be re-delivered", todo, exc)


class _Rebalance(AsyncConsumerRebalanceListener):
    """Flush and commit before partitions go, restore them when they come.

    kafka-python calls these on its IO thread while the loop's thread waits in ``poll`` or ``close``:
    the processor is not in use, but the client's blocking calls are refused there, so the commit
    is ``commit_async``, awaited.
    """

    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Flush what was processed and commit it while this process still owns the partitions."""
        await self._drop(revoked, commit=True)

    async def on_partitions_lost(self, lost: Any) -> None:
        """The group no longer knows this member (a broker that restarted forgets its groups).

        A commit would be refused: flush what was processed, drop the partitions and commit nothing.
        The next owner re-reads from the last commit; the writes are idempotent (the crash path).
        """
        if lost:
            logger.warning("group membership lost: dropping %s without a commit",
                           sorted((tp.topic, tp.partition) for tp in lost))
        await self._drop(lost, commit=False)

    async def _drop(self, partitions: Any, commit: bool) -> None:
        loop = self.loop
        parts = [(tp.topic, tp.partition) for tp in partitions]
        gone = {f"{t}:{p}" for t, p in parts}
        loop.stats.assigned = [tp for tp in loop.stats.assigned if tp not in gone]
        if parts:
            loop.revocations += 1
            loop.rebalancing = True
            if not commit:
                loop.reset.update(parts)
            if not loop.closing:  # the loop's last commit point already ran (or was skipped on purpose)
                todo = loop.flush_point("rebalance" if commit else "lost", commit=commit)
                if todo:
                    await loop.commit_async(todo)
            loop.forget(parts)
            loop.processor.on_revoked(parts)
        loop.metrics.set_assigned(len(loop.stats.assigned))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Restore the new partitions' state."""
        loop = self.loop
        loop.rebalancing = False
        parts = [(tp.topic, tp.partition) for tp in assigned]
        logger.info("assigned partitions %s", sorted(parts))
        if parts:
            loop.processor.on_assigned(parts)
        loop.stats.assigned = sorted({*loop.stats.assigned, *(f"{t}:{p}" for t, p in parts)})
        loop.metrics.set_assigned(len(loop.stats.assigned))
        loop.stats_writer.write()


class ConsumerLoop:
    """The loop of one job process (see the module docstring).

    Args:
        consumer: a ``KafkaConsumer`` (not yet subscribed; :meth:`run` subscribes it).
        topic: the input topic.
        processor: the job logic.
        dlq: where dead letters go.
        stats: the counters.
        stats_writer: writes the stats file.
        settings: batching, backoff and idle knobs.
        stop: set it to stop gracefully (signals set it too).
        metrics: the job's Prometheus metrics (default: registered in this process's registry, no server).
        watch: checks each polled batch for a broker that lost the topic (it raises
            :class:`~infra.errors.BrokerDataLossError`, which ends the loop without a commit).
    """

    def __init__(self, consumer: Any, topic: str, processor: Processor, dlq: DeadLetterWriter,
                 stats: JobStats, stats_writer: StatsWriter, settings: LoopSettings,
                 stop: threading.Event | None = None, metrics: JobMetrics | None = None,
                 watch: BrokerWatch | None = None) -> None:
        self.consumer = consumer
        self.topic = topic
        self.processor = processor
        self.dlq = dlq
        self.stats = stats
        self.stats_writer = stats_writer
        self.settings = settings
        self.stop = stop or threading.Event()
        self.metrics = metrics or start_job(stats.job, topic, None)[0]
        self.watch = watch
        self._next: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._processed_at_commit = 0
        self.revocations = 0  # rebalances that took partitions so far (see poll_batch)
        self.rebalancing = False  # partitions were revoked and the new assignment is not known yet
        self.reset: set[tuple[str, int]] = set()  # lost during the current poll_batch: they restart at the commit
        self.closing = False  # set before the consumer closes: its revocation neither flushes nor commits

    def settle(self, records: list[Any]) -> list[Any]:
        """Of records polled before a revocation, those still this process's once the rebalance ends.

        Polls (heartbeating ``/healthz``) until the new assignment is known, then keeps the records
        of the partitions kept, followed by what the polls returned after the assignment. A partition
        that moved is read by its new owner from the commit, and a lost one restarts at the commit
        here; a kept partition keeps its fetch position (kafka-python 3 keeps the state of the
        partitions present before and after). Stopping mid-rebalance keeps nothing.
        """
        after: list[Any] = []
        while self.rebalancing and not self.stop.is_set():
            self.metrics.heartbeat()
            after.extend(r for part in self.consumer.poll(timeout_ms=100).values() for r in part)
        if self.rebalancing:
            return []
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()} - self.reset
        return [r for r in records if (r.topic, r.partition) in owned] + after

    def forget(self, parts: list[tuple[str, int]]) -> None:
        """Drop bookkeeping of partitions this process no longer owns."""
        for p in parts:
            self._next.pop(p, None)
            self._committed.pop(p, None)

    def commit_point(self, why: str) -> None:
        """Flush the processor and the dead letters, then commit what is final (timed as ``commit``)."""
        with timed("commit"):
            todo = self._flush_point(why, commit=True)
            if todo:
                from kafka.errors import KafkaError

                try:
                    self.consumer.commit(_kafka_offsets(todo))
                except KafkaError as exc:
                    _commit_failed(todo, exc)
                else:
                    self._committed_now(todo, why)
        self.metrics.sync_counts(self.stats.written, self.stats.dead_lettered)

    def flush_point(self, why: str, *, commit: bool) -> dict[tuple[str, int], int]:
        """Flush the processor and the dead letters (timed as ``commit``); returns the offsets to commit.

        For the rebalance listener, which commits them itself (:meth:`commit_async`).
        """
        with timed("commit"):
            todo = self._flush_point(why, commit)
        self.metrics.sync_counts(self.stats.written, self.stats.dead_lettered)
        return todo

    async def commit_async(self, todo: dict[tuple[str, int], int]) -> None:
        """Commit ``todo`` from the client's IO thread (a rebalance listener), awaiting the broker."""
        from kafka.errors import KafkaError

        try:
            await self.consumer.commit_async(_kafka_offsets(todo))
        except KafkaError as exc:
            _commit_failed(todo, exc)
        else:
            self._committed_now(todo, "rebalance")

    def _flush_point(self, why: str, commit: bool) -> dict[tuple[str, int], int]:
        retries = self.stats.retries
        retry_with_backoff(self.processor.flush, f"flush ({why})", self.stop, self.settings.max_backoff_s,
                           self.stats, self.metrics.heartbeat)
        # a retried flush retries the durable writes of every message consumed since the last commit
        self.metrics.retried((self.stats.retries - retries) * (self.stats.processed - self._processed_at_commit))
        self.dlq.flush()
        if not commit:
            return {}
        held = self.processor.held_offsets()
        offsets = {p: min(nxt, held.get(p, nxt)) for p, nxt in self._next.items()}
        return {p: o for p, o in offsets.items() if self._committed.get(p) != o}

    def _committed_now(self, todo: dict[tuple[str, int], int], why: str) -> None:
        self._committed.update(todo)
        self._processed_at_commit = self.stats.processed
        self.metrics.committed()
        self.stats.commits += 1
        self.stats.committed.update({f"{t}:{p}": o for (t, p), o in self._committed.items()})
        self.stats_writer.write()
        logger.debug("committed %s (%s)", todo, why)

    def _handle(self, records: list[Any]) -> None:
        started = time.perf_counter()
        retries = self.stats.retries
        letters = retry_with_backoff(lambda: self.processor.process(records), "batch", self.stop,
                                     self.settings.max_backoff_s, self.stats, self.metrics.heartbeat)
        # an empty poll's retried call is a flush: it retries what was consumed since the last commit
        self.metrics.retried((self.stats.retries - retries)
                             * (len(records) or self.stats.processed - self._processed_at_commit))
        for letter in letters:
            self.dlq.send(letter)
            self.metrics.dead_letter(reason_class(letter.error))
        self.stats.dead_lettered += len(letters)
        for r in records:
            key = (r.topic, r.partition)
            self._next[key] = max(self._next.get(key, 0), r.offset + 1)
        self.stats.processed += len(records)
        if records:
            self.stats.batches += 1
            self.stats.add_batch_ms((time.perf_counter() - started) * 1000)
        self.metrics.sync_counts(self.stats.written, self.stats.dead_lettered)

    def run(self) -> JobStats:
        """Consume until stopped (signal, ``stop`` event or ``max_idle_s``); returns the counters."""
        s = self.settings
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
        self.metrics.activate()
        last_record = last_log = time.monotonic()
        try:
            while not self.stop.is_set():
                self.metrics.heartbeat()
                self.reset.clear()
                records = poll_batch(self.consumer, s.batch_size, s.max_wait_ms, idle_wait_ms=100,
                                     epoch=lambda: self.revocations, settle=self.settle)
                if self.watch is not None:
                    self.watch.observe(records, self._next)
                self._handle(records)
                now = time.monotonic()
                if records or self.processor.has_pending():
                    last_record = now
                if self.processor.needs_flush():
                    self.commit_point("due")
                if now - last_log >= s.stats_interval_s:
                    logger.info(self.stats.summary())
                    self.stats_writer.write()
                    self.metrics.sample_lag(self.consumer, self._committed, self._next)
                    last_log = now
                if s.max_idle_s is not None and now - last_record >= s.max_idle_s:
                    logger.info("idle for %.1fs: stopping", s.max_idle_s)
                    break
            self.commit_point("shutdown")
        except BrokerDataLossError:
            self._next.clear()  # offsets into a log the broker lost: the close's revocation commits none
            raise
        except StackError as exc:
            # Only reached when stopping while a sink is down: nothing unwritten was committed.
            logger.error("stopping with a sink down; uncommitted data will be re-delivered: %s", exc)
        finally:
            self.closing = True
            try:
                self.consumer.close(autocommit=False)
            finally:
                self.stats_writer.write()
                logger.info("final: %s", self.stats.summary())
                self.metrics.close()
                self.processor.close()
        return self.stats


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` (the loop then finishes the batch, commits and closes).

    Only possible in the main thread; elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def _handler(signum: int, _frame: Any) -> None:
        logger.info("received %s: finishing the batch, committing, closing", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def run_job(cfg: MmadsConfig, job: str, topic: str, processor: Processor, *, batch_size: int,
            max_wait_ms: int, stop_event: threading.Event | None = None,
            max_idle_s: float | None = None, stats: JobStats | None = None) -> JobStats:
    """Wire a processor to Kafka (consumer group ``<prefix>-<job>``, dead letters, stats) and run it.

    Args:
        cfg: the configuration.
        job: the job name (``items``, ``behaviors``, ``impressions``).
        topic: the input topic.
        processor: the job logic.
        batch_size: most records per micro-batch.
        max_wait_ms: how long a batch waits to fill.
        stop_event: set it to stop gracefully; signal handlers set it when run in the main thread.
        max_idle_s: stop after this long without input (tests, benchmarks).
        stats: the counters the processor also updates (default: new ones).

    Returns:
        The job's counters.

    Raises:
        StackError: the metrics port cannot be bound (``streaming.metrics_port``).
    """
    stop = stop_event or threading.Event()
    install_signal_handlers(stop)
    stats = stats or JobStats(job=job)
    metrics, stats.metrics_port = start_job(job, topic, cfg.streaming.metrics_bind(cfg.profile))
    writer = StatsWriter(cfg, stats, topic)
    try:
        producer = make_producer(cfg, client_id=f"mmads-{job}-dlq")
        consumer = make_consumer(cfg, group=group_id(cfg, job), client_id=f"mmads-{job}",
                                 max_poll_records=batch_size)
    except BaseException:
        metrics.close()
        raise
    settings = LoopSettings(batch_size=batch_size, max_wait_ms=max_wait_ms,
                            max_backoff_s=cfg.streaming.max_backoff_s,
                            stats_interval_s=cfg.streaming.stats_interval_s, max_idle_s=max_idle_s)
    watch = BrokerWatch(cfg, topic, interval_s=cfg.streaming.stats_interval_s)
    loop = ConsumerLoop(consumer, topic, processor, DeadLetterWriter(producer), stats, writer, settings, stop,
                        metrics, watch)
    logger.info("%s job consuming %s as group %s", job, topic, group_id(cfg, job))
    try:
        return loop.run()
    finally:
        watch.close()
        producer.close(timeout=10)
