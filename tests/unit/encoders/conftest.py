"""A tiny synthetic marketplace (titles from word lists, small PNGs) and one small trained model.

Titles name an item's colour, material and style; queries paraphrase them with synonyms, so the
query -> item mapping is learnable but not a string match. Images are flat colour swatches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from infra.config import MmadsConfig, load_config
from infra.dataset import Dataset

CATEGORIES = ["dress", "sneaker", "lamp", "backpack", "mug", "watch"]
COLOURS = {"red": ("crimson", (200, 30, 30)), "blue": ("navy", (30, 30, 200)),
           "green": ("emerald", (30, 180, 40)), "black": ("ebony", (10, 10, 10)),
           "white": ("ivory", (240, 240, 235))}
MATERIALS = {"leather": "hide", "wooden": "timber", "metal": "steel", "cotton": "fabric"}
STYLES = {"vintage": "retro", "modern": "contemporary", "sporty": "athletic"}
N_ITEMS = 90
N_QUERIES = 500


def _items(rng: np.random.Generator, root: Path, images: bool) -> pd.DataFrame:
    rows = []
    (root / "img").mkdir(parents=True, exist_ok=True)
    for item_id in range(N_ITEMS):
        cat = CATEGORIES[item_id % len(CATEGORIES)]
        colour, material, style = (str(rng.choice(list(d))) for d in (COLOURS, MATERIALS, STYLES))
        path = None
        if images:
            rgb = np.clip(np.array(COLOURS[colour][1]) + rng.normal(0, 20, (16, 16, 3)), 0, 255)
            path = f"img/{item_id}.png"
            Image.fromarray(rgb.astype(np.uint8)).save(root / path)
        rows.append({"item_id": item_id, "title": f"{colour} {material} {style} {cat} no {item_id}",
                     "category": cat, "image_path": path, "colour": colour, "material": material, "style": style,
                     "created_at": pd.Timestamp("2024-01-01", tz="UTC")})
    return pd.DataFrame(rows)


def _queries(rng: np.random.Generator, items: pd.DataFrame) -> pd.DataFrame:
    rows = []
    start = pd.Timestamp("2024-01-01", tz="UTC")
    for q in range(N_QUERIES):
        it = items.iloc[int(rng.integers(len(items)))]
        text = f"{COLOURS[it.colour][0]} {MATERIALS[it.material]} {STYLES[it.style]} {it.category}"
        same_cat = items[(items.category == it.category) & (items.item_id != it.item_id)]
        clicked = [int(v) for v in same_cat.item_id.sample(2, random_state=q)] if q % 2 else []
        rows.append({"query_text": text, "query_image_path": None, "item_id": int(it.item_id),
                     "ts": start + pd.Timedelta(minutes=10 * q), "clicked_item_ids": clicked})
    return pd.DataFrame(rows)


def make_dataset(root: Path, *, images: bool = True, seed: int = 0) -> Dataset:
    """Write images under ``root`` and return the in-memory dataset."""
    rng = np.random.default_rng(seed)
    items = _items(rng, root, images)
    queries = _queries(rng, items)
    items = items[["item_id", "title", "category", "image_path", "created_at"]]
    empty = pd.DataFrame({"user_id": pd.Series(dtype="int64"), "item_id": pd.Series(dtype="int64")})
    return Dataset(root=root, items=items, behaviors=empty, impressions=impressions_at(queries["ts"]),
                   queries=queries)


def impressions_at(ts: pd.Series) -> pd.DataFrame:
    """One impression at each given time: the dataset's time cut is then the quantile of ``ts``."""
    n = len(ts)
    return pd.DataFrame({"user_id": np.ones(n, np.int64), "item_id": np.zeros(n, np.int64),
                         "clicked": np.zeros(n, np.int8), "ts": ts.to_numpy()})


def small_config(**scl: object) -> MmadsConfig:
    base = {"image_size": 32, "batch_size": 32, "queue_size": 128, "epochs": 4, "lr": 3e-3}
    base.update(scl)
    return load_config(env={}).with_overrides(model={"dim": 16, "seed": 0, "scl": base})


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    # one thread: on the shared 2-core machine, 2 OpenMP threads under contention ran 5x slower
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def cfg() -> MmadsConfig:
    return small_config()


@pytest.fixture(scope="session")
def trained_dir(tiny_dataset: Dataset, cfg: MmadsConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from encoders import train_scl

    return train_scl(tiny_dataset, cfg, tmp_path_factory.mktemp("model"), variant="hard", progress=False)
