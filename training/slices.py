"""The cold-start curve: GAUC of every model, and its gain over ``id_only``, by how much an item is known.

Two slicings of the scored rows:

* **item age** at impression time (``ts - item_created_at``): ``<1d``, ``1-3d``, ``3-7d``, ``>7d``;
* the item's **training impressions** (rows of the item before the cut, the ones every model
  learnt from): ``0``, ``1-10``, ``11-100``, ``>100``.

Within a slice GAUC is computed as everywhere (impression-weighted per-user AUC over users with
both labels in the slice), per seed and averaged; the gain over ``id_only`` gets a 95% user
bootstrap CI, pairing seed i with seed i.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from training.metrics import PerUserAUC, bootstrap_gauc_delta, per_user_auc

DAY_S = 86_400.0
AGE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<1d", -np.inf, 1.0), ("1-3d", 1.0, 3.0), ("3-7d", 3.0, 7.0), (">7d", 7.0, np.inf))
IMPRESSION_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("0", -np.inf, 1.0), ("1-10", 1.0, 11.0), ("11-100", 11.0, 101.0), (">100", 101.0, np.inf))
SLICINGS = ("item_age", "train_impressions")


def _bucket(values: np.ndarray, buckets: Sequence[tuple[str, float, float]]) -> dict[str, np.ndarray]:
    """Per bucket label, the mask of values in ``[lo, hi)`` (NaN falls in none)."""
    return {label: (values >= lo) & (values < hi) for label, lo, hi in buckets}


def slice_masks(test: pd.DataFrame, train: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """The row masks of both slicings.

    Args:
        test: the scored rows (``ts``, ``item_id``, ``item_created_at``).
        train: the rows the models were fitted on (their item counts are the training impressions).

    Returns:
        ``{"item_age": {label: mask}, "train_impressions": {label: mask}}``, masks over ``test``.
    """
    created = pd.to_datetime(test["item_created_at"], utc=True)
    age = (pd.to_datetime(test["ts"], utc=True) - created).dt.total_seconds().to_numpy(np.float64) / DAY_S
    counts = test["item_id"].map(train["item_id"].value_counts()).fillna(0).to_numpy(np.float64)
    return {"item_age": _bucket(age, AGE_BUCKETS), "train_impressions": _bucket(counts, IMPRESSION_BUCKETS)}


def _per_user(test: pd.DataFrame, proba: np.ndarray, mask: np.ndarray) -> PerUserAUC:
    return per_user_auc(test["user_id"].to_numpy()[mask], test["clicked"].to_numpy()[mask], proba[mask])


def sliced_metrics(test: pd.DataFrame, train: pd.DataFrame, proba: Mapping[str, Sequence[np.ndarray]], *,
                   baseline: str = "id_only", n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Per model, GAUC by item age and by training impressions, and the gain over ``baseline``.

    Args:
        test: the scored rows.
        train: the rows the models were fitted on.
        proba: per model, one probability array per seed (aligned with ``test``).
        baseline: the model gains are measured against (skipped when absent).
        n_boot: bootstrap resamples for the CIs.
        seed: the resampling seed.

    Returns:
        Per model: ``gauc_by_item_age`` and ``gauc_by_train_impressions`` (label -> mean GAUC over
        seeds, None where no user has both labels), and when the baseline ran,
        ``gauc_gain_by_item_age`` / ``gauc_gain_by_train_impressions`` (label -> ``{"delta",
        "ci"}``), plus ``slice_rows`` (label -> rows) under each slicing's name.
    """
    masks = slice_masks(test, train)
    out: dict[str, dict[str, Any]] = {name: {} for name in proba}
    for slicing, by_label in masks.items():
        per_user = {m: {lab: [_per_user(test, p, mask) for p in ps] for lab, mask in by_label.items()}
                    for m, ps in proba.items()}
        for model in proba:
            gaucs = {lab: _mean_gauc(pus) for lab, pus in per_user[model].items()}
            out[model][f"gauc_by_{slicing}"] = gaucs
            out[model][f"rows_by_{slicing}"] = {lab: int(m.sum()) for lab, m in by_label.items()}
            if baseline not in proba or model == baseline:
                continue
            gains: dict[str, Any] = {}
            for lab in by_label:
                base = per_user[baseline][lab]
                g, b = gaucs[lab], _mean_gauc(base)
                lo, hi = bootstrap_gauc_delta(per_user[model][lab], base, n_resamples=n_boot, seed=seed)
                gains[lab] = {"delta": None if g is None or b is None else g - b, "ci": [lo, hi]}
            out[model][f"gauc_gain_by_{slicing}"] = gains
    return out


def _mean_gauc(per_seed: Sequence[PerUserAUC]) -> float | None:
    values = [pu.gauc for pu in per_seed]
    return float(np.mean(values)) if values and all(np.isfinite(values)) else None
