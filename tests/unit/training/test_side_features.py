"""Side features in the CTR models and LightGBM: fitting on the training period, use, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from infra.config import MmadsConfig
from infra.errors import FeatureError
from tests.unit.training.fake_market import Market
from training.data import time_split
from training.experiment import PREDICTIONS_FILE, _prepare, train_and_evaluate
from training.models.ctr import CTRModel, model_config
from training.models.inputs import ItemVectorLookup, build_inputs
from training.models.ranker import Ranker
from training.models.side import FIRST_VALUE, MISSING, OOV, SIDE_FILE, SideEncoder
from training.training_set import training_set_schema

SIDE = [
    {"name": "brand", "kind": "categorical", "source": "items"},
    {"name": "price", "kind": "numeric", "source": "items"},
    {"name": "segment", "kind": "categorical", "source": "users"},
]
MODELS = ("id_only", "lightgbm")


def side_frame(market: Market, seed: int = 1) -> pd.DataFrame:
    """The fake market with side columns whose values decide the clicks (and ids cannot tell).

    ``brand`` is an item attribute, ``segment`` a user attribute, ``price`` varies per impression,
    so no id embedding can learn it; the labels are redrawn from the side features alone.
    """
    rng = np.random.default_rng(seed)
    frame = market.frame.copy()
    items = np.sort(frame["item_id"].unique())
    brand = dict(zip(items.tolist(), rng.choice(["a", "b", "c", "d"], len(items)).tolist(), strict=True))
    users = np.sort(frame["user_id"].unique())
    segment = dict(zip(users.tolist(), rng.choice(["x", "y"], len(users)).tolist(), strict=True))
    frame["brand"] = frame["item_id"].map(brand)
    frame["price"] = rng.normal(50.0, 10.0, len(frame))
    frame["segment"] = frame["user_id"].map(segment)
    logit = 2.5 * (frame["brand"] == "a") - 0.2 * (frame["price"] - 50.0) + 1.0 * (frame["segment"] == "x") - 1.0
    frame["clicked"] = (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return frame


@pytest.fixture(scope="module")
def side_cfg(small_cfg: MmadsConfig) -> MmadsConfig:
    return small_cfg.with_overrides(data={"side_features": SIDE})


@pytest.fixture(scope="module")
def runs(market: Market, small_cfg: MmadsConfig, side_cfg: MmadsConfig, tmp_path_factory):
    frame = side_frame(market)
    with_side = tmp_path_factory.mktemp("with_side")
    without = tmp_path_factory.mktemp("without")
    epochs = {"model": {"ctr": {"id_epochs": 3}}}  # ~20 steps an epoch on this tiny market
    a = train_and_evaluate(frame, market.item_vectors, side_cfg.with_overrides(**epochs), with_side,
                           models=MODELS, progress=False)
    b = train_and_evaluate(frame, market.item_vectors, small_cfg.with_overrides(**epochs), without,
                           models=MODELS, progress=False)
    return frame, (with_side, a), (without, b)


@pytest.mark.parametrize("model", MODELS)
def test_side_features_that_decide_clicks_lift_auc(runs, model: str) -> None:
    _, (_, with_side), (_, without) = runs
    assert with_side[model]["auc"] > without[model]["auc"] + 0.1, (with_side[model]["auc"], without[model]["auc"])


def test_the_report_names_the_side_features_each_model_used(runs) -> None:
    _, (out, with_side), (out_none, without) = runs
    assert all(row["side_features"] == ["brand", "price", "segment"] for row in with_side.values())
    assert all(row["side_features"] == [] for row in without.values())
    md = (out / "ctr_report.md").read_text()
    assert "brand (categorical, items), price (numeric, items), segment (categorical, users)" in md
    assert "Side features: none." in (out_none / "ctr_report.md").read_text()
    doc = json.loads((out / "ctr_report.json").read_text())
    assert [s["name"] for s in doc["split"]["side_features"]] == ["brand", "price", "segment"]


def test_saved_model_scores_like_the_evaluation_and_reads_its_side_features(runs, market: Market) -> None:
    frame, (out, _), _ = runs
    preds = pd.read_parquet(out / PREDICTIONS_FILE)
    model_dir = out / "models" / "id_only"
    assert (model_dir / SIDE_FILE).is_file()
    ranker = Ranker.load(model_dir)
    assert ranker.side is not None and ranker.side.names == ["brand", "price", "segment"]
    test = frame.sort_values("ts", kind="stable")
    test = test[test["ts"] >= preds["ts"].min()].drop(columns=["clicked"])
    scores = ranker.score(test, market.item_vectors)
    np.testing.assert_allclose(scores, preds["id_only"].to_numpy(), atol=1e-5)
    # the model reads the side columns: other values, other scores
    pricier = ranker.score(test.assign(price=test["price"] + 20.0), market.item_vectors)
    assert (scores - pricier).mean() > 0.1  # the labels fall with price
    brand_a = ranker.score(test.assign(brand="a"), market.item_vectors)
    assert not np.allclose(brand_a, scores, atol=1e-4)
    with pytest.raises(FeatureError, match="price"):
        ranker.score(test.drop(columns=["price"]), market.item_vectors)


def test_vocabulary_and_statistics_come_from_the_training_period_only(market: Market, side_cfg) -> None:
    frame = side_frame(market)
    cut = time_split(frame.sort_values("ts", kind="stable"), side_cfg).cut
    late = frame["ts"] > cut
    frame.loc[late, "price"] += 1000.0  # post-cut values that would move the mean by ~200 if seen
    frame.loc[late, "brand"] = "late_brand"
    side = _prepare(frame, market.item_vectors, side_cfg, None, "test").side
    assert side is not None
    train = frame[frame["ts"] < cut]
    assert side.means["price"] == pytest.approx(train["price"].mean())
    assert side.stds["price"] == pytest.approx(train["price"].std(ddof=0))
    assert side.means["price"] < 100  # fitted on every row it would be ~250
    assert "late_brand" not in side.vocabs["brand"]
    assert side.vocabs["brand"] == ("a", "b", "c", "d")
    cat, num = side.transform({"brand": ["late_brand", None, "a"], "price": [train["price"].mean(), None, 1.0],
                               "segment": ["x"]}, 3)
    assert cat[:, 0].tolist() == [OOV, MISSING, FIRST_VALUE]
    assert cat[:, 1].tolist() == [side.vocabs["segment"].index("x") + FIRST_VALUE] * 3  # one user value, broadcast
    assert num[:2, 0] == pytest.approx([0.0, 0.0])


def test_model_inputs_and_forward_shapes(market: Market) -> None:
    frame = side_frame(market).head(64)
    from infra.config import SideFeature

    side = SideEncoder.fit(frame, [SideFeature(**s) for s in SIDE])
    vocab_frame = market.frame.head(64)
    from training.models.inputs import IdVocab

    vocab = IdVocab.fit(vocab_frame)
    lookup = ItemVectorLookup.from_frame(market.item_vectors)
    inputs = build_inputs(frame, lookup, vocab, n_tiers=10, history_len=20, side=side)
    assert inputs.side_cat is not None and inputs.side_cat.shape == (64, 2)
    assert inputs.side_num is not None and inputs.side_num.shape == (64, 1)
    assert inputs.select(slice(0, 5)).side_cat.shape == (5, 2)  # type: ignore[union-attr]
    cfg = model_config("simtier", vocab, id_dim=4, mlp_hidden=(8,), n_tiers=10, vec_dim=16, side=side)
    assert cfg.side_cardinalities == (4 + FIRST_VALUE, 2 + FIRST_VALUE) and cfg.n_side_numeric == 1
    model = CTRModel(cfg)
    assert model(inputs).shape == (64,)
    bare = build_inputs(frame, lookup, vocab, n_tiers=10, history_len=20)
    with pytest.raises(FeatureError, match="side features"):
        model(bare)


def test_without_side_features_inputs_model_and_schema_are_todays(market: Market, small_cfg: MmadsConfig) -> None:
    prep = _prepare(side_frame(market), market.item_vectors, small_cfg, None, "test")  # extra columns, none configured
    assert prep.side is None
    assert prep.train.side_cat is None and prep.train.side_num is None
    cfg = model_config("simtier", prep.vocab, id_dim=4, mlp_hidden=(8,), n_tiers=10, vec_dim=16, side=prep.side)
    assert cfg.side_cardinalities == () and cfg.n_side_numeric == 0
    torch.manual_seed(0)
    model = CTRModel(cfg)
    assert not [k for k in model.state_dict() if k.startswith("side")]
    assert model.mlp.net[0].in_features == 4 * 4 + model.simtier.out_dim  # type: ignore[union-attr,index]
    assert training_set_schema(10).names == [
        "user_id", "item_id", "ts", "clicked", "category", "item_created_at", "has_emb", "item_emb",
        "hist_item_ids", *[f"tier_{t}" for t in range(10)], "hist_len", "sim_max", "sim_mean"]


def test_side_encoder_round_trips_through_its_file(tmp_path: Path, market: Market) -> None:
    from infra.config import SideFeature

    side = SideEncoder.fit(side_frame(market), [SideFeature(**s) for s in SIDE])
    side.save(tmp_path)
    again = SideEncoder.load(tmp_path)
    assert again == side
    assert SideEncoder.load(tmp_path / "none") is None
