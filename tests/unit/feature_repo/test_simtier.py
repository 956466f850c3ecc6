import numpy as np
import pytest

from feature_repo.simtier import SIMTIER_COLUMNS, simtier
from infra.errors import FeatureError


def test_columns():
    assert SIMTIER_COLUMNS(3) == ["tier_0", "tier_1", "tier_2", "hist_len", "sim_max", "sim_mean"]


def test_hand_computed_example():
    # target (1, 0); history cosines: 1, 0, -1, 0.6, and a zero vector (ignored).
    target = np.array([[1.0, 0.0]])
    history = np.array([[[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.6, 0.8], [0.0, 0.0]]])
    out = simtier(target, history, n_tiers=4)
    # 4 tiers on [-1, 1]: [-1,-.5) [-.5,0) [0,.5) [.5,1]; -1 -> 0, 0 -> 2, 0.6 -> 3, 1 -> 3.
    expected = [0.25, 0.0, 0.25, 0.5, 4.0, 1.0, (1.0 + 0.0 - 1.0 + 0.6) / 4]
    np.testing.assert_allclose(out[0], expected, atol=1e-12)
    assert out.dtype == np.float64
    assert out.shape == (1, 7)


def test_lengths_mask_padding():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(2, 8))
    hist = rng.normal(size=(2, 5, 8))
    out = simtier(target, hist, np.array([2, 5]), n_tiers=6)
    ref0 = simtier(target[:1], hist[:1, :2], n_tiers=6)
    np.testing.assert_allclose(out[0], ref0[0])
    assert out[0, 6] == 2
    assert out[1, 6] == 5
    np.testing.assert_allclose(out[:, :6].sum(axis=1), 1.0)


def test_empty_history_gives_zeros():
    out = simtier(np.ones((3, 4)), np.zeros((3, 0, 4)), n_tiers=5)
    assert out.shape == (3, 8)
    assert not out.any()
    out2 = simtier(np.ones((2, 4)), np.ones((2, 3, 4)), np.array([0, 0]), n_tiers=5)
    assert not out2.any()


def test_zero_and_nan_vectors():
    target = np.array([[1.0, 0.0], [0.0, 0.0], [np.nan, 1.0]])
    hist = np.array([[1.0, 0.0], [np.nan, 0.0], [0.0, 0.0], [0.0, 1.0]])
    out = simtier(target, hist, n_tiers=2)
    # Only two history vectors are valid: cos 1 and cos 0 -> both in tier 1 ([0, 1]).
    np.testing.assert_allclose(out[0], [0.0, 1.0, 2.0, 1.0, 0.5])
    # Invalid targets: no similarities, but hist_len is still the user's valid history length.
    np.testing.assert_allclose(out[1:], [[0.0, 0.0, 2.0, 0.0, 0.0]] * 2)
    assert np.isfinite(out).all()


def test_shared_history_equals_per_row_history():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(7, 16)).astype(np.float32)
    hist = rng.normal(size=(9, 16)).astype(np.float32)
    shared = simtier(target, hist, 6, n_tiers=10)
    per_row = simtier(target, np.repeat(hist[None], 7, axis=0), np.full(7, 6), n_tiers=10)
    np.testing.assert_array_equal(shared, per_row)


def test_single_target_vector():
    out = simtier(np.array([1.0, 0.0]), np.array([[1.0, 0.0]]), n_tiers=2)
    np.testing.assert_allclose(out, [[0.0, 1.0, 1.0, 1.0, 1.0]])


def test_blocks_match_unblocked():
    rng = np.random.default_rng(2)
    target = rng.normal(size=(5000, 4))
    hist = rng.normal(size=(5000, 3, 4))
    out = simtier(target, hist, n_tiers=4)
    np.testing.assert_array_equal(out[4500:], simtier(target[4500:], hist[4500:], n_tiers=4))


def test_dimension_mismatch_raises():
    with pytest.raises(FeatureError, match="dimension mismatch: target vectors have d=4"):
        simtier(np.ones((2, 4)), np.ones((2, 3, 5)))
    with pytest.raises(FeatureError, match="batch mismatch"):
        simtier(np.ones((2, 4)), np.ones((3, 3, 4)))
    with pytest.raises(FeatureError, match="n_tiers"):
        simtier(np.ones((2, 4)), np.ones((2, 3, 4)), n_tiers=0)


def test_simtier_from_table_equals_gathered_simtier():
    from feature_repo.simtier import simtier_from_table

    rng = np.random.default_rng(3)
    table = rng.normal(size=(20, 6)).astype(np.float32)
    table[0] = 0.0  # the "no vector" row
    idx = rng.integers(0, 20, size=(3000, 7))
    lengths = rng.integers(0, 8, size=3000)
    target = rng.normal(size=(3000, 6)).astype(np.float32)
    got = simtier_from_table(target, table, idx, lengths, n_tiers=5)
    np.testing.assert_allclose(got, simtier(target, table[idx], lengths, n_tiers=5), atol=1e-12)
    with pytest.raises(FeatureError, match="dimension mismatch"):
        simtier_from_table(target[:, :5], table, idx, lengths)
