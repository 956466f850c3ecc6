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
from infra.logs import LogFormat, adopt_pymilvus_logs, format_from_env, make_formatter, route_warnings
from infra.redact import redact_logs

logger = logging.getLogger("mmads")

# the loggers of mmads' own packages: -v/-q set their level; third-party loggers stay at WARNING or above
OWN_LOGGERS = ("mmads", "infra", "encoders", "feature_repo", "streaming", "training", "serving", "benchmarks")
NOISY_LOGGERS = ("kafka", "urllib3", "httpx", "feast", "pymilvus", "filelock", "matplotlib", "PIL", "faiss")


def _level(verbose: int, quiet: int) -> int:
    if quiet:
        return logging.ERROR
    return logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING


def _setup_logging(verbose: int, quiet: int = 0, fmt: LogFormat = "text", job: str = "mmads") -> None:
    """Console logging at the level ``-v``/``-q`` ask for (WARNING by default), in ``logging.format``.

    The console handler carries the level, so a run's log file (``RUN_DIR/logs/run.log``, INFO) still
    gets every INFO line while the console shows only what was asked for. ``json`` writes one object
    per line (:mod:`infra.logs`) with ``job`` naming the verb (``items`` ... for ``stream``, ``serving``)
    and shows INFO unless ``-q`` is given.
    """
    level = _level(verbose, quiet)
    if fmt == "json" and not verbose and not quiet:
        level = logging.INFO  # a log collector wants a service's INFO lines; -q still trims them
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(fmt, job, "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)  # the console shows what -v/-q ask for
    logging.basicConfig(level=min(level, logging.INFO), handlers=[handler], force=True)
    redact_logs()
    for name in OWN_LOGGERS:  # INFO and above always reach the handlers: a run's log file keeps them
        logging.getLogger(name).setLevel(min(level, logging.INFO))
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if fmt == "json":  # warnings as JSON lines too (library deprecations and notices dropped)
        route_warnings()
        if job in ("items", "behaviors", "impressions", "serving", "run", "demo"):  # verbs that use Milvus
            adopt_pymilvus_logs()


def _log_settings(args: argparse.Namespace) -> tuple[LogFormat, str]:
    """``logging.format`` of the config the verb will read, and the ``job`` its JSON lines carry.

    A config that does not load yet leaves the format to ``MMADS_LOGGING__FORMAT`` (else text); the
    verb itself then reports the config error.
    """
    from mmads.commands.common import config_of

    command = str(getattr(args, "command", "mmads"))
    job = str(getattr(args, "job", None) or {"serve": "serving"}.get(command, command))
    try:
        fmt: LogFormat = config_of(args, getattr(args, "run", None)).logging.format
    except MmadsError:
        fmt = format_from_env()
    return fmt, job


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless it is None/False or the help already says it); keeps epilogs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS or "default" in text.lower()
                or not action.option_strings or isinstance(action, argparse._HelpAction | argparse._VersionAction)):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--config``, ``-v`` and ``-q``: accepted before the verb (``top``) and after it.

    After the verb they default to SUPPRESS, so a value given before the verb is not reset.
    """
    dflt: dict[str, object] = {} if top else {"default": argparse.SUPPRESS}
    group = parser.add_argument_group("global options")
    group.add_argument("--config", metavar="FILE",
                       help="YAML config file (default: $MMADS_CONFIG, else RUN_DIR/config.yaml for --run, "
                            "else the shipped infra/default_config.yaml)", **dflt)  # type: ignore[arg-type]
    group.add_argument("-v", "--verbose", action="count", help="more logging (-v info, -vv debug)",
                       **({"default": 0} if top else dflt))  # type: ignore[arg-type]
    group.add_argument("-q", "--quiet", action="count", help="errors only",
                       **({"default": 0} if top else dflt))  # type: ignore[arg-type]


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser`` (verbs and their sub-verbs), depth first."""
    out: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                out += [child, *_subparsers(child)]
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmads")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    from mmads.commands import bench, data, pipeline, stack

    parser = argparse.ArgumentParser(
        prog="mmads", formatter_class=HelpFormatter,
        description="Multimodal item representations (SCL, SimTier, MAKE) in ID-based CTR ranking.",
        epilog="example:\n  mmads demo --out runs/demo\n  mmads serve --run runs/demo\n\n"
               "global options go before or after the verb; every verb has --help",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (stack, data, pipeline, bench):
        module.register(sub)
    _register_optional(sub)
    for child in _subparsers(parser):
        child.formatter_class = HelpFormatter
        _add_global_options(child, top=False)
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
    _setup_logging(args.verbose, args.quiet, *_log_settings(args))
    try:
        return int(args.handler(args) or 0)
    except MmadsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        cause = exc if isinstance(exc, DatasetError) else getattr(exc, "cause", None)
        for problem in getattr(cause, "problems", []):
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except OSError as exc:  # a path the user named: missing, not writable, a full disk
        logger.debug("traceback", exc_info=True)
        print(f"error: {exc.strerror or exc}: {exc.filename!r}" if exc.filename else f"error: {exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
