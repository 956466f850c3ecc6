"""``mmads serve``: the ranking HTTP service over a trained run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from infra.errors import ConfigError
from mmads.commands.common import config_of


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` verb."""
    p = sub.add_parser("serve", help="serve /rank, /recommend, /similar, /healthz, /metrics for a run",
                       epilog="example:\n  mmads serve --run runs/demo --workers 2")
    p.add_argument("--run", required=True, type=Path,
                   help="trained run directory (RUN_DIR/ctr/models/...); its recorded RUN_DIR/config.yaml "
                        "(state dir, ports, stores) is used unless --config or $MMADS_CONFIG is given")
    p.add_argument("--host", help="bind address (default: config serving.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: config serving.port, 8700)")
    p.add_argument("--model", help="model under RUN_DIR/ctr/models (default: RUN_DIR/serving.json, else simtier_make)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on the one port; about one per core")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from serving.server import serve

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    serve(args.run, config_of(args, args.run), args.host, args.port, model=args.model, workers=args.workers)
    return 0
