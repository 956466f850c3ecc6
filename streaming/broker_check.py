"""A streaming job's watch for a broker that lost its data (docs/architecture.md, "Broker faults").

A broker on memory storage that restarts comes back without topics: the first client to ask
recreates each topic empty, with a new id, and every group's committed offsets are gone. A job that
went on would be reset to offset 0 of the new topic, re-read from there, and commit offsets that
mean nothing. So the job stops, with one ERROR line and a non-zero exit, before its next commit:

* **topic recreated or gone**: the input topic's id differs from the one ``stack up`` recorded
  (:mod:`infra.topic_ids`), or, for a topic nobody recorded, from the first id this process saw;
  checked on the first batch and then every ``streaming.stats_interval_s``;
* **offsets went back**: a record arrives at an offset below the next offset already handled on its
  partition while this process owns it (the consumer was reset to the start of a new log).

:func:`~streaming.loop.run_job` builds the watch and the loop calls :meth:`BrokerWatch.observe` once
per polled batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from infra import topic_ids
from infra.config import MmadsConfig
from infra.errors import BrokerDataLossError

logger = logging.getLogger(__name__)

_WHAT_NOW = ("Stopping without committing. Re-publish what was lost, or run `mmads stack down` and "
             "`mmads stack up` to start clean, then restart the job.")


class BrokerWatch:
    """Detects that the broker lost the data of a job's input topic.

    Args:
        cfg: the configuration (state dir, Kafka client options, storage).
        topic: the job's input topic.
        interval_s: seconds between two topic id checks.
    """

    def __init__(self, cfg: MmadsConfig, topic: str, interval_s: float) -> None:
        self.cfg = cfg
        self.topic = topic
        self.interval_s = interval_s
        self._baseline: str | None = topic_ids.load_recorded(cfg).get(topic)
        self._checked_at = float("-inf")
        self._admin: Any = None

    def observe(self, records: Sequence[Any], next_offsets: Mapping[tuple[str, int], int]) -> None:
        """Check one polled batch (before it is handled) and, when due, the topic's id.

        Args:
            records: the batch (``ConsumerRecord``-like: ``topic``, ``partition``, ``offset``).
            next_offsets: ``(topic, partition) -> next offset`` already handled by this process.

        Raises:
            BrokerDataLossError: the input topic was recreated or is gone, or offsets went back.
        """
        back = check_offsets(records, next_offsets)
        if back:
            detail = ", ".join(f"partition {p} at offset {o} after {n}" for p, o, n in back)
            raise BrokerDataLossError(f"{_cause(self.cfg)}: offsets went back on topic '{self.topic}' ({detail}): "
                                      f"the broker no longer has the log this job read. {_WHAT_NOW}", [self.topic])
        now = time.monotonic()
        if now - self._checked_at < self.interval_s:
            return
        self._checked_at = now
        current = self._current_id()
        if current == "unreachable":
            return  # the broker is down or restarting: nothing is known yet
        if self._baseline is None:
            self._baseline = current
            return
        if current != self._baseline:
            raise topic_ids.loss_error(self.cfg, [topic_ids.TopicChange(self.topic, self._baseline, current)],
                                       _WHAT_NOW)

    def _current_id(self) -> str | None:
        """The topic's id on the broker, None when it has no such topic, ``"unreachable"`` when it is down."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(**self.cfg.kafka.client_options(), request_timeout_ms=3000,
                                               client_id="mmads-broker-watch")
            return topic_ids.describe_ids(self._admin, [self.topic])[self.topic]
        except (KafkaError, OSError) as exc:
            logger.debug("topic id of %s unreadable: %s", self.topic, exc)
            self.close()
            return "unreachable"

    def close(self) -> None:
        """Release the admin connection."""
        if self._admin is not None:
            try:
                self._admin.close()
            finally:
                self._admin = None


def _cause(cfg: MmadsConfig) -> str:
    k = cfg.kafka
    if cfg.profile == "embedded" and k.embedded and k.storage == "memory":
        return "broker restarted with memory storage: possible data loss"
    return "the broker lost messages: possible data loss"


def check_offsets(records: Sequence[Any], next_offsets: Mapping[tuple[str, int], int]) -> list[tuple[int, int, int]]:
    """The partitions whose records start below the next offset already handled.

    Returns:
        ``(partition, offset seen, next offset expected)`` per partition that went back.
    """
    back: dict[int, tuple[int, int, int]] = {}
    for r in records:
        expected = next_offsets.get((r.topic, r.partition))
        if expected is not None and r.offset < expected and r.partition not in back:
            back[r.partition] = (r.partition, r.offset, expected)
    return sorted(back.values())
