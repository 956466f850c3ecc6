import numpy as np
import pandas as pd
import pytest

from infra.errors import FeatureError
from training.models.inputs import OOV, PAD, IdVocab, ItemVectorLookup, build_inputs


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [1, 2], "item_id": [10, 99], "category": ["a", "zz"], "has_emb": [True, False],
        "item_emb": [np.array([3.0, 4.0], np.float32), np.zeros(2, np.float32)],
        "hist_item_ids": [np.array([11, 10, 77, 12], np.int64), np.array([], np.int64)],
        "tier_0": [0.5, 0.0], "tier_1": [0.5, 0.0], "hist_len": [4, 0], "sim_max": [0.9, np.nan],
        "sim_mean": [0.1, np.nan], "clicked": [1, 0],
    })


def test_build_inputs_maps_ids_pads_and_gathers_vectors() -> None:
    vocab = IdVocab(user_ids=np.array([1]), item_ids=np.array([10, 11]), categories=("a",))
    table = pd.DataFrame({"item_id": [10, 11, 12], "emb": [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]})
    lookup = ItemVectorLookup.from_frame(table)
    x = build_inputs(_frame(), lookup, vocab, n_tiers=2, history_len=3)
    assert x.user.tolist() == [2, OOV]
    assert x.item.tolist() == [2, OOV]
    assert x.category.tolist() == [2, OOV]
    assert x.hist_items.tolist() == [[3, 2, OOV], [PAD, PAD, PAD]]  # truncated to N = 3
    hv = x.hist_vectors()
    np.testing.assert_allclose(hv[0, 0].numpy(), [0.0, 1.0])  # item 11, normalised
    np.testing.assert_allclose(hv[0, 2].numpy(), [0.0, 0.0])  # item 77 has no vector
    np.testing.assert_allclose(x.target_vec.numpy(), [[0.6, 0.8], [0.0, 0.0]])
    assert x.simtier[1].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]  # NaN similarity -> 0
    assert x.label is not None and x.label.tolist() == [1.0, 0.0]


def test_build_inputs_rejects_missing_columns_and_wrong_dimension() -> None:
    vocab = IdVocab(user_ids=np.array([1]), item_ids=np.array([10]), categories=("a",))
    lookup = ItemVectorLookup.from_frame(pd.DataFrame({"item_id": [10], "emb": [[1.0, 0.0, 0.0]]}))
    with pytest.raises(FeatureError, match="tier_1"):
        build_inputs(_frame().drop(columns=["tier_1"]), lookup, vocab, n_tiers=2, history_len=3)
    with pytest.raises(FeatureError, match="dimension"):
        build_inputs(_frame(), lookup, vocab, n_tiers=2, history_len=3)


def test_vocab_save_load_roundtrip(tmp_path) -> None:
    vocab = IdVocab(user_ids=np.array([1, 5]), item_ids=np.array([10]), categories=("a", "b"))
    vocab.save(tmp_path / "vocab.npz")
    back = IdVocab.load(tmp_path / "vocab.npz")
    assert back.users(np.array([5, 6])).tolist() == [3, OOV]
    assert back.categories == ("a", "b")


def test_a_shared_history_scores_like_the_same_history_on_every_row() -> None:
    import torch

    from training.models.ctr import CTRModel, model_config, predict_logits
    from training.models.inputs import inputs_from_arrays

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vocab = IdVocab(user_ids=np.array([1]), item_ids=np.arange(10, 30), categories=("a", "b"))
    lookup = ItemVectorLookup.from_arrays(np.arange(10, 30), rng.normal(size=(20, 4)).astype(np.float32))
    model = CTRModel(model_config("simtier_make", vocab, id_dim=4, mlp_hidden=(8,), n_tiers=2, vec_dim=4))
    b = 7
    for hist in (np.array([12, 15, 99, 11]), np.array([-1])):  # with an unknown item; an empty history
        common = dict(user_ids=np.ones(b, np.int64), item_ids=rng.integers(5, 35, b),
                      categories=["a", "b", None] * 2 + ["a"], has_emb=rng.random(b) < 0.8,
                      item_emb=rng.normal(size=(b, 4)).astype(np.float32),
                      simtier=rng.random((b, 5)), lookup=lookup, vocab=vocab)
        shared = inputs_from_arrays(history=hist.reshape(1, -1), **common)
        repeated = inputs_from_arrays(history=np.tile(hist, (b, 1)), **common)
        assert shared.shared_history and not repeated.shared_history
        torch.testing.assert_close(predict_logits(model, shared), predict_logits(model, repeated), atol=1e-5, rtol=1e-5)
        assert len(shared.select(torch.tensor([0, 3]))) == 2
