import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encoders import ItemEncoder, evaluate_scl, pretrained_encoder, train_scl
from encoders.evaluate import evaluate_model, retrieval_metrics
from encoders.features_cache import item_features
from encoders.pairs import build_pairs, dataset_features, split_by_time
from infra.config import MmadsConfig
from infra.dataset import Dataset
from infra.errors import ConfigError, ModelArtifactError
from tests.unit.encoders.conftest import make_dataset, small_config


def _train_recall(enc: ItemEncoder, ds: Dataset, cfg: MmadsConfig, cache: Path) -> float:
    items, queries = dataset_features(ds, cfg, cache, progress=False)
    pairs = build_pairs(ds.items, ds.queries, items, queries)
    rows, _, _ = split_by_time(ds, cfg)
    sub = pairs.subset(rows)
    return retrieval_metrics(enc.encode_features(sub.queries), enc.encode_features(items), sub.pos_rows)["recall@10"]


def test_tiny_run_lowers_loss_and_raises_recall(trained_dir: Path, tiny_dataset: Dataset, cfg: MmadsConfig):
    enc = ItemEncoder.load(trained_dir)
    hist = enc.metadata["history"]
    assert len(hist) == cfg.model.scl.epochs
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]
    frozen = pretrained_encoder(cfg, seed=0, use_images=True)
    r_trained = _train_recall(enc, tiny_dataset, cfg, trained_dir / "features")
    r_frozen = _train_recall(frozen, tiny_dataset, cfg, trained_dir / "features")
    assert r_trained > r_frozen + 0.1, (r_trained, r_frozen)


def test_save_load_gives_identical_vectors(trained_dir: Path, tiny_dataset: Dataset, tmp_path: Path):
    enc = ItemEncoder.load(trained_dir)
    assert enc.uses_images and enc.dim == 16 and len(enc.version) == 16
    v1 = enc.encode_items(tiny_dataset.items, image_root=tiny_dataset.root)
    enc.save(tmp_path / "copy")
    again = ItemEncoder.load(tmp_path / "copy")
    assert again.version == enc.version
    v2 = again.encode_items(tiny_dataset.items, image_root=tiny_dataset.root)
    assert v1.shape == (len(tiny_dataset.items), 16) and v1.dtype == np.float32
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_allclose(np.linalg.norm(v1, axis=1), 1.0, atol=1e-5)
    q = again.encode_queries(tiny_dataset.queries.head(5), image_root=tiny_dataset.root)
    assert q.shape == (5, 16)


def test_encode_items_matches_cached_feature_path(trained_dir: Path, tiny_dataset: Dataset, cfg: MmadsConfig):
    enc = ItemEncoder.load(trained_dir)
    feats, _ = dataset_features(tiny_dataset, cfg, trained_dir / "features", progress=False)
    direct = enc.encode_items(tiny_dataset.items, image_root=tiny_dataset.root)
    np.testing.assert_allclose(enc.encode_features(feats), direct, atol=1e-5)


