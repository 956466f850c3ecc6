"""Main-job stages that drive the streaming jobs: start them, replay the dataset, wait for them."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.dataset import Dataset
from infra.processes import live_record, start_process, stop_process

if TYPE_CHECKING:
    from mmads.context import RunContext

logger = logging.getLogger(__name__)

JOBS = {  # job -> module run as ``python -m``
    "items": "streaming.item_indexer",
    "behaviors": "streaming.behavior_job",
    "impressions": "streaming.impression_logger",
}
REPLAY_RATE = 1500.0  # events/s over the live timeline: new items then arrive at ~20/s on average
CATCH_UP_TIMEOUT_S = 600.0
JOB_START_TIMEOUT_S = 180.0  # loading torch, Feast and the encoders takes a while on 2 busy cores


def job_names(ctx: RunContext) -> list[str]:
    """The process names of every streaming job replica (``stream-items-0`` ...)."""
    return [f"stream-{job}-{i}" for job in JOBS for i in range(ctx.cfg.streaming.processes)]


def reset_streaming_state(ctx: RunContext) -> None:
    """Forget what earlier streaming runs wrote, so a rerun neither double-counts nor trusts stale stats.

    The embedded broker keeps topics in memory, so after a stack restart offsets start at 0 again:
    old stats files, dedupe keys of the impression log and feature rows would describe another
    replay. The Feast repo is re-applied empty and the Milvus collection dropped.
    """
    import shutil

    from feature_repo.data_sources import repo_dir
    from infra.milvus import milvus_client
    from mmads.commands.stack import stack_up

    shutil.rmtree(ctx.cfg.state_dir / "streaming", ignore_errors=True)
    shutil.rmtree(repo_dir(ctx.cfg), ignore_errors=True)
    client = milvus_client(ctx.cfg)
    try:
        if client.has_collection(ctx.cfg.milvus.collection):
            client.drop_collection(ctx.cfg.milvus.collection)
    finally:
        client.close()
    stack_up(ctx.cfg)


def run_start_streaming(ctx: RunContext) -> dict[str, Any]:
    """Start each streaming job as ``cfg.streaming.processes`` processes in one consumer group.

    Each process serves its metrics on its own port (``streaming.metrics_port`` plus its index over
    the run's job processes: items first, then behaviors, then impressions).

    When no job is running yet, the state of earlier runs is reset first (see
    :func:`reset_streaming_state`).
    """
    model_dir = ctx.result("scl")["model_dir"]
    started: dict[str, int] = {}
    if not any(live_record(ctx.cfg.state_dir, n) for n in job_names(ctx)):
        reset_streaming_state(ctx)
    for j, (job, module) in enumerate(JOBS.items()):
        for i in range(ctx.cfg.streaming.processes):
            name = f"stream-{job}-{i}"
            if (rec := live_record(ctx.cfg.state_dir, name)) is not None:
                started[name] = rec.pid
                continue
            # one metrics port per process: streaming.metrics_port + j * processes + i
            index = j * ctx.cfg.streaming.processes + i
            argv = [sys.executable, "-m", module, "--config", str(ctx.config_file), "--process-index", str(index)]
            if job == "items":
                argv += ["--model", str(model_dir)]
            started[name] = start_process(ctx.cfg.state_dir, name, argv, role="client").pid
    from streaming.stats import wait_ready

    t = ctx.cfg.kafka.topics
    t0 = time.perf_counter()
    wait_ready(ctx.cfg, dict.fromkeys((t.items, t.behaviors, t.impressions), ctx.cfg.kafka.partitions),
               timeout_s=JOB_START_TIMEOUT_S,
               alive=lambda: all(live_record(ctx.cfg.state_dir, n) is not None for n in started))
    return {"processes": started, "model_dir": str(model_dir), "ready_s": round(time.perf_counter() - t0, 1)}


def _split_backfill(ds: Dataset) -> tuple[Dataset, Dataset]:
    """The catalogue that existed before the first event, and the live timeline after it."""
    first = min(ds.behaviors["ts"].min(), ds.impressions["ts"].min())
    old = ds.items["created_at"] < first
    empty_b, empty_i = ds.behaviors.iloc[:0], ds.impressions.iloc[:0]
    backfill = dataclasses.replace(ds, items=ds.items[old], behaviors=empty_b, impressions=empty_i)
    live = dataclasses.replace(ds, items=ds.items[~old])
    return backfill, live


def dead_letters_by_topic(ctx: RunContext) -> dict[str, int]:
    """Messages dead-lettered so far per input topic (from the jobs' stats files)."""
    from streaming.stats import read_stats

    out: dict[str, int] = {}
    for doc in read_stats(ctx.cfg):
        topic = str(doc.get("topic"))
        out[topic] = out.get(topic, 0) + int(doc.get("dead_lettered", 0) or 0)  # type: ignore[call-overload]
    return out


def dataset_totals(ctx: RunContext) -> dict[str, int]:
    """Events the replay publishes per topic name (the whole dataset)."""
    t = ctx.cfg.kafka.topics
    ds = ctx.dataset
    return {t.items: len(ds.items), t.behaviors: len(ds.behaviors), t.impressions: len(ds.impressions)}


def check_dead_letters(ctx: RunContext, totals: dict[str, int]) -> None:
    """Fail as soon as a topic's dead letters exceed ``checks.max_dead_letter_share`` of its events.

    Dead letters only grow, so comparing what was dead-lettered so far with the topic's total is
    safe to do while the replay is still publishing.

    Raises:
        DeadLetterShareError: naming the topic and its most common dead-letter reasons with counts.
    """
    from infra.errors import DeadLetterShareError
    from streaming.dlq import top_reasons

    limit = ctx.cfg.checks.max_dead_letter_share
    for topic, n in dead_letters_by_topic(ctx).items():
        total = totals.get(topic, 0)
        if n > limit * total:
            raise DeadLetterShareError(topic, n, total, limit, top_reasons(ctx.cfg, topic))


def run_replay(ctx: RunContext) -> dict[str, Any]:
    """Publish the dataset through Kafka: the catalogue first, then the live timeline.

    The catalogue (items created before the first event) is published and indexed first, as a real
    deployment bootstraps its index; then new items, behaviors and impressions follow merged in
    time order at :data:`REPLAY_RATE` events/s. The dead-letter check (:func:`check_dead_letters`)
    runs all along, so a broken event stream stops the run within seconds.
    """
    from streaming.stats import wait_caught_up
    from streaming.timeline import replay_timeline

    backfill, live = _split_backfill(ctx.dataset)
    totals = dataset_totals(ctx)

    def check() -> None:
        check_dead_letters(ctx, totals)

    t0 = time.perf_counter()
    first = replay_timeline(backfill, ctx.cfg, check=check)
    wait_caught_up(ctx.cfg, {ctx.cfg.kafka.topics.items: first[ctx.cfg.kafka.topics.items]},
                   timeout_s=CATCH_UP_TIMEOUT_S, check=check)
    t1 = time.perf_counter()
    counts = replay_timeline(live, ctx.cfg, rate=REPLAY_RATE, check=check)
    counts[ctx.cfg.kafka.topics.items] += first[ctx.cfg.kafka.topics.items]
    return {"published": counts, "backfill_items": len(backfill.items), "backfill_s": round(t1 - t0, 2),
            "live_items": [int(i) for i in live.items["item_id"]],
            "seconds": round(time.perf_counter() - t0, 2), "rate": REPLAY_RATE}


def run_catch_up(ctx: RunContext) -> dict[str, Any]:
    """Wait until every job committed what was published; then collect freshness and DLQ counts.

    Raises:
        DeadLetterShareError: the jobs dead-lettered more than ``checks.max_dead_letter_share`` of a
            topic's events (checked while waiting and once caught up).
    """
    from streaming.stats import freshness_summary, read_freshness, wait_caught_up

    published = ctx.result("replay")["published"]
    t0 = time.perf_counter()
    committed = wait_caught_up(ctx.cfg, published, timeout_s=CATCH_UP_TIMEOUT_S,
                               check=lambda: check_dead_letters(ctx, published))
    behaviors = freshness_summary(ctx.cfg, "behaviors")
    samples = read_freshness(ctx.cfg, "items")
    samples = samples.sort_values("written_ms").drop_duplicates(["key", "produced_ms"])
    # freshness of the live stream: the backfilled catalogue was published as one burst on purpose
    samples = samples[samples["key"].isin(set(ctx.result("replay")["live_items"]))]
    lat = samples["latency_ms"].to_numpy(dtype=float)
    items = {"p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
             "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
             "max_ms": float(lat.max()) if len(lat) else float("nan"), "n": len(lat)}
    return {
        "committed": committed, "waited_s": round(time.perf_counter() - t0, 2),
        "freshness": {"item_p50_ms": items["p50_ms"], "item_p99_ms": items["p99_ms"],
                      "item_max_ms": items["max_ms"], "behavior_p50_ms": behaviors["p50_ms"],
                      "behavior_p99_ms": behaviors["p99_ms"], "items_measured": items["n"]},
        "freshness_samples_ms": samples["latency_ms"].astype(float).tolist(),
        "dlq": dead_letter_count(ctx),
    }


def dead_letter_count(ctx: RunContext) -> int:
    """Messages dead-lettered by every job (from the jobs' stats files)."""
    from streaming.stats import read_stats

    total = 0
    for doc in read_stats(ctx.cfg):
        total += int(doc.get("dead_lettered", 0) or 0)  # type: ignore[call-overload]
    return total


def stop_streaming(ctx: RunContext) -> list[str]:
    """Stop the streaming jobs (SIGTERM: they finish the batch, commit and close)."""
    return [n for n in job_names(ctx) if stop_process(ctx.cfg.state_dir, n, grace_s=15.0)]
