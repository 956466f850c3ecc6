"""Building blocks the job processors share.

An offline row buffer with a flush policy, and a guard that turns feature-store connection
failures into retryable :class:`StackError`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import pandas as pd

from infra.errors import StackError

T = TypeVar("T")


class FlushPolicy:
    """Decides when buffered work is due: after ``max_rows`` rows or ``max_age_s`` since the first.

    Args:
        max_rows: rows that make a flush due.
        max_age_s: age of the oldest unflushed work that makes a flush due.
    """

    def __init__(self, max_rows: int, max_age_s: float) -> None:
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.rows = 0
        self._since: float | None = None

    def touch(self, rows: int = 0) -> None:
        """Note new unflushed work (``rows`` buffered rows; 0 for e.g. offsets to commit)."""
        if self._since is None:
            self._since = time.monotonic()
        self.rows += rows

    def due(self) -> bool:
        """True when the buffered work should be flushed now."""
        if self._since is None:
            return False
        return self.rows >= self.max_rows or time.monotonic() - self._since >= self.max_age_s

    def reset(self) -> None:
        """Everything was flushed."""
        self.rows = 0
        self._since = None


class FrameBuffer:
    """Buffers DataFrames for one offline append per flush."""

    def __init__(self) -> None:
        self._frames: list[pd.DataFrame] = []

    def add(self, frame: pd.DataFrame) -> None:
        """Buffer rows."""
        if len(frame):
            self._frames.append(frame)

    def __len__(self) -> int:
        return sum(len(f) for f in self._frames)

    def take(self) -> pd.DataFrame | None:
        """All buffered rows as one frame (None when empty); the buffer keeps them until :meth:`clear`."""
        if not self._frames:
            return None
        if len(self._frames) > 1:
            self._frames = [pd.concat(self._frames, ignore_index=True)]
        return self._frames[0]

    def clear(self) -> None:
        """Forget the buffered rows (after they were written)."""
        self._frames = []


def feast_call(what: str, fn: Callable[[], T]) -> T:
    """Run a feature-store write; connection-level failures become :class:`StackError` (retried).

    Raises:
        StackError: the online store (SQLite file, Redis) could not be written.
    """
    retryable: tuple[type[BaseException], ...] = (OSError, sqlite3.OperationalError)
    try:
        import redis

        retryable += (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    except ImportError:
        pass
    try:
        return fn()
    except retryable as exc:
        raise StackError(f"feature store: {what} failed: {exc.__class__.__name__}: {exc}") from exc
