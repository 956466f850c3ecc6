import numpy as np
import pytest

from infra.errors import MmadsError
from training.metrics import auc, bootstrap_gauc_ci, bootstrap_gauc_delta, gauc, logloss, per_user_auc


def test_auc_counts_ties_as_half() -> None:
    # pairs (pos, neg): (0.8, 0.3) win, (0.8, 0.5) win, (0.5, 0.3) win, (0.5, 0.5) tie -> 3.5 / 4
    assert auc(np.array([1, 1, 0, 0]), np.array([0.8, 0.5, 0.3, 0.5])) == pytest.approx(0.875)
    assert np.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_gauc_hand_example_skips_users_with_one_label() -> None:
    users = np.array([1, 1, 1, 2, 2, 2, 2, 3, 3])
    labels = np.array([1, 0, 0, 1, 1, 0, 0, 1, 1])  # user 3: clicks only -> ignored
    scores = np.array([0.9, 0.1, 0.2, 0.2, 0.6, 0.4, 0.8, 0.5, 0.1])
    # user 1: pos 0.9 beats both negs -> 1.0 (3 rows); user 2: pos {0.2, 0.6} vs neg {0.4, 0.8}:
    # wins (0.6, 0.4) only -> 1/4 (4 rows). GAUC = (3 * 1 + 4 * 0.25) / 7
    assert gauc(users, labels, scores) == pytest.approx(4 / 7)
    pu = per_user_auc(users, labels, scores)
    assert pu.users.tolist() == [1, 2]
    assert pu.weight.tolist() == [3, 4]


def test_gauc_nan_when_no_user_has_both_labels() -> None:
    assert np.isnan(gauc(np.array([1, 2]), np.array([1, 0]), np.array([0.3, 0.2])))


def test_logloss_matches_formula() -> None:
    y, p = np.array([1, 0]), np.array([0.8, 0.4])
    assert logloss(y, p) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)


def _random_users(seed: int, n_users: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), 10)
    labels = rng.integers(0, 2, len(users))
    return users, labels, labels * 0.3 + rng.random(len(users))


def test_bootstrap_delta_ci_excludes_zero_for_a_better_model_and_is_zero_for_itself() -> None:
    users, labels, good = _random_users(0)
    noise = np.random.default_rng(1).random(len(users))
    base = per_user_auc(users, labels, noise)
    model = per_user_auc(users, labels, good)
    lo, hi = bootstrap_gauc_delta([model], [base], n_resamples=200, seed=0)
    assert 0 < lo < model.gauc - base.gauc < hi
    assert bootstrap_gauc_delta([base], [base], n_resamples=50) == (0.0, 0.0)
    clo, chi = bootstrap_gauc_ci([model], n_resamples=200)
    assert clo < model.gauc < chi


def test_bootstrap_rejects_different_rows() -> None:
    a = per_user_auc(*_random_users(0, 50))
    b = per_user_auc(*_random_users(0, 60))
    with pytest.raises(MmadsError, match="different rows"):
        bootstrap_gauc_delta([a], [b], n_resamples=10)


def test_ece_is_zero_for_calibrated_bins_and_grows_with_miscalibration():
    from training.metrics import expected_calibration_error

    rng = np.random.default_rng(0)
    p = rng.beta(1, 20, 20_000)
    y = (rng.random(len(p)) < p).astype(np.int8)
    calibrated = expected_calibration_error(y, p)
    assert calibrated < 0.005
    assert expected_calibration_error(y, np.clip(2 * p, 0, 1)) > 5 * calibrated
    # two equal bins, predictions 0.1 and 0.3 against click rates 0.2 and 0.2: ECE 0.1
    labels = np.array([1, 0, 0, 0, 0] * 2 + [1, 0, 0, 0, 0] * 2)
    probs = np.array([0.1] * 10 + [0.3] * 10)
    assert expected_calibration_error(labels, probs, n_bins=2) == pytest.approx(0.1)
