"""The main job: every part of mmads composed end to end on one dataset, writing a report.

validate data -> stack up -> SCL pre-train + eval -> start the streaming jobs (processes) -> replay items,
behaviors and impressions through Kafka -> wait until the jobs caught up -> training set by Feast
historical retrieval -> CTR models -> serving checks -> report -> stack down (unless --keep-running).
Each stage prints a one-line result; a failing stage stops the run naming the stage and its cause,
leaves its logs in RUN_DIR/logs and stops the stack it started.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra import stack as infra_stack
from infra.config import MmadsConfig, save_config
from infra.dataset import dataset_cut, load_dataset
from infra.logs import LogFormat, make_formatter
from infra.redact import redact_logs
from mmads.context import RunContext
from mmads.memory import PeakMemory
from mmads.report import finish_report, summary_table
from mmads.stages import Stage, StageFailedError, StageRunner, dataset_manifest

logger = logging.getLogger(__name__)


def _validate(ctx: RunContext) -> dict[str, Any]:
    from infra.side_features import resolve_side_features, with_side_features

    ds = load_dataset(ctx.data_dir, decode_images=True, window=ctx.cfg.data.plausible_time_window)
    ctx._dataset = ds
    # the run's side features (configured, or discovered): every later stage and process reads them
    ctx.cfg = with_side_features(ctx.cfg, resolve_side_features(ctx.cfg, ds))
    save_config(ctx.cfg, ctx.config_file)
    cut = dataset_cut(ds, ctx.cfg)
    new_items = ds.items["created_at"] > cut
    test = ds.impressions[ds.impressions["ts"] >= cut]
    new_ids = set(ds.items.loc[new_items, "item_id"].tolist())
    return {
        "items": len(ds.items),
        "users": int(ds.impressions["user_id"].nunique()),
        "behaviors": len(ds.behaviors),
        "impressions": len(ds.impressions),
        "queries": len(ds.queries),
        "cut_time": cut.isoformat(),
        "new_item_share": round(float(new_items.mean()), 4),
        "test_impressions": len(test),
        "test_impressions_new_item_share": round(float(test["item_id"].isin(new_ids).mean()), 4)
        if len(test) else 0.0,
        "has_images": ds.has_images,
        "side_features": [f"{s.name} ({s.kind}, {s.source})" for s in ctx.cfg.data.side_features or ()],
        "image_tower": "used" if ds.has_images else "skipped (text-only dataset)",
        "has_queries": ds.has_queries,
        "string_item_ids": len(ds.item_keys), "string_user_ids": len(ds.user_keys),
        "notes": list(ds.notes),
    }


def _stack_up(ctx: RunContext) -> dict[str, Any]:
    from mmads.commands.stack import stack_up

    rows = stack_up(ctx.cfg)
    return {"parts": {r.part: r.healthy for r in rows}, "endpoints": {r.part: r.endpoint for r in rows}}


def _stack_down(ctx: RunContext) -> dict[str, Any]:
    if ctx.keep_running:
        return {"stopped": [], "kept_running": True}
    return {"stopped": infra_stack.down(ctx.cfg), "kept_running": False}


def build_stages() -> list[Stage]:
    """The main job's stages, in order."""
    from mmads.steps import modeling, report, serving, streaming

    return [
        Stage("validate", _validate, lambda r: (
            f"{r['items']} items, {r['users']} users, {r['behaviors']} behaviors, {r['impressions']} "
            f"impressions, {r['queries']} queries; cut {r['cut_time']}; new items {r['new_item_share']:.0%}; "
            f"image tower {r['image_tower']}; side features: {', '.join(r.get('side_features', [])) or 'none'}"),
              cacheable=False),
        Stage("stack_up", _stack_up, lambda r: "healthy: " + ", ".join(
            f"{k}={'ok' if v else 'DOWN'}" for k, v in r["parts"].items()), cacheable=False),
        Stage("scl", modeling.run_scl, modeling.summarize_scl, outputs=("scl/scl_eval.json",),
              chain_keys=("model_dir", "recall@10")),
        Stage("streaming", streaming.run_start_streaming, lambda r: "started " + ", ".join(
            f"{n} (pid {p})" for n, p in r["processes"].items()), cacheable=False),
        Stage("replay", streaming.run_replay, lambda r: "published " + ", ".join(
            f"{t} {n}" for t, n in r["published"].items()) + f" in {r['seconds']:.0f}s ({r['backfill_items']} "
            f"catalogue items indexed first in {r['backfill_s']:.0f}s)", cacheable=False,
              chain_keys=("published",)),
        Stage("catch_up", streaming.run_catch_up, lambda r: (
            f"committed {sum(r['committed'].values())} events; item freshness p50 "
            f"{r['freshness']['item_p50_ms']:.0f} ms p99 {r['freshness']['item_p99_ms']:.0f} ms; behavior p99 "
            f"{r['freshness']['behavior_p99_ms']:.0f} ms; dead letters {r['dlq']}"), cacheable=False,
              chain_keys=("committed", "dlq")),
        Stage("training_set", modeling.run_training_set, modeling.summarize_training_set,
              outputs=(modeling.TRAINING_SET,), chain_keys=("rows", "rows_without_history")),
        Stage("train", modeling.run_train, modeling.summarize_train, outputs=("ctr/ctr_report.json",)),
        Stage("serve", serving.run_serve, serving.summarize_serve, cacheable=False),
        Stage("report", report.run_report, report.summarize_report, cacheable=False),
        Stage("stack_down", _stack_down, lambda r: "kept running" if r["kept_running"] else
              "stopped " + (", ".join(r["stopped"]) or "nothing"), cacheable=False),
    ]


