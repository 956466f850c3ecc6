import numpy as np
import pytest

from infra.errors import ConfigError
from mmads.cli import build_parser
from training.models.ctr import model_config
from training.models.inputs import IdVocab
from training.models.registry import DEFAULT_MODEL, MODEL_NAMES, MODELS, TORCH_MODELS, model_spec

VOCAB = IdVocab(user_ids=np.array([1, 2]), item_ids=np.array([10, 11]), categories=("a",))


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_each_torch_model_is_built_with_the_parts_the_registry_names(name: str):
    spec = model_spec(name)
    cfg = model_config(name, VOCAB, id_dim=4, mlp_hidden=(8,), n_tiers=3, vec_dim=6)
    assert (cfg.n_tiers is not None) == spec.uses_simtier
    assert (cfg.make is not None) == spec.uses_make
    assert cfg.finetune_make == spec.finetune_make


def test_the_registry_is_the_one_list_of_names():
    assert len(set(MODEL_NAMES)) == len(MODELS) and DEFAULT_MODEL in TORCH_MODELS
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions  # type: ignore[union-attr]
                 if a.dest == "models")
    assert tuple(train.choices) == MODEL_NAMES and train.default == list(MODEL_NAMES)
    with pytest.raises(ConfigError, match="unknown CTR model 'xgboost'"):
        model_spec("xgboost")
    with pytest.raises(ConfigError, match="not a torch CTR model"):
        model_config("lightgbm", VOCAB, id_dim=4, mlp_hidden=(8,), n_tiers=3, vec_dim=6)
