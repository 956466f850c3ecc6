"""CTR metrics: AUC, GAUC, log loss, and a by-user bootstrap of GAUC differences.

GAUC (docs/architecture.md) is the impression-weighted mean of per-user AUC over the users that have both a
click and a non-click in the evaluated rows; a user's weight is their number of impressions there.
Ties in the scores count one half, as in the Mann-Whitney statistic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from infra.errors import MmadsError

EPS = 1e-7


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.float64).ravel()
    s = np.asarray(scores).astype(np.float64).ravel()
    if y.shape != s.shape:
        raise MmadsError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    return y, s


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half).

    Args:
        labels: 0/1 labels, shape (R,).
        scores: scores or probabilities, shape (R,).

    Returns:
        The AUC, or NaN when only one class is present.
    """
    y, s = _check(labels, scores)
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [1e-7, 1 - 1e-7])."""
    y, p = _check(labels, probs)
    p = np.clip(p, EPS, 1 - EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


@dataclass(frozen=True)
class PerUserAUC:
    """Per-user AUCs of the users with both labels.

    Attributes:
        users: user ids, shape (U,).
        auc: each user's AUC, shape (U,).
        weight: each user's number of impressions, shape (U,).
    """

    users: np.ndarray
    auc: np.ndarray
    weight: np.ndarray

    @property
    def gauc(self) -> float:
        """The impression-weighted mean (NaN when no user has both labels)."""
        if len(self.users) == 0:
            return float("nan")
        return float((self.auc * self.weight).sum() / self.weight.sum())


def per_user_auc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> PerUserAUC:
    """Per-user AUC, vectorised with a grouped rank.

    Args:
        users: user ids, shape (R,).
        labels: 0/1 labels, shape (R,).
        scores: scores, shape (R,).

    Returns:
        The users with both labels (sorted by id), their AUC and impression count.
    """
    y, s = _check(labels, scores)
    df = pd.DataFrame({"u": np.asarray(users).ravel(), "y": y, "s": s})
    df["r"] = df.groupby("u", sort=False)["s"].rank(method="average")
    df["rp"] = df["r"] * df["y"]
    g = df.groupby("u", sort=True).agg(n=("y", "size"), pos=("y", "sum"), rp=("rp", "sum"))
    neg = g["n"] - g["pos"]
    ok = (g["pos"] > 0) & (neg > 0)
    g, neg = g[ok], neg[ok]
    user_auc = (g["rp"] - g["pos"] * (g["pos"] + 1) / 2) / (g["pos"] * neg)
    return PerUserAUC(
        users=g.index.to_numpy(), auc=user_auc.to_numpy(np.float64), weight=g["n"].to_numpy(np.float64)
    )


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Group AUC: impression-weighted mean of per-user AUC over users with both labels.

    Args:
        users: user ids, shape (R,).
        labels: 0/1 labels, shape (R,).
        scores: scores, shape (R,).

    Returns:
        The GAUC, or NaN when no user has both labels.
    """
    return per_user_auc(users, labels, scores).gauc


def bootstrap_gauc_delta(
    model: Sequence[PerUserAUC], baseline: Sequence[PerUserAUC], *, n_resamples: int, seed: int = 0
) -> tuple[float, float]:
    """95% bootstrap CI of mean-over-seeds GAUC(model) - GAUC(baseline), resampling users.

    Every entry must come from the same rows (so the same users); entry ``i`` of each sequence is
    seed ``i``. Each resample draws users with replacement and averages the delta over seeds.

    Args:
        model: per-user AUCs of the model, one per seed.
        baseline: per-user AUCs of the baseline, one per seed (same length).
        n_resamples: number of bootstrap resamples.
        seed: the resampling RNG seed.

    Returns:
        ``(lo, hi)``: the 2.5% and 97.5% percentiles (NaN when no user has both labels).
    """
    if len(model) != len(baseline) or not model:
        raise MmadsError(f"need one baseline per model seed, got {len(model)} and {len(baseline)}")
    n_users = len(model[0].users)
    if n_users == 0:
        return float("nan"), float("nan")
    for pu in (*model, *baseline):
        if not np.array_equal(pu.users, model[0].users):
            raise MmadsError("bootstrap inputs come from different rows (user sets differ)")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_users, size=(n_resamples, n_users))
    w = model[0].weight[idx]
    wsum = w.sum(axis=1)
    deltas = np.zeros(n_resamples)
    for m, b in zip(model, baseline, strict=True):
        deltas += ((m.auc - b.auc)[idx] * w).sum(axis=1) / wsum
    deltas /= len(model)
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_gauc_ci(per_seed: Sequence[PerUserAUC], *, n_resamples: int, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap CI of the mean-over-seeds GAUC, resampling users (same rows for every seed)."""
    zero = [PerUserAUC(p.users, np.zeros_like(p.auc), p.weight) for p in per_seed]
    return bootstrap_gauc_delta(per_seed, zero, n_resamples=n_resamples, seed=seed)


def calibration_curve(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted probability and observed click rate per quantile bin of the prediction.

    Returns:
        ``(mean_pred, click_rate)``, each of shape (<= n_bins,).
    """
    df = _calibration_bins(labels, probs, n_bins)
    return df["p"].to_numpy(), df["y"].to_numpy()


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """ECE over the same quantile bins as :func:`calibration_curve`.

    The row-weighted mean of ``|mean prediction - click rate|`` per bin: 0 for a calibrated model, in
    the units of a click probability.
    """
    df = _calibration_bins(labels, probs, n_bins)
    return float((df["n"] * (df["p"] - df["y"]).abs()).sum() / df["n"].sum())


def _calibration_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int) -> pd.DataFrame:
    """Per quantile bin of the prediction: mean prediction ``p``, click rate ``y``, rows ``n``."""
    y, p = _check(labels, probs)
    bins = pd.qcut(p, q=n_bins, labels=False, duplicates="drop")
    grouped = pd.DataFrame({"b": bins, "y": y, "p": p}).groupby("b")
    return grouped.mean().assign(n=grouped.size())
