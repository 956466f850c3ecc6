import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.serving_world import save_random_model
from infra.config import load_config
from infra.errors import ModelArtifactError
from serving.model_loader import available_models, choose_model, load_model
from training.models.inputs import IdVocab
from training.models.registry import DEFAULT_MODEL

CFG = load_config(env={}).with_overrides(model={"dim": 8, "history_len": 4, "n_tiers": 4})
VOCAB = IdVocab(user_ids=np.array([1, 2]), item_ids=np.array([10, 11, 12]), categories=("a", "b"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    for seed, name in enumerate(("simtier", DEFAULT_MODEL, "id_only")):
        save_random_model(CFG, VOCAB, run / "ctr" / "models" / name, name, seed)
    return run


def test_choice_order_argument_then_serving_json_then_default(run_dir: Path):
    assert available_models(run_dir) == ["id_only", "simtier", "simtier_make"]
    assert choose_model(run_dir) == DEFAULT_MODEL
    (run_dir / "serving.json").write_text(json.dumps({"model": "simtier"}))
    try:
        assert choose_model(run_dir) == "simtier"
        assert choose_model(run_dir, "id_only") == "id_only"
    finally:
        (run_dir / "serving.json").unlink()


def test_missing_model_names_the_available_ones(run_dir: Path, tmp_path: Path):
    with pytest.raises(ModelArtifactError, match=r"'make' not found .*available: \['id_only', 'simtier'"):
        choose_model(run_dir, "make")
    with pytest.raises(ModelArtifactError, match="does not exist"):
        choose_model(tmp_path / "nope")
    (tmp_path / "serving.json").write_text("[1]")
    with pytest.raises(ModelArtifactError, match="not a JSON object"):
        choose_model(tmp_path)


def test_load_checks_the_feature_shapes(run_dir: Path):
    served = load_model(run_dir, CFG, "simtier")
    assert served.name == "simtier"
    assert served.model_version.startswith("simtier-")
    assert served.run_dir == run_dir.resolve()
    with pytest.raises(ModelArtifactError, match=r"expects d=8, T=4 but the feature store serves d=16, T=4"):
        load_model(run_dir, CFG.with_overrides(model={"dim": 16}), "simtier")


def test_the_artifact_records_the_simtier_columns_and_load_checks_them(run_dir: Path, tmp_path: Path):
    import shutil

    from feature_repo.simtier import SIMTIER_COLUMNS
    from training.models.ranker import CONFIG_FILE, Ranker

    model_dir = run_dir / "ctr" / "models" / "simtier"
    meta = json.loads((model_dir / CONFIG_FILE).read_text())
    assert meta["simtier_columns"] == SIMTIER_COLUMNS(4)
    assert Ranker.load(model_dir).simtier_columns == SIMTIER_COLUMNS(4)
    # a model trained when the feature had other columns must not be served
    moved = tmp_path / "simtier"
    shutil.copytree(model_dir, moved)
    meta["simtier_columns"] = [*SIMTIER_COLUMNS(4)[:-1], "sim_median"]
    (moved / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError, match="trained on SimTier columns .*sim_median.*retrain"):
        Ranker.load(moved)
