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
from infra.redact import redact_logs

logger = logging.getLogger(__name__)


def job_main(run: Callable[[MmadsConfig, argparse.Namespace], Any], what: str, argv: list[str] | None) -> int:
    """Parse ``--config``, ``--model``, ``--max-idle-s``, ``--log-level``; run ``run(cfg, args)``.

    Returns:
        The process exit code: 0 on a clean stop, 1 on an :class:`MmadsError`.
    """
    parser = argparse.ArgumentParser(description=f"Run {what} until SIGINT/SIGTERM.")
    parser.add_argument("--config", default=None, help="YAML config file (default: $MMADS_CONFIG or shipped)")
    parser.add_argument("--model", default=None, help="encoder artifact directory (item indexer)")
    parser.add_argument("--max-idle-s", type=float, default=None, help="stop after this long without input")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    redact_logs()
    for noisy in ("kafka", "feast", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pymilvus logs every failed RPC with a traceback; the loop already logs each retry in one line.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    try:
        run(load_config(args.config), args)
    except MmadsError as exc:
        logger.error("%s", exc)
        return 1
    return 0
