"""``mmads features build-training-set``: a point-in-time training set from a dataset's files."""

from __future__ import annotations

import argparse
from pathlib import Path

from infra.errors import ConfigError
from mmads.commands.common import config_of


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``features`` verbs."""
    p = sub.add_parser("features", help="feature-store tasks")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    b = verbs.add_parser(
        "build-training-set",
        help="encode items, run the behavior-history step in batch into the offline store, then "
             "build one row per impression by Feast historical retrieval",
        epilog="example:\n  mmads features build-training-set --data runs/demo/data --out runs/ts\n"
               "  mmads features build-training-set --data runs/demo/data --out runs/ts-spark --offline-store spark",
    )
    b.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset directory")
    b.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="directory to write training_set.parquet into (created)")
    b.add_argument("--model", type=Path, help="SCL model directory (default: the frozen pretrained encoder)")
    b.add_argument("--chunk-rows", type=int, default=50_000, help="impressions per retrieval chunk (duckdb)")
    b.add_argument("--offline-store", choices=("duckdb", "spark"),
                   help="Feast offline store for the point-in-time join (default: feast.offline_store of the "
                        "config); spark writes DIR/training_set.parquet as a directory of part files")
    b.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    from encoders import ItemEncoder, pretrained_encoder
    from feature_repo.schema import item_vector_table
    from feature_repo.store import apply_repo
    from infra.dataset import load_dataset
    from infra.side_features import resolve_side_features, with_side_features
    from mmads.steps.modeling import TRAINING_SET as TRAINING_SET_FILE
    from training.training_set import build_training_set, materialize_from_dataset, materialize_side_features

    if args.out.suffix == ".parquet" or args.out.is_file():
        raise ConfigError(f"--out is a directory (the training set goes to DIR/{TRAINING_SET_FILE}), got {args.out}")
    cfg = config_of(args)
    if args.offline_store:
        cfg = cfg.with_overrides(feast={"offline_store": args.offline_store})
    ds = load_dataset(args.data, window=cfg.data.plausible_time_window)
    cfg = with_side_features(cfg, resolve_side_features(cfg, ds))
    encoder = ItemEncoder.load(args.model) if args.model else pretrained_encoder(cfg, use_images=ds.has_images)
    vectors = encoder.encode_items(ds.items, image_root=ds.root)
    item_vectors = item_vector_table(ds.items, vectors)
    store = apply_repo(cfg)
    materialize_from_dataset(cfg, store, ds.behaviors, ds.items, item_vectors, progress=True)
    materialize_side_features(cfg, store, ds.items, ds.users)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = build_training_set(cfg, store, ds.impressions, args.out / TRAINING_SET_FILE,
                                 chunk_rows=args.chunk_rows)
    kind = "directory of Parquet parts" if summary.path.is_dir() else "file"
    print(f"wrote {summary.path} ({kind}, {cfg.feast.offline_store} offline store): {summary.rows} rows in "
          f"{summary.seconds:.1f}s ({summary.rows_per_s:.0f} rows/s); {summary.rows_without_history} rows without "
          "history")
    return 0
