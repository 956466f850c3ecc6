"""``mmads stream items | behaviors | impressions | reindex`` and ``mmads events replay``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmads.commands.common import config_of

JOBS = ("items", "behaviors", "impressions")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``stream`` and ``events`` verbs."""
    p = sub.add_parser("stream", help="run a streaming job (until SIGINT/SIGTERM) or re-index items")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="JOB")
    for job, helptext in (
        ("items", "item indexer: items topic -> SCL encoder -> Milvus + Feast item_embeddings"),
        ("behaviors", "behavior job: behaviors topic -> per-user history -> Feast user_behavior"),
        ("impressions", "impression logger: impressions topic -> offline label log"),
    ):
        j = verbs.add_parser(job, help=helptext,
                             epilog=f"example:\n  mmads stream {job} --config runs/demo/config.yaml")
        j.add_argument("--model", type=Path, help="SCL model directory (items; default: frozen encoder)")
        j.add_argument("--max-idle-s", type=float, help="stop after this long without input")
        j.set_defaults(handler=_run_job, job=job)
    r = verbs.add_parser("reindex", help="re-encode every item of a dataset after a model change",
                         epilog="example:\n  mmads stream reindex --data runs/demo/data --model runs/scl")
    r.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset directory")
    r.add_argument("--model", type=Path, help="SCL model directory (default: frozen encoder)")
    r.set_defaults(handler=_reindex)

    e = sub.add_parser("events", help="publish events to Kafka")
    ev = e.add_subparsers(dest="verb", required=True, metavar="VERB")
    rp = ev.add_parser("replay", help="publish a dataset's rows in timestamp order, keyed by entity id",
                       epilog="example:\n  mmads events replay --data runs/demo/data --topic items --rate 500")
    rp.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset directory")
    rp.add_argument("--topic", required=True, choices=JOBS, help="which table to publish")
    pace = rp.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="messages per second (default: as fast as the broker takes them)")
    pace.add_argument("--speedup", type=float, help="replay the dataset's own time gaps divided by X")
    rp.set_defaults(handler=_replay)


def _run_job(args: argparse.Namespace) -> int:
    from streaming.behavior_job import run_behaviors
    from streaming.impression_logger import run_impressions
    from streaming.item_indexer import run_items

    run = {"items": run_items, "behaviors": run_behaviors, "impressions": run_impressions}[args.job]
    stats = run(config_of(args), max_idle_s=args.max_idle_s, model_dir=args.model)
    print(stats.summary())
    return 0


def _reindex(args: argparse.Namespace) -> int:
    from streaming.reindex import run_reindex

    n = run_reindex(config_of(args), args.data, args.model)
    print(f"re-indexed {n} items")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from streaming.replay import replay

    n = replay(args.data, config_of(args), args.topic, rate=args.rate, speedup=args.speedup)
    print(f"published {n} {args.topic} events")
    return 0
