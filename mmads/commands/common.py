"""Helpers shared by the CLI verbs: loading config, printing tables."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from infra.config import CONFIG_ENV, MmadsConfig, load_config, run_config_file

logger = logging.getLogger(__name__)


def config_of(args: argparse.Namespace, run_dir: Path | None = None) -> MmadsConfig:
    """The validated config: ``--config``, else ``$MMADS_CONFIG``, else ``run_dir``'s recorded one, else the default.

    A run records the config it ran with (its state dir, ports and stores) in ``RUN_DIR/config.yaml``,
    so ``stack up --run`` and ``serve --run`` reopen the very Milvus data and Feast repo it filled. A
    config named explicitly (flag or variable) wins; ``MMADS_<SECTION>__<KEY>`` overrides apply on top
    of whichever file is read (deployments set the state dir and endpoints that way).
    """
    explicit = getattr(args, "config", None) or os.environ.get(CONFIG_ENV) or None
    if explicit is None and run_dir is not None and run_config_file(run_dir).is_file():
        logger.info("using the config recorded by the run: %s", run_config_file(run_dir))
        return load_config(run_config_file(run_dir))
    return load_config(explicit)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table for terminal output."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return str(v)
