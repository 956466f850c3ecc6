"""``mmads run`` and ``mmads demo``: the main job, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmads.commands.common import config_of


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` and ``demo`` verbs."""
    from mmads.datagen.regimes import REGIMES
    from mmads.pipeline import STAGE_NAMES

    for name, helptext in (
        ("run", "run the whole platform on a dataset directory and write RUN_DIR/report.json"),
        ("demo", "generate the synthetic marketplace into RUN_DIR/data, then run"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "run":
            p.add_argument("--data", required=True, type=Path, help="dataset directory (import format)")
        else:
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--scale", type=float, default=1.0)
            p.add_argument("--no-images", action="store_true", help="generate a text-only dataset")
            p.add_argument("--regime", choices=REGIMES, default="default",
                           help="the generated world: default (young marketplace) or production "
                                "(strong ID signal, docs/regimes.md)")
        p.add_argument("--out", required=True, type=Path, help="run directory")
        p.add_argument("--from-stage", choices=STAGE_NAMES, help="rerun from this stage on")
        p.add_argument("--keep-running", action="store_true", help="leave the stack and service up")
        p.add_argument("--profile", choices=("embedded", "cluster"), help="override the config profile")
        p.set_defaults(handler=_run if name == "run" else _demo)


def _run(args: argparse.Namespace) -> int:
    from mmads.pipeline import run_pipeline

    cfg = config_of(args)
    if args.profile:
        cfg = cfg.with_overrides(profile=args.profile)
    run_pipeline(cfg, args.data, args.out, from_stage=args.from_stage, keep_running=args.keep_running)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mmads.datagen import generate_dataset
    from mmads.pipeline import run_pipeline

    cfg = config_of(args)
    if args.profile:
        cfg = cfg.with_overrides(profile=args.profile)
    data = args.out / "data"
    if not (data / "items.parquet").is_file():
        summary = generate_dataset(data, seed=args.seed, scale=args.scale, images=not args.no_images,
                                   regime=args.regime)
        print(f"[generate] wrote {data}: {summary.items} items, {summary.users} users, "
              f"{summary.impressions} impressions ({summary.seconds:.0f}s)")
    else:
        print(f"[generate] skipped ({data} exists)")
    run_pipeline(cfg, data, args.out, from_stage=args.from_stage, keep_running=args.keep_running)
    return 0
