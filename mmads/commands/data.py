"""``mmads data generate | validate | import``: the synthetic marketplace, the format checks, imports."""

from __future__ import annotations

import argparse
from pathlib import Path

from infra.contract import TimeWindow
from infra.dataset import check_dataset
from infra.errors import DatasetError
from mmads.datagen.regimes import REGIMES


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` verbs."""
    p = sub.add_parser("data", help="generate or validate a dataset directory")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    gen = verbs.add_parser("generate", help="write a synthetic marketplace in the import format",
                           epilog="example:\n  mmads data generate --out runs/data --seed 1 --scale 0.5")
    gen.add_argument("--out", required=True, type=Path, metavar="DIR", help="output dataset directory (new or empty)")
    gen.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same tables")
    gen.add_argument("--scale", type=float, default=1.0, help="size multiplier (10, 100 for benchmarks)")
    gen.add_argument("--image-size", type=int, default=64, help="PNG side in pixels")
    gen.add_argument("--no-images", action="store_true", help="text-only dataset")
    gen.add_argument("--click-functional-weight", type=float, default=None, metavar="W",
                     help="weight of the functional facets (material, style, use) in the similarity "
                          "that drives ad clicks; appearance facets weigh 1 (default 0.2; 1 = clicks "
                          "follow the plain latent cosine, the geometry SCL is trained to recover)")
    gen.add_argument("--regime", choices=sorted(REGIMES), default="default",
                     help="the world's sizes and ID-level effects: default (a young marketplace, ~21 "
                          "impressions per item) or production (~300 training impressions per item, "
                          "long-tailed popularity, a user-item taste only IDs can learn); see docs/regimes.md")
    gen.add_argument("--force", action="store_true",
                     help="write into a non-empty --out, replacing the dataset files an earlier generation wrote")
    gen.set_defaults(handler=_generate)
    val = verbs.add_parser("validate", help="check a dataset directory; exit 1 listing every problem",
                           epilog="example:\n  mmads data validate --data runs/demo/data")
    val.add_argument("--data", type=Path, metavar="DIR", help="dataset directory")
    val.add_argument("dir", type=Path, nargs="?", help="the dataset directory, as a positional (same as --data)")
    val.add_argument("--no-decode", action="store_true", help="check image files exist but do not decode")
    val.set_defaults(handler=_validate)
    imp = verbs.add_parser("import", help="build a dataset directory from CSV, JSON Lines or Parquet files, "
                                          "then validate it (docs/data.md, Import)",
                           epilog="example:\n  mmads data import --mapping tests/data/shop_log/mapping.yaml "
                                  "--out runs/shop-data")
    imp.add_argument("--out", required=True, type=Path, metavar="DIR", help="the dataset directory to write")
    imp.add_argument("--mapping", type=Path, help="YAML mapping: per contract file, the source file and columns")
    imp.add_argument("--map", action="append", default=None, metavar="FILE.COLUMN=SOURCE",
                     help="a mapping entry, e.g. impressions.ts=unix_time or items.file=products.csv "
                          "(repeatable; overrides the YAML)")
    imp.add_argument("--no-decode", action="store_true", help="validate: check image files exist but do not decode")
    imp.set_defaults(handler=_import)


def _generate(args: argparse.Namespace) -> int:
    from mmads.datagen import generate_dataset
    from mmads.datagen.regimes import get_regime

    regime = get_regime(args.regime)
    click = None if args.click_functional_weight is None else regime.click_model(
        functional_weight=args.click_functional_weight)
    refuse_non_empty(args.out, force=args.force)
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


def refuse_non_empty(out: Path, *, force: bool) -> None:
    """Refuse to generate into a directory that holds anything, unless ``force``.

    Raises:
        DatasetError: ``out`` is a file, or a non-empty directory and ``force`` is False.
    """
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} is a file, not a directory")
    if not force and out.is_dir() and any(out.iterdir()):
        raise DatasetError(f"--out {out} is not empty; pass --force to replace the dataset files in it "
                           "(other files are left alone)")


def _import(args: argparse.Namespace) -> int:
    from mmads.commands.common import config_of
    from mmads.importer import import_dataset, load_mapping

    window = config_of(args).data.plausible_time_window
    mapping = load_mapping(args.mapping, args.map or [], base_dir=Path.cwd())
    summary = import_dataset(mapping, args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{n} {t}" for t, n in summary.rows.items()))
    validate_and_print(args.out, decode_images=not args.no_decode, window=window)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from mmads.commands.common import config_of

    if (args.data is None) == (args.dir is None):
        raise DatasetError("name the dataset directory once: --data DIR (or the positional DIR)")
    window = config_of(args).data.plausible_time_window
    validate_and_print(args.data or args.dir, decode_images=not args.no_decode, window=window)
    return 0


def validate_and_print(root: Path, *, decode_images: bool, window: TimeWindow | None) -> None:
    """Run ``validate`` on a dataset directory and print what it found.

    Raises:
        DatasetError: the dataset is invalid (every problem listed).
    """
    from infra.side_features import discover_side_features

    res = check_dataset(root, decode_images=decode_images, window=window)
    if res.problems:
        raise DatasetError(f"dataset {root} is invalid ({len(res.problems)} problems)", res.problems)
    ds = res.dataset
    if ds is None:  # unreachable: no problems means a dataset
        raise DatasetError(f"dataset {root} could not be loaded")
    users = ds.impressions["user_id"].nunique()
    print(
        f"dataset {root} is valid: {len(ds.items)} items, {users} users, {len(ds.behaviors)} behaviors, "
        f"{len(ds.impressions)} impressions, {len(ds.queries)} queries, images: {ds.has_images}"
    )
    t = ds.impressions["ts"]
    print(f"  impressions from {t.min().isoformat()} to {t.max().isoformat()}")
    for note in res.notes:
        print(f"  note: {note}")
    side = discover_side_features(ds)
    print("side features (used unless config data.side_features says otherwise): "
          + (", ".join(f"{s.name} ({s.kind}, {s.source})" for s in side) or "none"))
