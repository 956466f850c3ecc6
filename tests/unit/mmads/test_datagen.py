"""The synthetic marketplace generator: schema, determinism, cold start, and the hidden structure."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from infra.dataset import time_cut, validate_dataset
from infra.errors import DatasetError
from mmads.datagen import GenerationSummary, generate_dataset
from mmads.datagen import tables as T
from mmads.datagen.simulate import ClickModel, _similarity
from mmads.datagen.vocab import APPEARANCE_DIMS, LATENT_DIM

SCALE = 0.1
SIZE = 16
FILES = ("items.parquet", "behaviors.parquet", "impressions.parquet", "queries.parquet")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    out = tmp_path_factory.mktemp("ds") / "seed0"
    return out, generate_dataset(out, seed=0, scale=SCALE, image_size=SIZE, progress=False)


@pytest.fixture(scope="module")
def frames(generated: tuple[Path, GenerationSummary]) -> dict[str, pd.DataFrame]:
    root = generated[0]
    out = {f.split(".")[0]: pd.read_parquet(root / f) for f in FILES}
    out["truth"] = pd.read_parquet(root / T.TRUTH_DIR / "items_truth.parquet")
    return out


def _unit_latents(truth: pd.DataFrame) -> np.ndarray:
    lat = np.stack(truth["latent"].to_numpy())
    return lat / np.linalg.norm(lat, axis=1, keepdims=True)


def _us(ts: pd.Series) -> np.ndarray:
    return ts.dt.as_unit("us").astype("int64").to_numpy()


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    ranks = pd.Series(score).rank().to_numpy()
    n1 = int(label.sum())
    n0 = len(label) - n1
    return float((ranks[label == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def test_dataset_validates_with_exact_schema(generated: tuple[Path, GenerationSummary]) -> None:
    root, summary = generated
    problems, ds = validate_dataset(root, decode_images=True)
    assert problems == []
    assert ds is not None
    for name, schema in T.DATASET_FILES.items():
        assert pq.read_schema(root / name).remove_metadata() == schema
    assert (summary.items, summary.users) == (400, 200)
    assert (len(ds.items), len(ds.behaviors), len(ds.impressions), len(ds.queries)) == (
        summary.items, summary.behaviors, summary.impressions, summary.queries)
    assert summary.impressions > 3 * summary.users
    with Image.open(root / ds.items["image_path"].iloc[0]) as im:
        assert im.size == (SIZE, SIZE)


def test_truth_side_files(generated: tuple[Path, GenerationSummary], frames: dict[str, pd.DataFrame]) -> None:
    truth = frames["truth"]
    assert list(truth["item_id"]) == list(frames["items"]["item_id"])
    assert np.stack(truth["latent"].to_numpy()).shape == (400, 16)
    assert (truth["category"] == frames["items"]["category"]).all()
    users = pd.read_parquet(generated[0] / T.TRUTH_DIR / "users_truth.parquet")
    assert len(users) == 200
    assert users["interests"].map(len).between(1, 3).all()


def test_same_seed_same_tables(generated: tuple[Path, GenerationSummary], tmp_path: Path) -> None:
    root, _ = generated
    generate_dataset(tmp_path / "again", seed=0, scale=SCALE, image_size=SIZE, progress=False)
    for name in FILES:
        pd.testing.assert_frame_equal(pd.read_parquet(root / name), pd.read_parquet(tmp_path / "again" / name))
    item_img = pd.read_parquet(root / "items.parquet")["image_path"].iloc[5]
    assert (root / item_img).read_bytes() == (tmp_path / "again" / item_img).read_bytes()
    generate_dataset(tmp_path / "other", seed=1, scale=SCALE, images=False, progress=False)
    titles0 = pd.read_parquet(root / "items.parquet")["title"]
    titles1 = pd.read_parquet(tmp_path / "other" / "items.parquet")["title"]
    assert (titles0 != titles1).mean() > 0.9


def test_text_only_mode_matches_apart_from_images(
    generated: tuple[Path, GenerationSummary], tmp_path: Path
) -> None:
    root, summary = generated
    text_only = generate_dataset(tmp_path, seed=0, scale=SCALE, images=False, progress=False)
    problems, ds = validate_dataset(tmp_path)
    assert problems == []
    assert ds is not None
    assert not ds.has_images
    assert ds.queries["query_image_path"].isna().all()
    assert not (tmp_path / T.IMAGE_DIR).exists()
    assert (text_only.impressions, text_only.queries) == (summary.impressions, summary.queries)
    with_images = pd.read_parquet(root / "queries.parquet")
    with_images["ts"] = with_images["ts"].dt.as_unit("ns")  # a loaded dataset holds nanosecond times
    pd.testing.assert_frame_equal(with_images.drop(columns="query_image_path"),
                                  ds.queries.drop(columns="query_image_path"))
    assert 0.2 < with_images["query_image_path"].notna().mean() < 0.4


def test_cold_start_share(generated: tuple[Path, GenerationSummary], frames: dict[str, pd.DataFrame]) -> None:
    _, summary = generated
    items, imp = frames["items"], frames["impressions"]
    cut = time_cut(imp, 0.8)
    assert cut == summary.cut_time
    new = items["created_at"] > cut
    assert 0.15 <= new.mean() <= 0.25
    assert summary.new_item_share == pytest.approx(new.mean())
    test_imp = imp[imp["ts"] > cut]
    new_ids = set(items.loc[new, "item_id"])
    assert imp.loc[imp["ts"] <= cut, "item_id"].isin(new_ids).sum() == 0
    assert test_imp["item_id"].isin(new_ids).mean() > 0.15  # new items get a healthy share of tests


def test_events_never_precede_item_creation(frames: dict[str, pd.DataFrame]) -> None:
    created = frames["items"].set_index("item_id")["created_at"]
    for name in ("behaviors", "impressions", "queries"):
        df = frames[name]
        assert (df["ts"].to_numpy() >= created.loc[df["item_id"]].to_numpy()).all(), name


def test_clicks_follow_similarity_to_recent_behavior(frames: dict[str, pd.DataFrame]) -> None:
    unit = _unit_latents(frames["truth"])
    beh = frames["behaviors"].sort_values("ts", kind="stable")
    history = {u: (_us(g["ts"]), g["item_id"].to_numpy()) for u, g in beh.groupby("user_id")}
    imp = frames["impressions"]
    scores, labels = [], []
    empty = (np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    for user, item, ts, clicked in zip(imp["user_id"], imp["item_id"], _us(imp["ts"]), imp["clicked"],
                                       strict=True):
        times, items = history.get(user, empty)
        n = np.searchsorted(times, ts, side="left")
        if n == 0:
            continue
        mean = unit[items[max(0, n - 30):n] - 1].mean(axis=0)
        scores.append(float(mean @ unit[item - 1]) / float(np.linalg.norm(mean)))
        labels.append(clicked)
    assert len(labels) > 0.9 * len(imp)
    assert _auc(np.array(scores), np.array(labels)) > 0.6
    assert 0.03 < imp["clicked"].mean() < 0.2


def test_clicks_weigh_what_the_picture_shows_over_what_the_item_is_for() -> None:
    appearance = np.zeros(LATENT_DIM, dtype=bool)
    appearance[list(APPEARANCE_DIMS)] = True
    rng = np.random.default_rng(3)
    seen = rng.normal(size=LATENT_DIM)
    looks_alike = np.where(appearance, seen, -seen)  # same picture, opposite function
    works_alike = np.where(appearance, -seen, seen)  # same function, opposite picture
    latents = np.stack([seen, looks_alike, works_alike])
    ads, ad_ts, hist, hist_ts = np.array([1, 2]), np.array([10, 10]), np.array([0]), np.array([5])
    sim = _similarity(ClickModel().click_latents(latents), ads, ad_ts, hist, hist_ts, ClickModel())
    assert sim[0] > 0.3 > -0.3 > sim[1]
    plain = ClickModel(functional_weight=1.0)
    flat = _similarity(plain.click_latents(latents), ads, ad_ts, hist, hist_ts, plain)
    np.testing.assert_allclose(flat, latents[1:] @ seen / np.linalg.norm(latents, axis=1)[1:]
                               / np.linalg.norm(seen))


def test_quality_is_an_id_effect_not_in_content(frames: dict[str, pd.DataFrame]) -> None:
    truth, imp = frames["truth"], frames["impressions"]
    quality = truth["quality"].to_numpy()
    assert _auc(quality[imp["item_id"].to_numpy() - 1], imp["clicked"].to_numpy()) > 0.55
    lat = np.column_stack([np.stack(truth["latent"].to_numpy()), np.ones(len(truth))])
    coef, *_ = np.linalg.lstsq(lat, quality, rcond=None)
    r2 = 1 - np.var(quality - lat @ coef) / np.var(quality)
    assert r2 < 0.12  # 17 regressors on 400 items: chance alone gives ~0.04


def _jaccard(a: str, b: str) -> float:
    x, y = set(a.split()), set(b.split())
    return len(x & y) / len(x | y)


def test_titles_share_words_within_substyle(frames: dict[str, pd.DataFrame]) -> None:
    titles = frames["items"]["title"].to_numpy()
    sub = frames["truth"]["substyle"].to_numpy()
    same = [_jaccard(titles[i], titles[j]) for i, j in itertools.combinations(range(len(titles)), 2)
            if sub[i] == sub[j]]
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(titles), size=(2000, 2))
    rand = [_jaccard(titles[i], titles[j]) for i, j in pairs if i != j]
    assert len(same) > 100
    assert np.mean(same) > 2 * np.mean(rand)
    assert all(2 <= len(t.split()) <= 14 for t in titles)


def test_queries_paraphrase_the_purchased_item(frames: dict[str, pd.DataFrame]) -> None:
    q, items, truth = frames["queries"], frames["items"].set_index("item_id"), frames["truth"]
    titles = items["title"]
    own = np.array([_jaccard(t, titles[i]) for t, i in zip(q["query_text"], q["item_id"], strict=True)])
    rng = np.random.default_rng(0)
    other = np.array([_jaccard(t, titles.iloc[rng.integers(len(titles))]) for t in q["query_text"]])
    assert own.mean() > 2 * other.mean()
    assert (own < 1.0).mean() > 0.9  # paraphrases, not copies
    unit = _unit_latents(truth)
    cats = truth["category"].to_numpy()
    n_clicked = q["clicked_item_ids"].map(len)
    assert n_clicked.between(0, 3).all() and n_clicked.mean() > 0.8
    sims, rand_sims = [], []
    for item, clicked, ts in zip(q["item_id"], q["clicked_item_ids"], q["ts"], strict=True):
        for c in clicked:
            assert c != item and cats[c - 1] == cats[item - 1] and items.loc[c, "created_at"] <= ts
            sims.append(unit[c - 1] @ unit[item - 1])
            rand_sims.append(unit[rng.integers(len(unit))] @ unit[item - 1])
    assert np.mean(sims) > np.mean(rand_sims) + 0.3  # near misses are close in latent


def test_images_render_the_colour_direction(generated: tuple[Path, GenerationSummary],
                                            frames: dict[str, pd.DataFrame]) -> None:
    lat = np.stack(frames["truth"]["latent"].to_numpy())
    angle = np.degrees(np.arctan2(lat[:, 1], lat[:, 0])) % 360
    red = (angle < 15) | (angle > 345)  # the "red" colour group sits at angle 0
    blue = np.abs(angle - 225) < 15  # the "blue" group sits at 225 degrees
    root = generated[0]

    def red_minus_blue(mask: np.ndarray) -> float:
        paths = frames["items"]["image_path"][mask]
        px = [np.asarray(Image.open(root / p), dtype=float)[4:12, 4:12] for p in paths]
        return float(np.mean([p[..., 0].mean() - p[..., 2].mean() for p in px]))

    assert red.sum() >= 5 and blue.sum() >= 5
    assert red_minus_blue(red) > red_minus_blue(blue) + 30


@pytest.mark.parametrize(("scale", "size"), [(0.0, 64), (-1.0, 64), (1.0, 4)])
def test_bad_arguments(tmp_path: Path, scale: float, size: int) -> None:
    with pytest.raises(DatasetError, match="scale must be > 0"):
        generate_dataset(tmp_path, scale=scale, image_size=size, progress=False)


def _mmads(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmads", *args], capture_output=True, text=True, timeout=300)


def test_click_weight_flag_changes_only_the_labels_and_is_recorded(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "default", seed=0, scale=SCALE, images=False, progress=False)
    args = ["data", "generate", "--out", str(tmp_path / "plain"), "--scale", str(SCALE), "--no-images"]
    done = _mmads(*args, "--click-functional-weight", "1")
    assert done.returncode == 0, done.stderr
    default, plain = (pd.read_parquet(tmp_path / d / "impressions.parquet") for d in ("default", "plain"))
    pd.testing.assert_frame_equal(default.drop(columns="clicked"), plain.drop(columns="clicked"))
    assert 0 < (default["clicked"] != plain["clicked"]).mean() < 0.1
    for d, weight in (("default", 0.2), ("plain", 1.0)):
        recorded = json.loads((tmp_path / d / T.TRUTH_DIR / "click_model.json").read_text())
        assert recorded["functional_weight"] == weight and recorded["alpha"] == ClickModel().alpha
    refused = _mmads(*args, "--click-functional-weight", "-0.5")
    assert refused.returncode == 1
    assert "functional_weight must be >= 0, got -0.5" in refused.stderr
