"""The root error class of mmads and its named subclasses.

Every error a user can cause (bad config, bad data, a stack that is not running, a bad event)
is an :class:`MmadsError`; the CLI prints its message as one line instead of a traceback.
"""

from __future__ import annotations


class MmadsError(Exception):
    """Root of every error mmads raises on purpose."""


class ConfigError(MmadsError):
    """The configuration file or an ``MMADS_*`` variable is invalid."""


class DatasetError(MmadsError):
    """A dataset directory does not follow the import format.

    Attributes:
        problems: every problem found, one line each ("file: row N: what is wrong").
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class StackError(MmadsError):
    """A part of the stack could not be started, stopped or reached."""


class StackNotRunningError(StackError):
    """A command needs the stack (broker, Milvus, Feast) but a part of it is down."""


class InvalidEventError(MmadsError):
    """A Kafka event does not match its schema; ``reason`` says why."""

    def __init__(self, reason: str, raw: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class ModelArtifactError(MmadsError):
    """A model directory is missing, incomplete or of an incompatible version."""


class FeatureError(MmadsError):
    """A feature cannot be computed from its inputs (e.g. a dimension mismatch)."""


class DeadLetterShareError(MmadsError):
    """The streaming jobs dead-lettered more than ``checks.max_dead_letter_share`` of a topic.

    Attributes:
        topic: the input topic.
        dead_lettered: how many of its messages went to ``<topic>.dlq``.
        reasons: the most common reasons with their counts, most common first.
    """

    def __init__(self, topic: str, dead_lettered: int, total: int, limit: float,
                 reasons: list[tuple[str, int]]) -> None:
        shown = "; ".join(f"{n} x {why}" for why, n in reasons) or "reasons unavailable"
        super().__init__(f"the streaming jobs dead-lettered {dead_lettered} of the {total} events of topic "
                         f"'{topic}' (more than checks.max_dead_letter_share = {limit:g}); top reasons: {shown}")
        self.topic = topic
        self.dead_lettered = dead_lettered
        self.reasons = reasons


class ParityError(MmadsError):
    """Two paths that must give the same numbers differ by more than ``checks.parity_tolerance``.

    Attributes:
        check: which parity (``offline-online``, ``serving-offline``, ``on-demand-view``).
        max_abs_diff: the largest difference found.
        worst: the worst rows (user, item, feature, both values), worst first.
    """

    def __init__(self, check: str, max_abs_diff: float, tolerance: float, worst: list[dict[str, object]]) -> None:
        shown = "; ".join(", ".join(f"{k} {v}" for k, v in w.items()) for w in worst[:5])
        super().__init__(f"{check} parity failed: max abs diff {max_abs_diff:.3g} > tolerance {tolerance:g} "
                         f"(checks.parity_tolerance); worst: {shown}")
        self.check = check
        self.max_abs_diff = max_abs_diff
        self.worst = worst


class BrokerDataLossError(MmadsError):
    """The broker lost topics: their ids changed or they are gone since they were recorded.

    Not a :class:`StackError`: nothing retries it. A streaming job that sees it stops without
    committing; ``stack up`` and ``stack status`` report it and exit non-zero.

    Attributes:
        topics: the topics that lost their data.
    """

    def __init__(self, message: str, topics: list[str] | None = None) -> None:
        super().__init__(message)
        self.topics = list(topics or [])
