"""Keep credentials out of logs and dead letters.

Secrets reach mmads only through environment variables (``*_env`` config keys name them). Any text
that leaves a process - a log line, a dead letter's reason - passes through :func:`redact`, which
replaces the value of every variable whose name says it is a secret (``PASSWORD``, ``TOKEN``,
``SECRET``, ``CREDENTIAL``, ``ACCESS_KEY``) with ``***``. Values shorter than 4 characters are left
alone (they would blank out ordinary words).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

SECRET_WORDS = ("PASSWORD", "PASSWD", "TOKEN", "SECRET", "CREDENTIAL", "ACCESS_KEY")
MIN_SECRET_LEN = 4
MASK = "***"


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The values of the secret-named variables in ``env`` (default ``os.environ``), longest first."""
    env = os.environ if env is None else env
    values = {v for k, v in env.items() if any(w in k.upper() for w in SECRET_WORDS) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for value in secret_values(env):
        text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter that redacts the formatted message (and the exception text) of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        if not secret_values():
            return True
        record.msg, record.args = redact(record.getMessage()), ()
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def redact_logs(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
