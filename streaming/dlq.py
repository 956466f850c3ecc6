"""Dead letters: a message the job cannot use goes to ``<topic>.dlq`` with the reason, never stops the job.

A dead-letter value is a JSON object::

    {"error": "missing field 'title'", "topic": "items", "partition": 2, "offset": 17,
     "key": "42", "original": "<the value as UTF-8 text, or null>",
     "original_b64": "<the exact original bytes, base64>", "timestamp_ms": 1714560000000,
     "dead_lettered_at_ms": 1714560000123}

``original_b64`` keeps the bytes exactly (a value that is not UTF-8 survives); ``original`` is there
for people reading the topic. The record is keyed like the original. Every dead letter is logged
with topic, partition, offset and reason; the value itself is not logged (it may hold user data).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from infra.redact import redact

logger = logging.getLogger(__name__)


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of an input topic."""
    return f"{topic}.dlq"


@dataclass(frozen=True)
class DeadLetter:
    """One message to dead-letter: where it came from, its bytes and why it was rejected."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    error: str

    @classmethod
    def of(cls, record: Any, error: str) -> DeadLetter:
        """Build from a kafka-python ``ConsumerRecord`` (or anything with the same fields)."""
        return cls(record.topic, record.partition, record.offset, record.key, record.value,
                   int(record.timestamp), redact(error))

    def to_json(self) -> bytes:
        """The dead-letter value (see the module docstring)."""
        raw = self.value or b""
        try:
            text: str | None = raw.decode()
        except UnicodeDecodeError:
            text = None
        return json.dumps({
            "error": self.error, "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "original": text, "original_b64": base64.b64encode(raw).decode(),
            "timestamp_ms": self.timestamp_ms, "dead_lettered_at_ms": int(time.time() * 1000),
        }).encode()


def parse_dead_letter(value: bytes) -> dict[str, Any]:
    """Decode a dead-letter value; ``original_bytes`` holds the exact original bytes."""
    out: dict[str, Any] = json.loads(value)
    out["original_bytes"] = base64.b64decode(out["original_b64"])
    return out


class DeadLetterWriter:
    """Sends dead letters through a shared producer; the loop calls :meth:`flush` before committing.

    Args:
        producer: a ``KafkaProducer``.
    """

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self.count = 0

    def send(self, letter: DeadLetter) -> None:
        """Queue one dead letter and log it (topic, partition, offset, reason)."""
        logger.warning("dead-letter %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.error)
        self._producer.send(dlq_topic(letter.topic), key=letter.key, value=letter.to_json())
        self.count += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every queued dead letter is acknowledged by the broker."""
        self._producer.flush(timeout=timeout_s)


_VALUE = re.compile(r" = ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^:;]+?):")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T[0-9:.]+(?:[+-]\d{2}:\d{2}|Z)?")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


def reason_kind(error: str) -> str:
    """A dead-letter reason without its values, so that letters of one cause count together.

    ``field 'ts' = '1995-01-01T00:00:00Z': timestamp 1995-01-01T00:00:00+00:00 is outside ...`` becomes
    ``field 'ts': timestamp <time> is outside ...``.
    """
    out = _VALUE.sub(":", error)
    out = _TIME.sub("<time>", out)
    return _NUMBER.sub("<n>", out)


# reason classes: a short, bounded label for a dead-letter reason (a metric label; first match wins)
_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("empty", re.compile(r"^empty message value")),
    ("bad_json", re.compile(r"^bad JSON|^value is not a JSON object")),
    ("missing_field", re.compile(r"^missing field")),
    ("bad_time", re.compile(r"timestamp|datetime|timezone")),
    ("unknown_item", re.compile(r"^unknown item")),
    ("retry_buffer_full", re.compile(r"^retry buffer full")),
    ("bad_field", re.compile(r"^field '")),
)
REASON_CLASSES = (*(name for name, _ in _CLASSES), "other")


def reason_class(error: str) -> str:
    """A dead-letter reason as one of :data:`REASON_CLASSES` (``bad_json``, ``missing_field``, ...).

    The class of a reason that lists several problems is that of its first one; the offending values
    are stripped first (:func:`reason_kind`), so a title that says "timestamp" is not a time problem.
    """
    first = reason_kind(error.split("; ", 1)[0])
    for name, pattern in _CLASSES:
        if pattern.search(first):
            return name
    return "other"


def top_reasons(cfg: Any, topic: str, *, n: int = 3, max_records: int = 5000,
                timeout_s: float = 5.0) -> list[tuple[str, int]]:
    """The ``n`` most common dead-letter reasons of ``topic`` (read from ``<topic>.dlq``, from the start).

    Args:
        cfg: the configuration (broker).
        topic: the input topic.
        n: how many reasons.
        max_records: read at most this many dead letters.
        timeout_s: stop reading after this long.

    Returns:
        ``[(reason, count), ...]`` most common first (counts over the letters read).
    """
    from streaming.kafka_io import make_consumer

    consumer = make_consumer(cfg, [dlq_topic(topic)], group=None, client_id="mmads-dlq-reader")
    counts: Counter[str] = Counter()
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < max_records and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            for recs in batch.values():
                for r in recs:
                    try:
                        counts[reason_kind(str(json.loads(r.value)["error"]))] += 1
                    except (ValueError, KeyError, TypeError):
                        counts["unreadable dead letter"] += 1
                    seen += 1
            if not batch and seen:
                break
    finally:
        consumer.close()
    return counts.most_common(n)
