"""Main-job stage that counts what every part holds and writes the report."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mmads.context import RunContext

logger = logging.getLogger(__name__)


def milvus_count(ctx: RunContext) -> int:
    """Rows in the item collection (distinct primary keys)."""
    from infra.milvus import milvus_client

    client = milvus_client(ctx.cfg)
    try:
        client.flush(ctx.cfg.milvus.collection)
        res = client.query(ctx.cfg.milvus.collection, filter="", output_fields=["count(*)"])
    finally:
        client.close()
    return int(res[0]["count(*)"])


def feast_counts(ctx: RunContext) -> tuple[int, int]:
    """Items with a vector and users with a history in the Feast online store (one read each)."""
    from feature_repo.store import open_store

    store = open_store(ctx.cfg)
    items = store.get_online_features(
        features=["item_embeddings:category"],
        entity_rows=[{"item_id": int(i)} for i in ctx.dataset.items["item_id"]]).to_dict()
    users = store.get_online_features(
        features=["user_behavior:last_event_ts"],
        entity_rows=[{"user_id": int(u)} for u in ctx.dataset.behaviors["user_id"].unique()]).to_dict()
    n_items = sum(v is not None for v in items["category"])
    n_users = sum(v is not None for v in users["last_event_ts"])
    return n_items, n_users


def stack_summary(ctx: RunContext) -> dict[str, Any]:
    """What the run ran against: profile, endpoints (no credentials), stores and consumers per job."""
    cfg = ctx.cfg
    return {
        "profile": cfg.profile,
        "kafka": cfg.kafka.servers,
        "milvus": cfg.milvus.address,
        "online_store": cfg.feast.online_store,
        "offline_store": cfg.feast.offline_store,
        "consumers_per_job": cfg.streaming.processes,
        "partitions": cfg.kafka.partitions,
    }


def run_report(ctx: RunContext) -> dict[str, Any]:
    """Assemble report.json's sections from the stage results; write report.json/.md and plots."""
    from mmads.report import write_report

    catch_up = ctx.result("catch_up")
    serve = ctx.result("serve")
    feast_items, feast_users = feast_counts(ctx)
    scl = {k: v for k, v in ctx.result("scl").items() if not isinstance(v, dict | list)}
    report: dict[str, Any] = {
        "data": ctx.result("validate"),
        "scl": scl,
        "ctr": ctx.result("train")["ctr"],
        "freshness": catch_up["freshness"],
        "parity": serve["parity"],
        "serving": serve["serving"],
        "retrieval": serve["retrieval"],
        "counts": {"milvus_items": milvus_count(ctx), "feast_items": feast_items, "feast_users": feast_users,
                   "dlq": catch_up["dlq"], "published": catch_up["committed"]},
        "training_set": ctx.result("training_set"),
        "stack": stack_summary(ctx),
        "timings": {},
    }
    extras = {"freshness_samples_ms": catch_up.get("freshness_samples_ms", []),
              "latency_samples_ms": serve.get("latency_samples_ms", {})}
    write_report(report, ctx.run_dir, extras=extras)
    return report


def summarize_report(r: dict[str, Any]) -> str:
    """One line: the counts."""
    c = r["counts"]
    gauc = {m: v.get("gauc") for m, v in r.get("ctr", {}).items() if isinstance(v, dict)}
    best = max((m for m in gauc if np.isfinite(gauc[m] or np.nan)), key=lambda m: gauc[m] or 0, default="-")
    return (f"milvus {c['milvus_items']} items, feast {c['feast_items']} items / {c['feast_users']} users, "
            f"dlq {c['dlq']}; best GAUC: {best}")
