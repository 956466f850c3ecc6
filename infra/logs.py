"""Log line formats shared by the CLI, the streaming job processes and the ranking service.

``logging.format: text`` (the default) keeps the familiar ``time pid level logger: message`` lines;
``json`` writes one JSON object per line for a log shipper::

    {"time": "2026-12-06T06:40:01.123Z", "level": "INFO", "job": "items", "pid": 4242,
     "logger": "streaming.loop", "message": "assigned partitions [...]", "topic": "items"}

Every ``extra={...}`` field of the record is carried as a key of its own; an exception goes under
``exc_info`` as text. Third-party loggers that chatter at INFO (faiss' loader, kafka-python, Feast)
are kept at WARNING, and Python warnings are routed through logging (``py.warnings``), with
deprecation notices from libraries dropped, so a JSON stream holds nothing but JSON lines (the
exception: output a native library writes to the process's stderr itself, outside Python logging).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable
from typing import Any, Literal

from infra.redact import redact_logs

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
# third-party loggers that log routine chatter at INFO (faiss: "Loading faiss with AVX2 support")
NOISY_LOGGERS = ("kafka", "urllib3", "httpx", "feast", "pymilvus", "filelock", "matplotlib", "PIL", "faiss",
                 "numexpr")
# attributes every LogRecord has: anything else on a record came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "job"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ms), level, job, pid, logger, message and the extras.

    Args:
        job: what this process is (``items``, ``behaviors``, ``impressions``, ``serving``, a CLI verb);
            a record's own ``job`` extra wins.
    """

    def __init__(self, job: str) -> None:
        super().__init__()
        self.job = job

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (values JSON cannot hold are written as text)."""
        ms = int(record.msecs)
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{ms:03d}Z",
            "level": record.levelname,
            "job": getattr(record, "job", self.job),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:  # the redacting filter leaves the (masked) traceback text here
            doc["exc_info"] = record.exc_text
        return json.dumps(doc, default=str, ensure_ascii=False)


def make_formatter(fmt: LogFormat, job: str, text_format: str = TEXT_FORMAT) -> logging.Formatter:
    """The formatter of ``fmt``: :class:`JsonFormatter` for ``json``, else ``text_format``."""
    return JsonFormatter(job) if fmt == "json" else logging.Formatter(text_format)


# library notices that say nothing to an mmads operator (Feast's on-demand-view "experimental" notice,
# a pydantic shadowing notice in Feast's Milvus store, duckdb's renamed fetch call)
LIBRARY_NOTICES = (
    "is deprecated",
    "On demand feature view is an experimental feature",
    "shadows an attribute in parent",
    "fetch_arrow_table",
)


def route_warnings() -> None:
    """Python warnings go to the ``py.warnings`` logger, less library deprecations and :data:`LIBRARY_NOTICES`.

    Feast resets the warning filters when it is imported, so the check sits in ``showwarning``
    (which ``captureWarnings`` installs) rather than in the filter list.
    """
    logging.captureWarnings(True)
    shown = warnings.showwarning

    def showwarning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        text = str(message)
        if issubclass(category, DeprecationWarning | PendingDeprecationWarning) or any(
                s in text for s in LIBRARY_NOTICES):
            return
        shown(message, category, *args, **kwargs)

    warnings.showwarning = showwarning


def setup_logging(fmt: LogFormat, job: str, level: int = logging.INFO, *,
                  noisy: Iterable[str] = NOISY_LOGGERS, text_format: str = TEXT_FORMAT) -> None:
    """Configure the root logger for a process: one stderr handler in ``fmt``, secrets masked.

    Args:
        fmt: ``text`` or ``json``.
        job: the ``job`` field of JSON lines.
        level: the root level.
        noisy: third-party loggers held at WARNING (or ``level`` when that is higher).
        text_format: the line format of ``text``.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt, job, text_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    redact_logs()
    for name in noisy:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    route_warnings()


def adopt_pymilvus_logs() -> None:
    """Route pymilvus' loggers through the root handler (JSON or text), at WARNING and above.

    pymilvus installs its own stderr handlers (propagation off) when it is first imported, which would
    write plain-text lines into a JSON stream; importing it here first lets the handlers be removed.
    Only for processes that use Milvus anyway (the import takes about a second).
    """
    import pymilvus.settings  # noqa: F401 - its import runs the logging setup this undoes

    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
        if name != "pymilvus":
            lib.setLevel(logging.NOTSET)  # inherit the parent's level


def format_from_env(default: LogFormat = "text") -> LogFormat:
    """``MMADS_LOGGING__FORMAT`` when it names a format, else ``default`` (before any config is read)."""
    value = os.environ.get("MMADS_LOGGING__FORMAT", "").strip().lower()
    return value if value in ("text", "json") else default  # type: ignore[return-value]