def test_empty_title_and_corrupt_image_give_text_only_vectors(
        trained_dir: Path, tiny_dataset: Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    enc = ItemEncoder.load(trained_dir)
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    items = pd.DataFrame({"item_id": [101, 102, 103, 104], "title": ["", None, "red cotton lamp", "red cotton lamp"],
                          "category": ["mug", "mug", "lamp", "lamp"],
                          "image_path": [None, "missing.png", "bad.png", None]})
    with caplog.at_level(logging.WARNING, logger="encoders"):
        vecs = enc.encode_items(items, image_root=tmp_path)
    assert np.isfinite(vecs).all()
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert "item 103" in caplog.text and "item 102" in caplog.text
    np.testing.assert_allclose(vecs[2], vecs[3], atol=1e-6)  # corrupt image -> the text-only vector
    np.testing.assert_allclose(vecs[0], vecs[1], atol=1e-6)  # empty / null title -> category only


def test_resume_gives_the_same_model_as_an_uninterrupted_run(tiny_dataset: Dataset, tmp_path: Path):
    two = small_config(epochs=2)
    full = ItemEncoder.load(train_scl(tiny_dataset, two, tmp_path / "full", variant="hard", progress=False))
    train_scl(tiny_dataset, small_config(epochs=1), tmp_path / "split", variant="hard", progress=False)
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == ["epoch_001.pt"]
    resumed = ItemEncoder.load(train_scl(tiny_dataset, two, tmp_path / "split", variant="hard",
                                         resume=True, progress=False))
    assert resumed.version == full.version
    assert len(list((tmp_path / "split" / "checkpoints").iterdir())) == 2


def test_text_only_dataset_skips_the_image_tower(tmp_path: Path):
    ds = make_dataset(tmp_path / "data", images=False)
    assert not ds.has_images
    out = train_scl(ds, small_config(epochs=1), tmp_path / "m", variant="inbatch", progress=False)
    enc = ItemEncoder.load(out)
    assert not enc.uses_images
    assert '"uses_images": false' in (out / "config.json").read_text()
    assert enc.encode_items(ds.items).shape == (len(ds.items), 16)


def test_pretrained_encoder_is_seeded():
    cfg = small_config()
    a, b = pretrained_encoder(cfg, seed=1), pretrained_encoder(cfg, seed=1)
    assert a.version == b.version != pretrained_encoder(cfg, seed=2).version
    assert pretrained_encoder(cfg, seed=1, use_images=False).uses_images is False


def test_load_errors(trained_dir: Path, tmp_path: Path):
    with pytest.raises(ModelArtifactError, match="config.json is missing"):
        ItemEncoder.load(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "weights.pt"):
        (broken / name).write_bytes((trained_dir / name).read_bytes())
    (broken / "config.json").write_text((trained_dir / "config.json").read_text().replace('"dim": 16', '"dim": 17'))
    with pytest.raises(ModelArtifactError, match="hash"):
        ItemEncoder.load(broken)


def test_bad_variant_is_a_config_error(tiny_dataset: Dataset, tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown SCL variant"):
        train_scl(tiny_dataset, small_config(), tmp_path, variant="moco")


def test_evaluate_reports_all_variants(tiny_dataset: Dataset, tmp_path: Path):
    res = evaluate_scl(tiny_dataset, small_config(), tmp_path, progress=False)
    for v in ("frozen", "inbatch", "queue", "hard"):
        for key in ("recall@1", "recall@10", "recall@50", "mrr", "category_auc"):
            assert 0.0 <= res[f"{key}_{v}"] <= 1.0
    assert res["recall@10"] == res["recall@10_hard"]
    assert res["recall@10_hard"] > res["recall@10_frozen"]
    assert res["category_auc_hard"] > 0.6  # items of one category end up closer than random pairs
    assert ItemEncoder.load(Path(res["model_dir"])).spec.variant == "hard"
    assert (tmp_path / "scl_eval.json").is_file() and "| hard |" in (tmp_path / "scl_eval.md").read_text()
    again = evaluate_model(ItemEncoder.load(Path(res["model_dir"])), tiny_dataset, small_config(), tmp_path / "f")
    assert again["recall@10"] == pytest.approx(res["recall@10_hard"])


def test_item_features_without_image_column():
    items = pd.DataFrame({"item_id": [1], "title": ["x"], "category": ["c"]})
    f = item_features(items, None, max_tokens=8, image_size=32)
    assert f.text.shape == (1, 384) and not f.has_image.any()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bf16_backbones_agree_with_fp32_and_are_deterministic(tiny_dataset: Dataset):
    items = tiny_dataset.items.head(40)
    feats = {p: item_features(items, tiny_dataset.root, max_tokens=16, image_size=32, precision=p)
             for p in ("float32", "bfloat16")}
    again = item_features(items, tiny_dataset.root, max_tokens=16, image_size=32, precision="bfloat16")
    np.testing.assert_array_equal(feats["bfloat16"].text, again.text)
    np.testing.assert_array_equal(feats["bfloat16"].image, again.image)
    assert not np.array_equal(feats["bfloat16"].text, feats["float32"].text)  # bf16 really ran
    assert _cosines(feats["bfloat16"].text, feats["float32"].text).min() > 0.999
    assert _cosines(feats["bfloat16"].image, feats["float32"].image).min() > 0.97
    from encoders.backbones import _Pooled, image_backbone

    graphs = image_backbone(32)._frozen  # both precisions passed the frozen-vs-eager check
    assert set(graphs) == {"float32", "bfloat16"} and not any(isinstance(g, _Pooled) for g in graphs.values())
    with pytest.raises(ValueError, match="unknown backbone precision"):
        item_features(items, None, max_tokens=8, image_size=None, precision="float16")


def test_backbone_precision_is_part_of_the_model(tmp_path: Path):
    bf16 = pretrained_encoder(small_config(backbone_precision="bfloat16"), seed=1)
    fp32 = pretrained_encoder(small_config(backbone_precision="float32"), seed=1)
    assert bf16.spec.backbone_precision == "bfloat16" and bf16.version != fp32.version
    bf16.save(tmp_path / "bf16")
    assert ItemEncoder.load(tmp_path / "bf16").spec.backbone_precision == "bfloat16"
    # an artifact written before the field existed has no key: it loads as float32, same version
    fp32.save(tmp_path / "fp32")
    assert "backbone_precision" not in (tmp_path / "fp32" / "config.json").read_text()
    assert ItemEncoder.load(tmp_path / "fp32").version == fp32.version
    cfg_file = tmp_path / "bf16" / "config.json"
    cfg_file.write_text(cfg_file.read_text().replace('"bfloat16"', '"float16"'))
    with pytest.raises(ModelArtifactError, match="backbone_precision"):
        ItemEncoder.load(tmp_path / "bf16")


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_frozen_text_graph_matches_eager_bert_for_any_batch_and_length(precision: str):
    import torch

    from encoders.backbones import _MeanPooled, autocast, text_backbone

    tb = text_backbone(16)
    texts = ["", "lamp", "a very long title about a red leather vintage backpack for long trips abroad", "mug"]
    frozen = tb.encode(texts, batch_size=3, precision=precision)  # batches of 3 and 1, two lengths
    eager = _MeanPooled(tb.model)
    with torch.inference_mode(), autocast(precision):
        for i, text in enumerate(texts):
            enc = tb.tokenizer.encode_batch([text])
            ids, mask = torch.tensor([enc[0].ids]), torch.tensor([enc[0].attention_mask])
            np.testing.assert_allclose(frozen[i], eager(ids, mask).numpy()[0], rtol=0.02, atol=0.02)
    assert not isinstance(tb._frozen[precision], _MeanPooled)  # the frozen graph was used, not the fallback
