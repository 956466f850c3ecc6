"""A dataset with side features derived from a generated one (for tests and demonstrations).

The generator's columns and labels are left exactly as they are; the copy gains item columns
``brand`` (categorical: the category and a slice of the id), ``shop_id`` (categorical, an integer
id), ``price`` (numeric, log-normal around a per-category level) and a ``users.parquet`` with
``age_bucket`` and ``city`` for most users (a few have none, as in real logs). Clicks do not depend
on any of them: ``brand`` and ``price`` carry only what the category already says, so they test the
plumbing, not a model's gain.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
CITIES = ("oslo", "rome", "lima", "pune", "kyiv", "nagoya")
USERS_WITHOUT_ATTRIBUTES = 0.05


def derive_side_features(src: Path, dst: Path, *, seed: int = 0) -> Path:
    """Copy the dataset ``src`` to ``dst`` and add item side columns and ``users.parquet``.

    Args:
        src: a dataset directory (e.g. written by :func:`~mmads.datagen.generate_dataset`).
        dst: the new dataset directory (created; files of the same name are replaced).
        seed: the seed of the derived values.

    Returns:
        ``dst``.
    """
    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    rng = np.random.default_rng(seed)
    items = pd.read_parquet(dst / "items.parquet")
    cats = sorted(items["category"].unique())
    level = dict(zip(cats, rng.uniform(2.0, 5.0, len(cats)), strict=True))
    ids = items["item_id"].to_numpy(np.int64)
    items["brand"] = [f"{c}-b{i % 3}" for c, i in zip(items["category"], ids, strict=True)]
    items["shop_id"] = (ids * 7919 % 23).astype(np.int64)
    items["price"] = np.round(np.exp(items["category"].map(level).to_numpy() + rng.normal(0, 0.4, len(items))), 2)
    items.to_parquet(dst / "items.parquet", index=False)
    seen = [pd.read_parquet(dst / f, columns=["user_id"])["user_id"] for f in ("impressions.parquet",
                                                                               "behaviors.parquet")]
    users = np.unique(np.concatenate([s.to_numpy(np.int64) for s in seen]))
    users = users[rng.random(len(users)) >= USERS_WITHOUT_ATTRIBUTES]
    pd.DataFrame({
        "user_id": users,
        "age_bucket": rng.choice(AGE_BUCKETS, len(users)),
        "city": rng.choice(CITIES, len(users)),
    }).to_parquet(dst / "users.parquet", index=False)
    return dst