def stage_names() -> tuple[str, ...]:
    """The stage names, in order (from :func:`build_stages`, the one stage list)."""
    return tuple(stage.name for stage in build_stages())


def _run_config(cfg: MmadsConfig, run_dir: Path) -> MmadsConfig:
    """The run's config: state (Milvus data, Feast repo, logs) lives under RUN_DIR/state."""
    return cfg.with_overrides(state_dir=(run_dir / "state").resolve())


def _setup_run_logging(run_dir: Path, fmt: LogFormat = "text") -> logging.Handler:
    logs = run_dir / "state" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    link = run_dir / "logs"
    if not link.exists():
        link.symlink_to(Path("state") / "logs")
    handler = logging.FileHandler(logs / "run.log")
    handler.setLevel(logging.INFO)
    handler.setFormatter(make_formatter(fmt, "run", "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    redact_logs()
    logging.getLogger().setLevel(min(logging.getLogger().level or logging.INFO, logging.INFO))
    return handler


def _remove_unless_validated(run_dir: Path, ctx: RunContext, fresh: bool, handler: logging.Handler) -> bool:
    """Remove a run directory this run created when it failed before its data passed ``validate``.

    Past ``validate`` the directory holds logs and partial outputs worth reading; before it, nothing.

    Returns:
        Whether the directory was removed.
    """
    if not fresh or (ctx.runner is not None and "validate" in ctx.runner.results):
        return False
    logging.getLogger().removeHandler(handler)
    handler.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


@contextmanager
def removed_on_failure(run_dir: Path) -> Iterator[None]:
    """Remove ``run_dir`` if the block fails and the directory did not exist before it."""
    fresh = not run_dir.exists()
    try:
        yield
    except BaseException:
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def run_pipeline(
    cfg: MmadsConfig,
    data_dir: Path,
    run_dir: Path,
    *,
    from_stage: str | None = None,
    keep_running: bool = False,
) -> dict[str, Any]:
    """Run the main job; returns the report (also written to RUN_DIR/report.json).

    Raises:
        StageFailedError: a stage failed; the stack this run started has been stopped.
    """
    run_dir = run_dir.resolve()
    fresh = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = _run_config(cfg, run_dir)
    handler = _setup_run_logging(run_dir, cfg.logging.format)
    ctx = RunContext(cfg=cfg, data_dir=Path(data_dir).resolve(), run_dir=run_dir, keep_running=keep_running)
    t0 = time.perf_counter()
    memory = PeakMemory(cfg.state_dir)
    try:
        save_config(cfg, ctx.config_file)
        # what cached stages depend on: the data and the model settings (not ports, paths or job counts)
        base = f"{dataset_manifest(ctx.data_dir)}|{cfg.model_dump_json(include={'model', 'data'})}"
        ctx.runner = StageRunner(run_dir, base, from_stage=from_stage)
        with memory:
            for stage in build_stages():
                ctx.runner.execute(stage, ctx)
    except StageFailedError as exc:
        infra_stack.down(cfg)
        removed = _remove_unless_validated(run_dir, ctx, fresh, handler)
        kept = "run directory removed (the data did not pass validate)" if removed else f"logs in {run_dir / 'logs'}"
        print(f"[{exc.stage}] FAILED: {exc.cause}; {kept}", file=sys.stderr)
        raise
    except BaseException:
        _remove_unless_validated(run_dir, ctx, fresh, handler)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    timings = dict(ctx.runner.timings)
    timings["total"] = round(time.perf_counter() - t0, 2)
    timings["peak_rss_gib"] = memory.peak_gib  # this process + broker, Milvus, jobs and service, summed
    report = dict(ctx.runner.results.get("report", {}))
    report["timings"] = timings
    finish_report(report, run_dir)  # again, with the timings: report.md shows them
    print("\n" + summary_table(report))
    print(f"\nreport: {run_dir / 'report.json'} and {run_dir / 'report.md'}")
    logger.info("report written to %s (pid %d)", run_dir / "report.json", os.getpid())
    return report


__all__ = ["build_stages", "removed_on_failure", "run_pipeline", "stage_names"]
