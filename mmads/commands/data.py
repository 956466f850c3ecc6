"""``mmads data generate | validate``: the synthetic marketplace and the dataset format checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from infra.dataset import validate_dataset
from infra.errors import DatasetError
from mmads.datagen.regimes import REGIMES


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` verbs."""
    p = sub.add_parser("data", help="generate or validate a dataset directory")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    gen = verbs.add_parser("generate", help="write a synthetic marketplace in the import format")
    gen.add_argument("--out", required=True, type=Path, help="output dataset directory")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--scale", type=float, default=1.0, help="size multiplier (10, 100 for benchmarks)")
    gen.add_argument("--image-size", type=int, default=64, help="PNG side in pixels")
    gen.add_argument("--no-images", action="store_true", help="text-only dataset")
    gen.add_argument("--click-functional-weight", type=float, default=None, metavar="W",
                     help="weight of the functional facets (material, style, use) in the similarity "
                          "that drives ad clicks; appearance facets weigh 1 (default 0.2; 1 = plain "
                          "cosine)")
    gen.add_argument("--regime", choices=sorted(REGIMES), default="default",
                     help="the world's sizes and ID-level effects: default (a young marketplace, ~21 "
                          "impressions per item) or production (~300 training impressions per item, "
                          "long-tailed popularity, a user-item taste only IDs can learn); see docs/regimes.md")
    gen.set_defaults(handler=_generate)
    val = verbs.add_parser("validate", help="check a dataset directory; exit 1 listing every problem")
    val.add_argument("dir", type=Path)
    val.add_argument("--no-decode", action="store_true", help="check image files exist but do not decode")
    val.set_defaults(handler=_validate)


def _generate(args: argparse.Namespace) -> int:
    from mmads.datagen import generate_dataset
    from mmads.datagen.regimes import get_regime
    from mmads.datagen.simulate import ClickModel

    regime = get_regime(args.regime)
    click = None if args.click_functional_weight is None else ClickModel(
        functional_weight=args.click_functional_weight, taste_weight=regime.taste_weight)
    summary = generate_dataset(
        args.out, seed=args.seed, scale=args.scale, image_size=args.image_size, images=not args.no_images,
        click_model=click, regime=regime.name,
    )
    print(
        f"wrote {args.out}: {summary.items} items, {summary.users} users, {summary.behaviors} behaviors, "
        f"{summary.impressions} impressions (CTR {summary.ctr:.1%}), {summary.queries} queries; "
        f"cut {summary.cut_time}; new items {summary.new_item_share:.0%} "
        f"({summary.new_item_test_impression_share:.0%} of test impressions); {summary.seconds:.0f}s"
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    problems, ds = validate_dataset(args.dir, decode_images=not args.no_decode)
    if problems:
        raise DatasetError(f"dataset {args.dir} is invalid ({len(problems)} problems)", problems)
    if ds is None:  # unreachable: no problems means a dataset
        raise DatasetError(f"dataset {args.dir} could not be loaded")
    print(
        f"dataset {args.dir} is valid: {len(ds.items)} items, {len(ds.behaviors)} behaviors, "
        f"{len(ds.impressions)} impressions, {len(ds.queries)} queries, images: {ds.has_images}"
    )
    from infra.side_features import discover_side_features

    side = discover_side_features(ds)
    print("side features (used unless config data.side_features says otherwise): "
          + (", ".join(f"{s.name} ({s.kind}, {s.source})" for s in side) or "none"))
    return 0
