"""Kafka client factories configured for this stack (docs/architecture.md, "Measured behaviour of the stack").

* ``fetch_max_wait_ms`` low: Tansu answers a waiting fetch by polling, so the default 500 ms adds
  up to ~250 ms of latency per event.
* ``max_partition_fetch_bytes`` 4 MiB (kafka-python: 1 MiB): a fetch brings ~24,000 behaviors per
  partition, so a job draining a backlog waits for the broker less often. kafka-python sends the next
  fetch only once the buffered records are all taken, and a behavior batch (40,000) took several
  1 MiB rounds.
* ``enable_auto_commit=False``: the consumer loop commits only after the writes succeed.
* ``auto_offset_reset="earliest"``: Tansu's end offsets are wrong, so "latest" would skip or
  re-read at random; a new group starts at the beginning and committed offsets do the rest.
* ``crc32c`` must be importable, or kafka-python checks CRCs in pure Python (10x slower).
* kafka-python's "Task ... ran for 0.2s ... blocking the event loop" warning is dropped below 1 s:
  the rebalance listener flushes and restores state on the client's IO thread while the job's
  thread waits for it (:mod:`streaming.loop`), and on 2 busy cores a client's IO step is often
  preempted for longer than the 0.1 s kafka-python warns at; kafka-python itself warns about a
  listener that takes more than a second.

Nothing here connects at import time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from infra.config import MmadsConfig
from infra.errors import StackNotRunningError

logger = logging.getLogger(__name__)
_crc_warned = False
SLOW_STEP_WARN_S = 1.0
_SLOW_STEP = re.compile(r"^Task .* ran for ([0-9.]+)s")


class SlowStepFilter(logging.Filter):
    """Drops kafka-python's slow event-loop step warnings shorter than :data:`SLOW_STEP_WARN_S`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a "Task ... ran for N s" line with N below the threshold."""
        found = _SLOW_STEP.match(record.getMessage())
        return found is None or float(found.group(1)) >= SLOW_STEP_WARN_S


def _prepare_client() -> None:
    """Before a client is made: warn once when crc32c is missing; quiet the sub-second slow-step lines."""
    global _crc_warned
    try:
        import crc32c  # noqa: F401
    except ImportError:
        if not _crc_warned:
            logger.warning("crc32c is not installed: kafka-python checks CRCs in pure Python (~10x slower); "
                           "pip install 'kafka-python[crc32c]'")
            _crc_warned = True
    selector = logging.getLogger("kafka.net.selector")
    if not any(isinstance(f, SlowStepFilter) for f in selector.filters):
        selector.addFilter(SlowStepFilter())


def group_id(cfg: MmadsConfig, job: str) -> str:
    """The consumer group of a streaming job, e.g. ``mmads-items-indexer``."""
    return f"{cfg.kafka.group_prefix}-{job}"


def make_producer(cfg: MmadsConfig, *, client_id: str = "mmads-producer", **overrides: Any) -> Any:
    """A ``KafkaProducer`` for JSON event values and string keys (bytes in, bytes out).

    Args:
        cfg: the configuration (``kafka`` section).
        client_id: shows up in broker logs.
        overrides: extra ``KafkaProducer`` options (e.g. ``linger_ms``).

    Raises:
        StackNotRunningError: no broker answers at the configured address.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    _prepare_client()
    opts: dict[str, Any] = {"linger_ms": 5, "acks": 1, "client_id": client_id, "retries": 5}
    opts.update(overrides)
    try:
        return KafkaProducer(**cfg.kafka.client_options(), **opts)
    except KafkaError:
        raise StackNotRunningError(f"no Kafka broker at {cfg.kafka.servers}; run `mmads stack up`") from None


def make_consumer(
    cfg: MmadsConfig,
    topics: Sequence[str] = (),
    *,
    group: str | None,
    client_id: str = "mmads-consumer",
    listener: Any = None,
    max_poll_records: int = 500,
    **overrides: Any,
) -> Any:
    """A ``KafkaConsumer`` with manual commits, subscribed to ``topics`` in consumer group ``group``.

    Args:
        cfg: the configuration (``kafka`` section: timeouts, fetch wait).
        topics: topics to subscribe to (empty: the caller assigns partitions itself).
        group: the consumer group id (None: no group, no commits).
        client_id: shows up in broker logs.
        listener: a rebalance listener (``ConsumerRebalanceListener`` or its async variant).
        max_poll_records: upper bound of records returned by one ``poll``.
        overrides: extra ``KafkaConsumer`` options.

    Raises:
        StackNotRunningError: no broker answers at the configured address.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    _prepare_client()
    k = cfg.kafka
    opts: dict[str, Any] = {
        "group_id": group, "client_id": client_id, "enable_auto_commit": False,
        "auto_offset_reset": "earliest", "fetch_max_wait_ms": k.fetch_max_wait_ms,
        "max_partition_fetch_bytes": k.max_partition_fetch_bytes,
        "session_timeout_ms": k.session_timeout_ms, "heartbeat_interval_ms": k.heartbeat_interval_ms,
        "max_poll_records": max_poll_records, "max_poll_interval_ms": 300_000,
    }
    opts.update(overrides)
    try:
        consumer = KafkaConsumer(**k.client_options(), **opts)
    except KafkaError:
        raise StackNotRunningError(f"no Kafka broker at {k.servers}; run `mmads stack up`") from None
    if group is not None and not k.leaves_group_on_close:
        _stay_in_group_on_close(consumer)
    if topics:
        consumer.subscribe(list(topics), listener=listener)
    return consumer


def _stay_in_group_on_close(consumer: Any) -> None:
    """Make ``consumer.close()`` skip its LeaveGroup (see ``KafkaConfig.leaves_group_on_close``).

    The group then drops the member when its session times out, as after a crash.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "maybe_leave_group"):
        logger.warning("this kafka-python has no coordinator.maybe_leave_group: consumers send LeaveGroup on close")
        return
    coordinator.maybe_leave_group = lambda *args, **kwargs: None
