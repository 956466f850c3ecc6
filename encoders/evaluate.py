"""SCL evaluation: query -> item retrieval on time-held-out query pairs, for four variants.

Variants, trained the same way on the query pairs before the cut: ``frozen`` (frozen backbones and
a seeded projection, no SCL), ``inbatch``, ``queue`` and ``hard`` (see :mod:`encoders.model`).
Each held-out query is scored against **all** items by cosine; reported are Recall@1/10/50, MRR,
and the AUC of cosine(two items of one category) against cosine(two random items).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from encoders.inference import ItemEncoder, pretrained_encoder
from encoders.model import VARIANTS
from encoders.pairs import build_pairs, dataset_features, split_by_time
from encoders.train import fit_scl
from infra.config import MmadsConfig
from infra.dataset import Dataset
from infra.errors import DatasetError

logger = logging.getLogger(__name__)

DEFAULT_VARIANT = "hard"
KS = (1, 10, 50)
AUC_PAIRS = 20_000


def retrieval_metrics(query_vecs: np.ndarray, item_vecs: np.ndarray, true_rows: np.ndarray,
                      chunk: int = 1024) -> dict[str, float]:
    """Recall@k and MRR of retrieving each query's true item among all items.

    Args:
        query_vecs: ``(Q, d)`` unit vectors.
        item_vecs: ``(n, d)`` unit vectors.
        true_rows: ``(Q,)`` row of each query's true item.
        chunk: queries scored per matrix product (bounds memory).

    Returns:
        ``{"recall@1", "recall@10", "recall@50", "mrr"}``; a tie counts in the query's favour.
    """
    ranks = np.empty(len(true_rows), dtype=np.int64)
    for s in range(0, len(true_rows), chunk):
        scores = query_vecs[s:s + chunk] @ item_vecs.T  # (c, n)
        true = scores[np.arange(scores.shape[0]), true_rows[s:s + chunk]]
        ranks[s:s + chunk] = (scores > true[:, None]).sum(1) + 1
    out = {f"recall@{k}": float((ranks <= k).mean()) for k in KS}
    out["mrr"] = float((1.0 / ranks).mean())
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    # average the ranks of tied scores
    _, inv, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = sums[inv] / counts[inv]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def category_auc(item_vecs: np.ndarray, cats: np.ndarray, seed: int, n_pairs: int = AUC_PAIRS) -> float:
    """AUC of cosine(same-category pair) vs cosine(random pair) over seeded samples of pairs."""
    rng = np.random.default_rng(seed)
    n = len(cats)
    a = rng.integers(0, n, n_pairs)
    by_cat = {c: np.flatnonzero(cats == c) for c in np.unique(cats)}
    b_same = np.array([rng.choice(by_cat[c]) for c in cats[a]])
    keep = b_same != a
    pos = (item_vecs[a[keep]] * item_vecs[b_same[keep]]).sum(1)
    r1, r2 = rng.integers(0, n, n_pairs), rng.integers(0, n, n_pairs)
    neg = (item_vecs[r1] * item_vecs[r2]).sum(1)
    return auc(pos, neg) if len(pos) else float("nan")


def format_table(variants: dict[str, dict[str, float]]) -> str:
    """A markdown table, one row per variant."""
    cols = ["recall@1", "recall@10", "recall@50", "mrr", "category_auc"]
    lines = ["| variant | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in variants.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def _measure(enc: ItemEncoder, item_vecs: np.ndarray, query_vecs: np.ndarray, true_rows: np.ndarray,
             cats: np.ndarray, seed: int) -> dict[str, float]:
    m = retrieval_metrics(query_vecs, item_vecs, true_rows)
    m["category_auc"] = category_auc(item_vecs, cats, seed)
    return m


def evaluate_model(encoder: ItemEncoder, dataset: Dataset, cfg: MmadsConfig,
                   cache_dir: Path | None = None) -> dict[str, float]:
    """Held-out metrics of one encoder (same split and metrics as :func:`evaluate_scl`).

    Args:
        encoder: any encoder (its own image size and token limit are used for the features).
        dataset: a loaded dataset with queries.
        cfg: configuration (the time cut).
        cache_dir: where backbone features are cached (default: ``<state_dir>/scl_features``).

    Returns:
        ``recall@1``, ``recall@10``, ``recall@50``, ``mrr`` and ``category_auc``.
    """
    spec = encoder.spec
    cfg = cfg.with_overrides(model={"scl": {"image_size": spec.image_size, "text_max_tokens": spec.text_max_tokens,
                                            "trainable_text_layers": spec.trainable_text_layers}})
    cache = cache_dir if cache_dir is not None else Path(cfg.state_dir) / "scl_features"
    item_f, query_f = dataset_features(dataset, cfg, cache, progress=False)
    pairs = build_pairs(dataset.items, dataset.queries, item_f, query_f)
    _, test_rows, cut = split_by_time(dataset, cfg)
    if len(test_rows) == 0:
        raise DatasetError(f"no query pairs after the cut {cut} to evaluate on")
    return _measure(encoder, encoder.encode_features(item_f), encoder.encode_features(query_f.take(test_rows)),
                    pairs.pos_rows[test_rows], pairs.item_cats, cfg.model.seed)


def evaluate_scl(dataset: Dataset, cfg: MmadsConfig, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train the variants on the pairs before the cut and evaluate on the pairs after it.

    Args:
        dataset: a loaded dataset with queries.
        cfg: configuration (the dataset's one cut, :func:`infra.dataset.dataset_cut`).
        out_dir: where models (``models/<variant>``), cached features, ``scl_eval.json`` and
            ``scl_eval.md`` go.
        progress: show progress bars.

    Returns:
        Flat metrics: ``recall@10`` etc. of the default variant (hard), ``recall@10_<variant>``,
        ``recall@1_<variant>``, ``recall@50_<variant>``, ``mrr_<variant>``, ``category_auc_<variant>``
        for frozen/inbatch/queue/hard, ``model_dir`` of the default, counts (``n_train_pairs``: the
        pairs before the cut, the only ones any variant trained on) and epoch times.

    Raises:
        DatasetError: no query pairs on one side of the cut.
    """
    out_dir = Path(out_dir)
    item_f, query_f = dataset_features(dataset, cfg, out_dir / "features", progress=progress)
    pooled = (item_f, query_f)  # what the frozen baseline reads
    if cfg.model.scl.trainable_text_layers:
        frozen_cfg = cfg.with_overrides(model={"scl": {"trainable_text_layers": 0}})
        pooled = dataset_features(dataset, frozen_cfg, out_dir / "features", progress=progress)
    pairs = build_pairs(dataset.items, dataset.queries, item_f, query_f)
    train_rows, test_rows, cut = split_by_time(dataset, cfg)
    if len(train_rows) < 2 or len(test_rows) == 0:
        raise DatasetError(f"need query pairs on both sides of the cut {cut}: "
                           f"{len(train_rows)} before, {len(test_rows)} after")
    train = pairs.subset(train_rows)
    encoders: dict[str, ItemEncoder] = {
        "frozen": pretrained_encoder(cfg, seed=cfg.model.seed, use_images=dataset.has_images)}
    for variant in VARIANTS:
        encoders[variant] = fit_scl(train, cfg, out_dir / "models" / variant, variant=variant,
                                    use_images=dataset.has_images, progress=progress,
                                    metadata={"data": str(dataset.root), "cut": cut.isoformat()})
    variants = {}
    for name, enc in encoders.items():
        items, queries = pooled if name == "frozen" else (item_f, query_f)
        variants[name] = _measure(enc, enc.encode_features(items), enc.encode_features(queries.take(test_rows)),
                                  pairs.pos_rows[test_rows], pairs.item_cats, cfg.model.seed)
    result = _flatten(variants)
    hard_hist = encoders[DEFAULT_VARIANT].metadata["history"]
    result.update({
        "model_dir": str(out_dir / "models" / DEFAULT_VARIANT), "default_variant": DEFAULT_VARIANT,
        "n_train_pairs": len(train_rows), "n_test_pairs": len(test_rows),
        "n_items": len(pairs.item_ids), "uses_images": dataset.has_images,
        "epoch_seconds": float(np.mean([h["seconds"] for h in hard_hist])) if hard_hist else None,
        "variants": variants,
    })
    table = format_table(variants)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scl_eval.json").write_text(json.dumps(result, indent=2))
    (out_dir / "scl_eval.md").write_text(table + "\n")
    logger.info("SCL evaluation (%d held-out queries, %d items):\n%s", len(test_rows), len(pairs.item_ids), table)
    return result


def _flatten(variants: dict[str, dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, m in variants.items():
        for key, value in m.items():
            out[f"{key}_{name}"] = value
    out.update(variants[DEFAULT_VARIANT])
    return out
