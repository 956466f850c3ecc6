"""``mmads bench NAME [--quick] [--json FILE]``: run a benchmark from ``benchmarks/``."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from infra.errors import MmadsError
from infra.processes import sigterm_as_exit

BENCHMARKS = ("encoders", "streaming", "features", "training", "serving", "milvus", "batch")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` verb."""
    p = sub.add_parser("bench", help="run a performance benchmark and print a table",
                       epilog="example:\n  mmads bench serving --quick --json runs/bench/serving.json")
    p.add_argument("name", choices=BENCHMARKS, help="which benchmark")
    p.add_argument("--quick", action="store_true",
                   help="small sizes: minutes, not hours (streaming: 12 min on 2 cores with native bf16, "
                        "much longer where the CPU emulates bf16)")
    p.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--bursty", action="store_true",
                   help="streaming only: replay in bursts (a log second's events at once) and measure freshness")
    p.add_argument("--behaviors-only", action="store_true",
                   help="streaming only: skip the item indexer's phases (items go to Milvus with random vectors) "
                        "and measure the behavior job alone; full mode in minutes where the CPU emulates bf16")
    p.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module(f"benchmarks.bench_{args.name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"benchmarks.bench_{args.name}":
            raise MmadsError(f"benchmark '{args.name}' is not implemented yet") from None
        raise
    for flag, on in (("--bursty", args.bursty), ("--behaviors-only", args.behaviors_only)):
        if on and args.name != "streaming":
            raise MmadsError(f"{flag} applies to the streaming benchmark, not '{args.name}'")
    if args.bursty and args.behaviors_only:
        raise MmadsError("--bursty and --behaviors-only are two different runs: pick one")
    extra = {k: True for k, on in (("bursty", args.bursty), ("behaviors_only", args.behaviors_only)) if on}
    with sigterm_as_exit():  # a killed benchmark still stops its stack and removes its folder
        results = module.run(quick=args.quick, **extra)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0
