"""The ``python -m streaming.<job>`` entry points: parse a few flags, load config, run, exit.

The ``mmads`` CLI calls the ``run_<job>`` functions directly; these entry points exist so a job can
run as its own process (scale-out, kill tests) without the CLI.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

from infra.config import MmadsConfig, load_config
from infra.errors import MmadsError
from infra.logs import adopt_pymilvus_logs, format_from_env, setup_logging

logger = logging.getLogger(__name__)


def job_main(run: Callable[[MmadsConfig, argparse.Namespace], Any], what: str, argv: list[str] | None, *,
             job: str = "stream") -> int:
    """Parse ``--config``, ``--model``, ``--max-idle-s``, ``--log-level``, ``--process-index``; run ``run(cfg, args)``.

    Logs go to stderr in ``logging.format`` (``text`` or ``json``, with ``job`` in every JSON line).
    ``--process-index i`` serves the metrics of the i-th process of a run on ``streaming.metrics_port + i``
    (port 0 stays 0: a free port).

    Returns:
        The process exit code: 0 on a clean stop, 1 on an :class:`MmadsError`.
    """
    parser = argparse.ArgumentParser(description=f"Run {what} until SIGINT/SIGTERM.")
    parser.add_argument("--config", default=None, help="YAML config file (default: $MMADS_CONFIG or shipped)")
    parser.add_argument("--model", default=None, help="encoder artifact directory (item indexer)")
    parser.add_argument("--max-idle-s", type=float, default=None, help="stop after this long without input")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--process-index", type=int, default=0,
                        help="index of this process among a run's job processes on one host (metrics port offset)")
    args = parser.parse_args(argv)
    level = logging.getLevelName(args.log_level.upper())
    adopt_pymilvus_logs()
    setup_logging(format_from_env(), job, level)  # until the config names the format
    # pymilvus logs every failed RPC with a traceback; the loop already logs each retry in one line.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    try:
        cfg = load_config(args.config)
        setup_logging(cfg.logging.format, job, level)
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
        port = cfg.streaming.metrics_port
        if port and args.process_index:
            cfg = cfg.with_overrides(streaming={"metrics_port": port + args.process_index})
        run(cfg, args)
    except MmadsError as exc:
        logger.error("%s", exc)
        return 1
    return 0
