"""A generated dataset reshaped like a public interaction log, for the end-to-end tests.

What such logs look like (and what broke a new user's first run): string ids, text-only items (no
``image_path`` column), no query pairs, extra item columns (side features) and timestamps from the
late 1990s. :func:`reshape` derives one from a generated dataset, so the run's checks (counts,
parity, serving = offline) still have a known-good answer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

YEARS_BACK = 30  # 2024 -> 1994


def _shift(ts: pd.Series, years: int) -> pd.Series:
    return (ts + pd.DateOffset(years=years)).dt.tz_convert("UTC")


def reshape(src: Path, dst: Path, *, years: int = -YEARS_BACK, seed: int = 0) -> Path:
    """Write ``dst``: ``src`` with string ids, no images, no queries, side features, moved ``years``.

    Item ids become ``"B000123"``-style strings, user ids ``"u-17"``; items gain ``price`` (float,
    some null) and ``brand`` (string). Returns ``dst``.
    """
    rng = np.random.default_rng(seed)
    dst.mkdir(parents=True, exist_ok=True)
    items = pd.read_parquet(src / "items.parquet").drop(columns=["image_path"])
    item_key = {int(i): f"B{int(i):06d}" for i in items["item_id"]}
    items["item_id"] = items["item_id"].map(item_key)
    items["created_at"] = _shift(items["created_at"], years)
    price = rng.gamma(2.0, 20.0, len(items)).round(2)
    items["price"] = np.where(rng.random(len(items)) < 0.1, np.nan, price)
    items["brand"] = rng.choice(["acme", "globex", "initech", "umbrella"], len(items))
    items.to_parquet(dst / "items.parquet", index=False)
    for name in ("behaviors", "impressions"):
        df = pd.read_parquet(src / f"{name}.parquet")
        df["item_id"] = df["item_id"].map(item_key)
        df["user_id"] = "u-" + df["user_id"].astype(str)
        df["ts"] = _shift(df["ts"], years)
        df.to_parquet(dst / f"{name}.parquet", index=False)
    if (dst / "images").exists():
        shutil.rmtree(dst / "images")
    return dst
