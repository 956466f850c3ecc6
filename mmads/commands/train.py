"""``mmads train``: the CTR ablation (id_only, simtier, make, make_ft, simtier_make, lightgbm).

``--nproc N`` trains the torch models on N local data-parallel processes; under ``torchrun`` every
rank runs this command, rank 0 alone encodes the items, builds a missing training set and writes
the run directory, and every rank joins the training (``training.distributed``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from infra.errors import ConfigError
from mmads.commands.common import config_of
from training.models.registry import MODEL_NAMES

if TYPE_CHECKING:
    import pandas as pd

    from infra.config import MmadsConfig


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` verb."""
    p = sub.add_parser("train", help="train and evaluate the CTR models; writes report.json/report.md and plots",
                       epilog="example:\n  mmads train --data runs/demo/data "
                              "--training-set runs/demo/training_set.parquet \\\n"
                              "      --model runs/demo/scl/models/hard --seeds 3 --out runs/seeds3\n"
                              "data-parallel (2 local processes; or N per node under torchrun):\n"
                              "  mmads train --data D --training-set T --out R --nproc 2\n"
                              "  torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint HOST:29400 -m mmads train "
                              "--data D --training-set T --out R",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="dataset directory")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--training-set", type=Path,
                   help="an existing training-set parquet (default: build one into RUN_DIR from --data)")
    p.add_argument("--model", type=Path, help="SCL model directory for item vectors (default: frozen encoder)")
    p.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), help="which models to train")
    p.add_argument("--seeds", type=int, help="seeds to average over (default: config model.ctr.seeds)")
    p.add_argument("--nproc", type=int,
                   help="processes training the torch models data-parallel, each streaming its shard of the "
                        "training set (default: config model.ctr.nproc; under torchrun its WORLD_SIZE)")
    p.add_argument("--holdout", choices=("test", "validation"), default="test",
                   help="what the models are scored on: the test period after the cut (default), or the "
                        "validation slice at the end of the training period (fitted on the rows before it; "
                        "for tuning and for designing a data regime without looking at the test period)")
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    import json

    from mmads.commands.common import format_table
    from mmads.report import CTR_HEADERS, ctr_rows
    from training.distributed import join_group, rank_zero, share_from_rank0, under_torchrun
    from training.experiment import train_and_evaluate

    if args.nproc is not None and args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {args.nproc}")
    if under_torchrun():
        join_group()
        cfg, item_vectors, train_set, cut = share_from_rank0(lambda: _prepare(args))
    else:
        cfg, item_vectors, train_set, cut = _prepare(args)
    section = train_and_evaluate(train_set, item_vectors, cfg, args.out, models=args.models, seeds=args.seeds,
                                 cut=cut, holdout=args.holdout, nproc=args.nproc)
    if not rank_zero():
        return 0
    (args.out / "report.json").write_text(json.dumps({"ctr": section}, indent=2, default=str))
    print(format_table(CTR_HEADERS, ctr_rows(section)))
    print(f"wrote {args.out / 'report.json'} and {args.out / 'ctr_report.md'}")
    return 0


def _prepare(args: argparse.Namespace) -> tuple[MmadsConfig, pd.DataFrame, Path, pd.Timestamp]:
    """The config, the item vectors, the training set (built into RUN_DIR when not given) and the cut."""
    from encoders import ItemEncoder, pretrained_encoder
    from feature_repo.schema import item_vector_table
    from feature_repo.store import apply_repo
    from infra.config import run_config_file, save_config
    from infra.dataset import dataset_cut, load_dataset
    from infra.side_features import resolve_side_features, with_side_features
    from mmads.steps.modeling import TRAINING_SET as TRAINING_SET_FILE
    from training.training_set import build_training_set, materialize_from_dataset, materialize_side_features

    cfg = config_of(args).with_overrides(state_dir=(args.out / "state").resolve())
    save_config(cfg, run_config_file(args.out))  # so `serve --run OUT` reopens this state dir
    ds = load_dataset(args.data, window=cfg.data.plausible_time_window)
    cfg = with_side_features(cfg, resolve_side_features(cfg, ds))
    encoder = ItemEncoder.load(args.model) if args.model else pretrained_encoder(cfg, use_images=ds.has_images)
    vectors = encoder.encode_items(ds.items, image_root=ds.root)
    item_vectors = item_vector_table(ds.items, vectors)
    train_set = args.training_set
    if train_set is None:
        store = apply_repo(cfg)
        materialize_from_dataset(cfg, store, ds.behaviors, ds.items, item_vectors[["item_id", "emb"]], progress=True)
        materialize_side_features(cfg, store, ds.items, ds.users)
        train_set = args.out / TRAINING_SET_FILE
        build_training_set(cfg, store, ds.impressions, train_set)
    return cfg, item_vectors, train_set, dataset_cut(ds, cfg)
