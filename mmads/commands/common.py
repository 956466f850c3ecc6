"""Helpers shared by the CLI verbs: loading config, printing tables."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from infra.config import MmadsConfig, load_config


def config_of(args: argparse.Namespace) -> MmadsConfig:
    """The validated config named by ``--config`` (or the default/env)."""
    return load_config(getattr(args, "config", None))


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
