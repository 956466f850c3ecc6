"""Main-job stages that train and evaluate models: SCL, the training set, the CTR ablation."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mmads.context import RunContext

logger = logging.getLogger(__name__)

TRAINING_SET = "training_set.parquet"


def run_scl(ctx: RunContext) -> dict[str, Any]:
    """Pre-train the SCL encoders (every variant) and evaluate them on time-held-out queries.

    A dataset without query pairs trains nothing: the item indexer then uses the frozen backbones
    (saved as ``scl/models/frozen``) and the result says so, with no recall figures.
    """
    from encoders import evaluate_scl

    if not ctx.dataset.has_queries:
        return frozen_scl(ctx)
    result = evaluate_scl(ctx.dataset, ctx.cfg, ctx.run_dir / "scl")
    result.pop("variants", None)
    result["trained"] = True
    return result


def frozen_scl(ctx: RunContext) -> dict[str, Any]:
    """The SCL stage of a dataset without queries: save the frozen encoder, record that nothing was trained."""
    import json

    from encoders.inference import pretrained_encoder

    out = ctx.run_dir / "scl"
    model_dir = out / "models" / "frozen"
    enc = pretrained_encoder(ctx.cfg, seed=ctx.cfg.model.seed, use_images=ctx.dataset.has_images)
    enc.save(model_dir)
    result = {"trained": False, "reason": "the dataset has no query pairs (queries.parquet)",
              "default_variant": "frozen", "model_dir": str(model_dir), "n_items": len(ctx.dataset.items),
              "uses_images": ctx.dataset.has_images, "n_train_pairs": 0, "n_test_pairs": 0}
    out.mkdir(parents=True, exist_ok=True)
    (out / "scl_eval.json").write_text(json.dumps(result, indent=2))
    return result


def summarize_scl(r: dict[str, Any]) -> str:
    """One line: recall@10 of each variant (or that nothing was trained)."""
    if r.get("trained") is False:
        return f"trained nothing ({r['reason']}); the item indexer uses the frozen backbones"
    parts = [f"{v} {r.get(f'recall@10_{v}', float('nan')):.3f}" for v in ("frozen", "inbatch", "queue", "hard")]
    return f"query->item recall@10: {', '.join(parts)} ({r.get('n_test_pairs')} held-out queries)"


def item_vectors(ctx: RunContext) -> pd.DataFrame:
    """The item-vector table from the Feast offline store (the latest row per item)."""
    from feature_repo.store import latest_item_vectors

    return latest_item_vectors(ctx.cfg)


def logged_impressions(ctx: RunContext) -> pd.DataFrame:
    """The impressions the impression logger wrote to the offline label log, in time order."""
    from streaming.impression_logger import read_impression_log

    log = read_impression_log(ctx.cfg)
    return log.sort_values(["ts", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def run_training_set(ctx: RunContext) -> dict[str, Any]:
    """Build the training set by Feast historical retrieval over the logged impressions.

    Raises:
        ParityError: the on-demand view and the fast path differ by more than
            ``checks.parity_tolerance`` (or their histories differ), naming the worst rows.
    """
    from feature_repo.store import open_store
    from training.training_set import build_training_set, check_parity, materialize_side_features

    impressions = logged_impressions(ctx)
    expected = len(ctx.dataset.impressions)
    if len(impressions) != expected:
        raise RuntimeError(f"the impression log holds {len(impressions)} rows, the dataset {expected}")
    store = open_store(ctx.cfg)
    # side features are catalogue attributes from the files (not streamed): offline for the training
    # set, online for the service
    side_rows = materialize_side_features(ctx.cfg, store, ctx.dataset.items, ctx.dataset.users, online=True)
    summary = build_training_set(ctx.cfg, store, impressions, ctx.run_dir / TRAINING_SET)
    parity = check_parity(ctx.cfg, store, impressions, sample=300, seed=ctx.cfg.model.seed)
    tol = ctx.cfg.checks.parity_tolerance
    if not parity.ok_within(tol):
        from infra.errors import ParityError

        detail: list[dict[str, object]] = [{"histories_differ": parity.hist_mismatches}] \
            if parity.hist_mismatches else []
        raise ParityError("on-demand-view", parity.max_abs_diff, tol, detail + list(parity.worst))
    return {
        "rows": summary.rows, "rows_per_s": round(summary.rows_per_s, 1),
        "rows_without_history": summary.rows_without_history,
        "rows_without_embedding": summary.rows_without_emb,
        "odfv_parity_rows": parity.rows, "odfv_parity_max_abs_diff": parity.max_abs_diff,
        "odfv_parity_hist_mismatches": parity.hist_mismatches, "side_feature_rows": side_rows,
    }


def summarize_training_set(r: dict[str, Any]) -> str:
    """One line: rows, speed and the ODFV parity check."""
    return (f"{r['rows']} rows at {r['rows_per_s']:.0f} rows/s; {r['rows_without_history']} without history; "
            f"ODFV parity on {r['odfv_parity_rows']} rows: max diff {r['odfv_parity_max_abs_diff']:.1e}")


def run_train(ctx: RunContext) -> dict[str, Any]:
    """Train and evaluate id_only, simtier, make, make_ft, simtier_make and lightgbm."""
    from training.experiment import train_and_evaluate

    vectors = item_vectors(ctx)
    cut = pd.Timestamp(ctx.result("validate")["cut_time"])
    section = train_and_evaluate(ctx.run_dir / TRAINING_SET, vectors, ctx.cfg, ctx.run_dir / "ctr", cut=cut)
    return {"ctr": section}


def summarize_train(r: dict[str, Any]) -> str:
    """One line: GAUC overall / new items per model."""
    ctr = r["ctr"]
    return "GAUC (new items): " + ", ".join(
        f"{m} {v['gauc']:.4f} ({v['gauc_new']:.4f})" for m, v in ctr.items()
        if isinstance(v, dict) and "gauc" in v and np.isfinite(v.get("gauc_new", np.nan)))
