import json

import numpy as np
import pandas as pd
import pytest

from infra.errors import ConfigError, FeatureError, ModelArtifactError
from tests.unit.training.fake_market import Market
from training.experiment import PREDICTIONS_FILE, train_and_evaluate
from training.models.ranker import Ranker

KEYS = {"auc", "gauc", "auc_new", "gauc_new", "logloss", "gauc_delta_ci", "gauc_std", "train_seconds"}


@pytest.fixture(scope="module")
def run(market: Market, small_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("ctr")
    section = train_and_evaluate(market.frame, market.item_vectors, small_cfg, out, progress=False)
    return out, section


def test_report_has_every_model_key_and_file(run) -> None:
    out, section = run
    assert list(section) == ["id_only", "simtier", "make", "make_ft", "simtier_make", "lightgbm"]
    for row in section.values():
        assert KEYS <= set(row)
        assert 0.0 <= row["auc"] <= 1.0
    for f in ("ctr_report.json", "ctr_report.md", "gauc_by_model.png", "calibration.png", "training_curves.png",
              "gain_by_item_age.png", "epochs.png"):
        assert (out / f).stat().st_size > 0
    doc = json.loads((out / "ctr_report.json").read_text())
    assert doc["ctr"]["simtier"]["gauc"] == pytest.approx(section["simtier"]["gauc"])
    md = (out / "ctr_report.md").read_text()
    assert "| simtier_make |" in md and "GAUC by item age at impression" in md


def test_cold_start_curve_and_epoch_study_are_reported(run, small_cfg) -> None:
    _, section = run
    for name, row in section.items():
        assert list(row["gauc_by_item_age"]) == ["<1d", "1-3d", "3-7d", ">7d"]
        assert list(row["gauc_by_train_impressions"]) == ["0", "1-10", "11-100", ">100"]
        if name != "id_only":
            gains = row["gauc_gain_by_item_age"]
            for lab, g in gains.items():
                base, mine = section["id_only"]["gauc_by_item_age"][lab], row["gauc_by_item_age"][lab]
                if g["delta"] is not None:
                    assert g["delta"] == pytest.approx(mine - base)
    study = section["id_only"]["auc_by_epoch"]
    assert study["epochs"] == [1, 2, 3] and len(study["valid_auc"]) == len(study["test_auc"]) == 3
    make = section["make"]["auc_by_epoch"]
    assert len(make["valid_auc"]) == len(make["test_auc"]) == len(make["epochs"]) >= 1
    assert 1 <= make["best_epoch"] <= len(make["epochs"])


def test_similarity_feature_beats_id_only(run) -> None:
    _, section = run
    # the fake market's clicks depend on content similarity to the history: SimTier must see it
    assert section["simtier"]["gauc"] > section["id_only"]["gauc"] + 0.02
    assert section["simtier"]["gauc_delta_ci"][0] > 0


@pytest.mark.parametrize("name", ["simtier_make", "make_ft", "id_only"])
def test_save_load_gives_identical_predictions(run, market: Market, name: str) -> None:
    out, _ = run
    preds = pd.read_parquet(out / PREDICTIONS_FILE)
    ranker = Ranker.load(out / "models" / name)
    test = market.frame.sort_values("ts", kind="stable")
    test = test[test["ts"] >= preds["ts"].min()].drop(columns=["clicked"])
    key = ["user_id", "item_id", "ts"]
    assert test[key].reset_index(drop=True).equals(preds[key])
    scores = ranker.score(test, market.item_vectors)
    np.testing.assert_allclose(scores, preds[name].to_numpy(), atol=1e-5)
    assert ranker.model_version.startswith(f"{name}-")
    no_emb = test.assign(has_emb=False, item_emb=[np.zeros(16, np.float32)] * len(test))
    assert np.isfinite(ranker.score(no_emb.head(50), market.item_vectors)).all()


def test_fixed_seed_gives_the_same_metrics_twice(run, market: Market, small_cfg, tmp_path) -> None:
    _, first = run
    models = ("id_only", "make")
    again = train_and_evaluate(market.frame, market.item_vectors, small_cfg, tmp_path / "a", models=models,
                               progress=False)
    for m in models:
        for k in ("auc", "gauc", "gauc_new", "logloss", "gauc_delta_ci"):
            assert again[m][k] == first[m][k], (m, k)


def test_unknown_model_and_missing_artifact_are_errors(market: Market, small_cfg, tmp_path) -> None:
    with pytest.raises(ConfigError, match="bogus"):
        train_and_evaluate(market.frame, market.item_vectors, small_cfg, tmp_path, models=["bogus"])
    with pytest.raises(ModelArtifactError, match="not a CTR model directory"):
        Ranker.load(tmp_path)


def test_training_set_from_another_encoder_is_refused(market: Market, small_cfg, tmp_path) -> None:
    rng = np.random.default_rng(3)
    other = market.item_vectors.assign(emb=[rng.normal(size=16).astype(np.float32) for _ in market.item_vectors.index])
    with pytest.raises(FeatureError, match="another encoder"):
        train_and_evaluate(market.frame, other, small_cfg, tmp_path / "other", models=["id_only"], progress=False)
    # the same encoder's vectors, moved in the last bits (bf16 backbones, other batches), are accepted
    nudged = market.item_vectors.assign(emb=[np.asarray(v, np.float32) * 1.01 + rng.normal(0, 1e-3, 16)
                                             for v in market.item_vectors["emb"]])
    section = train_and_evaluate(market.frame, nudged, small_cfg, tmp_path / "same", models=["id_only"],
                                 progress=False)
    assert set(section) == {"id_only"}
