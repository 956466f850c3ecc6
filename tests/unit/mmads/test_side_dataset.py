"""A generated dataset with derived side features: valid, discoverable, the generator's tables untouched."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from infra.dataset import load_dataset
from infra.side_features import discover_side_features
from mmads.cli import main
from mmads.datagen import generate_dataset
from mmads.datagen.side_features import derive_side_features


def test_derived_dataset_loads_with_discoverable_side_features(tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    generate_dataset(src, seed=0, scale=0.02, images=False, progress=False)
    assert main(["data", "validate", str(src), "--no-decode"]) == 0
    assert capsys.readouterr().out.strip().endswith("side features (used unless config data.side_features "
                                                    "says otherwise): none")
    ds = load_dataset(derive_side_features(src, tmp_path / "side", seed=0))
    assert main(["data", "validate", str(ds.root), "--no-decode"]) == 0
    assert "brand (categorical, items), shop_id (categorical, items), price (numeric, items), " \
        "age_bucket (categorical, users), city (categorical, users)" in capsys.readouterr().out
    found = {(s.name, s.kind, s.source) for s in discover_side_features(ds)}
    assert found == {("brand", "categorical", "items"), ("shop_id", "categorical", "items"),
                     ("price", "numeric", "items"), ("age_bucket", "categorical", "users"),
                     ("city", "categorical", "users")}
    before = load_dataset(src)
    pd.testing.assert_frame_equal(ds.items[before.items.columns], before.items)
    pd.testing.assert_frame_equal(ds.impressions, before.impressions)  # the labels are the generator's
    assert ds.users is not None
    assert 0 < len(ds.users) < ds.impressions["user_id"].nunique() + 1
    assert ds.users["user_id"].isin(ds.impressions["user_id"]).mean() > 0.5
