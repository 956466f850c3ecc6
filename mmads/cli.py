"""The ``mmads`` command line: one verb per capability, each in ``mmads/commands/``.

Handlers import their parts lazily so ``mmads --help`` is instant. Every :class:`MmadsError` becomes a
one-line message (plus the problem list for datasets) and exit code 1; never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from infra.errors import DatasetError, MmadsError
from infra.redact import redact_logs

logger = logging.getLogger("mmads")


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_logs()
    for noisy in ("kafka", "urllib3", "httpx", "feast", "pymilvus", "filelock", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    logging.getLogger("mmads").setLevel(min(level, logging.INFO))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    from mmads.commands import bench, data, pipeline, stack

    parser = argparse.ArgumentParser(
        prog="mmads",
        description="Multimodal item representations (SCL, SimTier, MAKE) in ID-based CTR ranking.",
    )
    parser.add_argument("--config", help="YAML config file (default: $MMADS_CONFIG or the shipped default)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (stack, data, pipeline, bench):
        module.register(sub)
    _register_optional(sub)
    return parser


def _register_optional(sub: argparse._SubParsersAction) -> None:
    """Register the verbs of parts that are installed (each module has ``register``)."""
    import importlib

    for name in ("encoders", "stream", "features", "train", "serve"):
        try:
            module = importlib.import_module(f"mmads.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("mmads.commands"):
                continue
            raise
        module.register(sub)


_SILENCED = (
    "is deprecated",
    "On demand feature view is an experimental feature",
    "shadows an attribute in parent",
    "fetch_arrow_table",
)


def _quiet_warnings() -> None:
    """Silence library warnings that say nothing to an mmads user.

    They are deprecations inside kafka-python and duckdb, Feast's 'experimental' notice for on-demand
    views and a pydantic shadowing notice in Feast's Milvus store. Feast resets warning filters when it
    is imported, so the filter sits in ``showwarning`` rather than in the filter list.
    """
    shown = warnings.showwarning

    def showwarning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        text = str(message)
        if issubclass(category, DeprecationWarning) or any(s in text for s in _SILENCED):
            return
        shown(message, category, *args, **kwargs)  # type: ignore[arg-type]

    warnings.showwarning = showwarning  # type: ignore[assignment]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmads`` console script."""
    _quiet_warnings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except MmadsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        cause = exc if isinstance(exc, DatasetError) else getattr(exc, "cause", None)
        for problem in getattr(cause, "problems", []):
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
