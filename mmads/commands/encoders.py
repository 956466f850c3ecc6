"""``mmads encoders train | eval``: SCL pre-training and its evaluation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmads.commands.common import config_of


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``encoders`` verbs."""
    p = sub.add_parser("encoders", help="train or evaluate the SCL item encoders")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    tr = verbs.add_parser("train", help="SCL pre-training on the query pairs before the time cut",
                          epilog="example:\n  mmads encoders train --data runs/demo/data --out runs/scl")
    tr.add_argument("--data", required=True, type=Path, help="dataset directory")
    tr.add_argument("--out", required=True, type=Path, help="model directory to write")
    tr.add_argument("--variant", choices=("inbatch", "queue", "hard"), default="hard",
                    help="negatives: in-batch only, + MoCo queue, + hard negatives")
    tr.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    tr.set_defaults(handler=_train)
    ev = verbs.add_parser("eval", help="recall@1/10/50 and MRR on time-held-out queries, for every variant",
                          epilog="example:\n  mmads encoders eval --data runs/demo/data --model runs/scl "
                                 "--out runs/scl_eval")
    ev.add_argument("--data", required=True, type=Path, help="dataset directory")
    ev.add_argument("--model", type=Path, help="also report this model directory's recall")
    ev.add_argument("--out", type=Path, default=Path("runs/scl_eval"), help="directory for the variants and results")
    ev.set_defaults(handler=_eval)


def _train(args: argparse.Namespace) -> int:
    from encoders import ItemEncoder, train_scl
    from infra.dataset import load_dataset

    cfg = config_of(args)
    ds = load_dataset(args.data, window=cfg.data.plausible_time_window)
    out = train_scl(ds, cfg, args.out, variant=args.variant, resume=args.resume)
    enc = ItemEncoder.load(out)
    print(f"model {out}: version {enc.version}, dim {enc.dim}, images {'yes' if enc.uses_images else 'no'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from encoders import ItemEncoder, evaluate_scl
    from encoders.evaluate import format_table
    from infra.dataset import load_dataset

    cfg = config_of(args)
    ds = load_dataset(args.data, window=cfg.data.plausible_time_window)
    result = evaluate_scl(ds, cfg, args.out)
    variants = dict(result.get("variants", {}))
    if args.model:
        from encoders.evaluate import evaluate_model

        variants["model"] = evaluate_model(ItemEncoder.load(args.model), ds, cfg)
    print(format_table(variants))
    print(f"wrote {args.out / 'scl_eval.json'}")
    (args.out / "scl_eval_cli.json").write_text(json.dumps({k: v for k, v in result.items() if k != "variants"},
                                                           indent=2, default=str))
    return 0
