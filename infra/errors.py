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
