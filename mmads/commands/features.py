"""``mmads features build-training-set``: a point-in-time training set from a dataset's files."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mmads.commands.common import config_of


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``features`` verbs."""
    p = sub.add_parser("features", help="feature-store tasks")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    b = verbs.add_parser(
        "build-training-set",
        help="encode items, run the behavior-history step in batch into the offline store, then "
             "build one row per impression by Feast historical retrieval",
    )
    b.add_argument("--data", required=True, type=Path, help="dataset directory")
    b.add_argument("--out", required=True, type=Path, help="training-set parquet file to write")
    b.add_argument("--model", type=Path, help="SCL model directory (default: the frozen pretrained encoder)")
    b.add_argument("--chunk-rows", type=int, default=50_000, help="impressions per retrieval chunk")
    b.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    from encoders import ItemEncoder, pretrained_encoder
    from feature_repo.store import apply_repo
    from infra.dataset import load_dataset
    from infra.side_features import resolve_side_features, with_side_features
    from training.training_set import build_training_set, materialize_from_dataset, materialize_side_features

    cfg = config_of(args)
    ds = load_dataset(args.data)
    cfg = with_side_features(cfg, resolve_side_features(cfg, ds))
    encoder = ItemEncoder.load(args.model) if args.model else pretrained_encoder(cfg, use_images=ds.has_images)
    vectors = encoder.encode_items(ds.items, image_root=ds.root)
    item_vectors = pd.DataFrame({"item_id": ds.items["item_id"].to_numpy(), "emb": list(vectors)})
    store = apply_repo(cfg)
    materialize_from_dataset(cfg, store, ds.behaviors, ds.items, item_vectors, progress=True)
    materialize_side_features(cfg, store, ds.items, ds.users)
    summary = build_training_set(cfg, store, ds.impressions, args.out, chunk_rows=args.chunk_rows)
    print(f"wrote {summary.path}: {summary.rows} rows in {summary.seconds:.1f}s "
          f"({summary.rows_per_s:.0f} rows/s); {summary.rows_without_history} rows without history")
    return 0
