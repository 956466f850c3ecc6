"""SCL with the top MiniLM layers trainable (``model.scl.trainable_text_layers = k``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import ItemEncoder, train_scl
from encoders.backbones import TextTop, text_backbone
from encoders.evaluate import evaluate_model
from encoders.features_cache import item_features
from encoders.pairs import dataset_features
from encoders.train import fit_scl
from infra.config import MmadsConfig
from infra.dataset import Dataset
from infra.errors import ConfigError
from tests.unit.encoders.conftest import small_config

TEXTS = ["red leather vintage dress", "", "a much longer title about a blue cotton sporty backpack no 17", "mug"]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("k", [1, 6])
def test_frozen_states_through_the_pretrained_top_equal_the_whole_backbone(k: int):
    tb = text_backbone(32)
    states, mask = tb.hidden_states(TEXTS, 6 - k, batch_size=3)  # two batches of different lengths
    assert states.dtype == np.float16 and mask.dtype == bool and states.shape[:2] == mask.shape
    assert mask.sum(1).max() == states.shape[1] and mask[:, 0].all()  # trimmed to the longest text
    top = TextTop(k).load_pretrained_(tb).eval()
    with torch.no_grad():
        split = top(torch.from_numpy(states), torch.from_numpy(mask)).numpy()
    whole = tb.encode(TEXTS, precision="float32")
    assert _cos(split, whole).min() > 0.999  # the split is the same network (fp16 states cost ~1e-4)


def test_length_sorted_batches_keep_each_text_in_its_row():
    tb = text_backbone(32)
    texts = [TEXTS[i % len(TEXTS)] + " x" * (i % 7) for i in range(40)]  # lengths mixed, out of order
    batches = list(tb._length_batches(texts, batch_size=64))
    assert len(batches) == 2  # one call of 40 texts is cut into two length-sorted halves
    assert sorted(np.concatenate([rows for rows, _, _ in batches]).tolist()) == list(range(40))
    for _, ids, mask in batches:
        assert mask.sum(1).max() == ids.shape[1]  # each padded only to its own longest text
    together = tb.encode(texts, precision="float32")
    alone = np.concatenate([tb.encode([t], precision="float32") for t in texts])
    assert _cos(together, alone).min() > 0.9999  # padding never changes a real token's state
    assert not list(tb._length_batches([], batch_size=64))


@pytest.fixture(scope="module")
def top_cfg() -> MmadsConfig:
    return small_config(trainable_text_layers=1, epochs=2, queue_size=64)


@pytest.fixture(scope="module")
def top_dir(tiny_dataset: Dataset, top_cfg: MmadsConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_scl(tiny_dataset, top_cfg, tmp_path_factory.mktemp("top1"), variant="hard", progress=False)


def test_top_layer_trains_and_ships_in_the_artifact(top_dir: Path, tiny_dataset: Dataset, top_cfg: MmadsConfig):
    enc = ItemEncoder.load(top_dir)
    assert enc.spec.trainable_text_layers == 1 and enc.encoder.text_top is not None
    assert '"trainable_text_layers": 1' in (top_dir / "config.json").read_text()
    hist = enc.metadata["history"]
    assert hist[-1]["loss"] < hist[0]["loss"]
    published = text_backbone(32).model.encoder.layer[-1].state_dict()
    trained = enc.encoder.text_top.layers[0].state_dict()
    assert trained.keys() == published.keys()
    # it moved, and the published layer did not (a copy trained, not the shared backbone)
    assert any(not torch.equal(trained[n], published[n]) for n in published)
    # encode_items (fresh backbone pass) == the cached token states the training used
    feats, _ = dataset_features(tiny_dataset, top_cfg, top_dir / "features", progress=False)
    assert feats.text_mask is not None and feats.text.ndim == 3
    direct = enc.encode_items(tiny_dataset.items, image_root=tiny_dataset.root)
    np.testing.assert_allclose(enc.encode_features(feats), direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(direct, axis=1), 1.0, atol=1e-5)
    assert set(evaluate_model(enc, tiny_dataset, top_cfg, cache_dir=top_dir / "eval")) >= {"recall@10", "mrr"}


def test_resume_with_trainable_layers_matches_an_uninterrupted_run(tiny_dataset: Dataset, top_dir: Path,
                                                                    top_cfg: MmadsConfig, tmp_path: Path):
    full = ItemEncoder.load(top_dir)
    one = top_cfg.with_overrides(model={"scl": {"epochs": 1}})
    train_scl(tiny_dataset, one, tmp_path, variant="hard", progress=False)
    torch.manual_seed(12345)  # the resumed run must restore the dropout generator itself
    resumed = ItemEncoder.load(train_scl(tiny_dataset, top_cfg, tmp_path, variant="hard", resume=True,
                                         progress=False))
    assert resumed.version == full.version


def test_features_must_match_the_configured_layers(tiny_dataset: Dataset, top_cfg: MmadsConfig, tmp_path: Path):
    from encoders.pairs import build_pairs

    pooled = item_features(tiny_dataset.items, tiny_dataset.root, max_tokens=32, image_size=32)
    pairs = build_pairs(tiny_dataset.items, tiny_dataset.queries, pooled, pooled.take(np.zeros(500, dtype=int)))
    with pytest.raises(ConfigError, match="trainable_text_layers"):
        fit_scl(pairs, top_cfg, tmp_path, variant="inbatch", use_images=True, progress=False)
