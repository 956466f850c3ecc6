"""``mmads run`` and ``mmads demo``: the main job, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmads.commands.common import config_of

EXAMPLES = {
    "run": "mmads run --data runs/demo/data --out runs/r1\n  mmads run --data runs/demo/data --out runs/r1 "
           "--from-stage train",
    "demo": "mmads demo --out runs/demo\n  mmads demo --out runs/demo-s1 --seed 1 --scale 0.5",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` and ``demo`` verbs."""
    from mmads.datagen.regimes import REGIMES
    from mmads.pipeline import stage_names

    for name, helptext in (
        ("run", "run the whole platform on a dataset directory and write RUN_DIR/report.json"),
        ("demo", "generate the synthetic marketplace into RUN_DIR/data, then run"),
    ):
        p = sub.add_parser(name, help=helptext, epilog=f"example:\n  {EXAMPLES[name]}")
        if name == "run":
            p.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset directory (import format)")
        else:
            p.add_argument("--seed", type=int, default=0,
                           help="data seed; existing RUN_DIR/data made with another seed or size is regenerated")
            p.add_argument("--scale", type=float, default=1.0, help="data size multiplier")
            p.add_argument("--no-images", action="store_true", help="generate a text-only dataset")
            p.add_argument("--regime", choices=REGIMES, default="default",
                           help="the generated world: default (young marketplace) or production "
                                "(strong ID signal, docs/regimes.md)")
        p.add_argument("--out", required=True, type=Path, metavar="RUN_DIR", help="run directory")
        p.add_argument("--from-stage", choices=stage_names(), help="rerun from this stage on")
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


def demo_data(data: Path, *, seed: int, scale: float, images: bool, regime: str = "default") -> str:
    """Make sure ``data`` holds the synthetic marketplace of these settings; generate it when not.

    Data generated with another seed, scale, image setting or regime (or with none recorded) is regenerated,
    so ``demo --seed S`` never runs on the data of another seed.

    Returns:
        A one-line account: skipped, wrote, or regenerated.
    """
    from mmads.datagen import generate_dataset, generation_params

    wanted = {"seed": seed, "scale": scale, "images": images, "regime": regime}
    have = generation_params(data)
    if have is not None and all(have.get(k) == v for k, v in wanted.items()):
        return f"skipped ({data} holds the data of seed {seed}, scale {scale})"
    before = ""
    if (data / "items.parquet").is_file():
        before = "regenerated: it held " + (
            "data of unrecorded settings" if have is None else ", ".join(f"{k} {have.get(k)}" for k in wanted)) + "; "
    summary = generate_dataset(data, seed=seed, scale=scale, images=images, regime=regime)
    return (f"{before}wrote {data}: seed {seed}, {summary.items} items, {summary.users} users, "
            f"{summary.impressions} impressions ({summary.seconds:.0f}s)")


def _demo(args: argparse.Namespace) -> int:
    from mmads.pipeline import removed_on_failure, run_pipeline

    cfg = config_of(args)
    if args.profile:
        cfg = cfg.with_overrides(profile=args.profile)
    data = args.out / "data"
    with removed_on_failure(args.out):
        print("[generate] " + demo_data(data, seed=args.seed, scale=args.scale, images=not args.no_images,
                                             regime=args.regime))
    run_pipeline(cfg, data, args.out, from_stage=args.from_stage, keep_running=args.keep_running)
    return 0
