"""LightGBM baseline on point-in-time tabular features of the same split.

Features per row, all computed from the training-set frame only:

* user, item and category impression counts and smoothed CTRs from **strictly earlier** training
  impressions (ties in ``ts`` do not see each other); CTR = (clicks + m * prior) / (count + m) with
  the training click rate as prior and m = ``SMOOTHING``;
* the SimTier columns, ``hist_len``, ``sim_max``, ``sim_mean`` (already point-in-time);
* the side features, when the run has any: numerics raw, categoricals as pandas categories over the
  training period's vocabulary (a value first seen after the cut is missing), split natively.

Test rows see the counts as of the cut (all training impressions), not the labels of earlier test
impressions: the torch models are likewise trained up to the cut and frozen, so both get the same
label information. Early stopping uses the validation slice (the end of the training period).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from feature_repo.simtier import SIMTIER_COLUMNS
from infra.config import CTRConfig
from training.data import TimeSplit
from training.models.side import SideEncoder, label_of

logger = logging.getLogger(__name__)

SMOOTHING = 10.0
KEYS = ("user_id", "item_id", "category")
EARLY_STOPPING_ROUNDS = 20


def _prior_counts(train: pd.DataFrame, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Impressions and clicks of ``key`` strictly before each row (train sorted by ts), shape (R,)."""
    df = train[[key, "ts", "clicked"]].copy()
    g = df.groupby(key, sort=False)
    df["n"] = g.cumcount()
    df["c"] = g["clicked"].cumsum() - df["clicked"]
    ties = df.groupby([key, "ts"], sort=False)  # equal ts: the first row's counts are the strict ones
    return ties["n"].transform("min").to_numpy(np.float64), ties["c"].transform("min").to_numpy(np.float64)


def _count_features(n: np.ndarray, c: np.ndarray, prior: float, key: str) -> dict[str, np.ndarray]:
    name = key.removesuffix("_id")
    return {f"{name}_count": np.log1p(n), f"{name}_ctr": (c + SMOOTHING * prior) / (n + SMOOTHING)}


def feature_names(n_tiers: int, side: SideEncoder | None = None) -> list[str]:
    """The feature columns, in model order."""
    counts = [f"{k.removesuffix('_id')}_{s}" for k in KEYS for s in ("count", "ctr")]
    return [*counts, *SIMTIER_COLUMNS(n_tiers), *(side.names if side else [])]


def _side_columns(frame: pd.DataFrame, side: SideEncoder) -> pd.DataFrame:
    """Side features for LightGBM: numerics raw, categoricals over the fitted vocabulary."""
    out = pd.DataFrame(index=range(len(frame)))
    for spec in side.specs:
        col = frame[spec.name].reset_index(drop=True)
        if spec.kind == "numeric":
            out[spec.name] = pd.to_numeric(col, errors="coerce").astype(float)
        else:
            labels = [label_of(v) for v in col.tolist()]
            out[spec.name] = pd.Categorical(labels, categories=list(side.vocabs[spec.name]))
    return out


def tabular_features(split: TimeSplit, n_tiers: int, side: SideEncoder | None = None
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Point-in-time features for the train and the test rows.

    Args:
        split: the time split.
        n_tiers: SimTier tiers T.
        side: the side-feature encoder fitted on the training period (None: no side features).

    Returns:
        ``(train_features, test_features)`` with columns :func:`feature_names`, row-aligned with
        ``split.train`` and ``split.test``.
    """
    train, test = split.train, split.test
    prior = float(train["clicked"].mean())
    tr: dict[str, np.ndarray] = {}
    te: dict[str, np.ndarray] = {}
    for key in KEYS:
        n, c = _prior_counts(train, key)
        tr.update(_count_features(n, c, prior, key))
        totals = train.groupby(key)["clicked"].agg(["size", "sum"])
        tn = test[key].map(totals["size"]).fillna(0).to_numpy(np.float64)
        tc = test[key].map(totals["sum"]).fillna(0).to_numpy(np.float64)
        te.update(_count_features(tn, tc, prior, key))
    sims = SIMTIER_COLUMNS(n_tiers)
    cols = feature_names(n_tiers)
    train_x = pd.concat([pd.DataFrame(tr), train[sims].reset_index(drop=True).astype(float)], axis=1)
    test_x = pd.concat([pd.DataFrame(te), test[sims].reset_index(drop=True).astype(float)], axis=1)
    train_x, test_x = train_x[cols].fillna(0.0), test_x[cols].fillna(0.0)
    if side is not None and side.specs:  # missing side values stay missing: LightGBM routes them itself
        train_x = pd.concat([train_x, _side_columns(train, side)], axis=1)
        test_x = pd.concat([test_x, _side_columns(test, side)], axis=1)
    return train_x, test_x


@dataclass(frozen=True)
class LGBMResult:
    """A fitted baseline.

    Attributes:
        booster: the model (best iteration kept).
        test_proba: click probabilities of the test rows, shape (R_test,).
        valid_logloss: validation log loss per boosting round (the training curve).
        seconds: training wall time.
    """

    booster: lgb.Booster
    test_proba: np.ndarray
    valid_logloss: list[float]
    seconds: float


def fit_lightgbm(split: TimeSplit, n_tiers: int, ctr: CTRConfig, *, seed: int,
                 side: SideEncoder | None = None) -> LGBMResult:
    """Fit on the rows before the validation slice, early-stop on it, score the test rows.

    Args:
        split: the time split.
        n_tiers: SimTier tiers T.
        ctr: ``lgbm_rounds`` (maximum boosting rounds).
        seed: LightGBM's seed.
        side: the side-feature encoder fitted on the training period (None: no side features).

    Returns:
        The fitted baseline and its test predictions.
    """
    train_x, test_x = tabular_features(split, n_tiers, side)
    is_fit = (split.train["ts"] < split.valid_start).to_numpy()
    y = split.train["clicked"].to_numpy()
    params = {
        "objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 50,
        "feature_fraction": 0.9, "seed": seed, "num_threads": 2, "deterministic": True,
        "force_row_wise": True, "verbose": -1,
    }
    categorical = [s.name for s in side.categorical] if side else []
    fit_set = lgb.Dataset(train_x[is_fit], y[is_fit], categorical_feature=categorical or "auto")
    valid_set = lgb.Dataset(train_x[~is_fit], y[~is_fit], reference=fit_set)
    history: dict[str, dict[str, list[float]]] = {}
    start = time.perf_counter()
    booster = lgb.train(
        params, fit_set, num_boost_round=ctr.lgbm_rounds, valid_sets=[valid_set], valid_names=["valid"],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False), lgb.record_evaluation(history)],
    )
    seconds = time.perf_counter() - start
    logger.info("LightGBM: best iteration %d of %d", booster.best_iteration, ctr.lgbm_rounds)
    proba = np.asarray(booster.predict(test_x, num_iteration=booster.best_iteration), dtype=np.float64)
    return LGBMResult(booster, proba, list(history.get("valid", {}).get("binary_logloss", [])), seconds)
