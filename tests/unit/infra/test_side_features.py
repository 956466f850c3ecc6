"""Side features of a dataset: loading extra columns and users.parquet, discovery, config declaration."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.config import load_config
from infra.dataset import Dataset, load_dataset, validate_dataset
from infra.errors import ConfigError
from infra.side_features import discover_side_features, resolve_side_features, side_values, with_side_features
from tests.unit.infra.test_dataset import _tables, _write


def _with_side(root: Path, users: pa.Table | None = None, **item_columns: pa.Array) -> Path:
    tables = _tables()
    items = tables["items.parquet"]
    for name, values in item_columns.items():
        items = items.append_column(name, values)
    tables["items.parquet"] = items
    if users is not None:
        tables["users.parquet"] = users
    return _write(root, tables)


def _users(**columns: pa.Array) -> pa.Table:
    return pa.table({"user_id": pa.array([7, 8], pa.int64()), **columns})


@pytest.fixture
def side_ds(tmp_path: Path) -> Dataset:
    root = _with_side(
        tmp_path / "ds",
        users=_users(age_bucket=pa.array(["18-24", None]), city=pa.array(["oslo", "rome"])),
        price=pa.array([9.5, None, 3.0]), brand=pa.array(["acme", "acme", None]),
        shop_id=pa.array([3, 4, 3], pa.int64()), n_reviews=pa.array([1, 5, 0], pa.int32()),
        launched=pa.array([0, 1, 2], pa.timestamp("us", tz="UTC")),
    )
    return load_dataset(root)


def test_extra_item_columns_and_users_file_load(side_ds: Dataset) -> None:
    assert {"price", "brand", "shop_id"} <= set(side_ds.items.columns)
    assert side_ds.users is not None
    assert side_ds.users["city"].tolist() == ["oslo", "rome"]


def test_a_dataset_without_side_files_has_no_users_and_no_side_features(tmp_path: Path) -> None:
    ds = load_dataset(_write(tmp_path / "ds", _tables()))
    assert ds.users is None
    assert discover_side_features(ds) == ()
    cfg = load_config(env={})
    assert resolve_side_features(cfg, ds) == ()


def test_discovery_infers_kinds_and_skips_other_types(side_ds: Dataset) -> None:
    found = {(s.name, s.kind, s.source) for s in discover_side_features(side_ds)}
    assert found == {
        ("price", "numeric", "items"), ("brand", "categorical", "items"), ("shop_id", "categorical", "items"),
        ("n_reviews", "numeric", "items"), ("age_bucket", "categorical", "users"), ("city", "categorical", "users"),
    }  # the timestamp column "launched" is not a side feature


def test_declared_side_features_are_used_as_declared(side_ds: Dataset) -> None:
    cfg = load_config(env={}).with_overrides(data={"side_features": [
        {"name": "n_reviews", "kind": "categorical", "source": "items"},
        {"name": "city", "kind": "categorical", "source": "users"},
    ]})
    specs = resolve_side_features(cfg, side_ds)
    assert [(s.name, s.kind) for s in specs] == [("n_reviews", "categorical"), ("city", "categorical")]
    assert with_side_features(load_config(env={}), specs).data.side_features == specs
    none = load_config(env={}).with_overrides(data={"side_features": []})
    assert resolve_side_features(none, side_ds) == ()


@pytest.mark.parametrize(("declared", "message"), [
    ({"name": "colour", "kind": "categorical", "source": "items"}, "colour: no such column in items.parquet"),
    ({"name": "price", "kind": "numeric", "source": "users"}, "price: no such column in users.parquet"),
    ({"name": "brand", "kind": "numeric", "source": "items"}, "brand: declared numeric"),
])
def test_declared_side_features_must_fit_the_dataset(side_ds: Dataset, declared: dict, message: str) -> None:
    cfg = load_config(env={}).with_overrides(data={"side_features": [declared]})
    with pytest.raises(ConfigError, match=message):
        resolve_side_features(cfg, side_ds)


@pytest.mark.parametrize(("declared", "message"), [
    ([{"name": "brand", "kind": "text", "source": "items"}], "side_features.0.kind"),
    ([{"name": "brand", "kind": "numeric", "source": "items", "weight": 2}], "side_features.0.weight"),
    ([{"name": "b", "kind": "numeric", "source": "items"}, {"name": "b", "kind": "numeric", "source": "users"}],
     "unique"),
])
def test_bad_side_feature_config_is_an_error_naming_the_key(declared: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={}).with_overrides(data={"side_features": declared})


def test_reserved_names_and_names_in_both_files_are_refused(tmp_path: Path) -> None:
    ds = load_dataset(_with_side(tmp_path / "a", users=_users(brand=pa.array(["x", "y"])),
                                 brand=pa.array(["p", "q", "r"])))
    with pytest.raises(ConfigError, match="appear in both"):
        discover_side_features(ds)
    ds = load_dataset(_with_side(tmp_path / "b", users=_users(hist_len=pa.array([1.0, 2.0]))))
    with pytest.raises(ConfigError, match="platform's own columns.*hist_len"):
        discover_side_features(ds)


def test_users_file_needs_a_unique_integer_user_id(tmp_path: Path) -> None:
    root = _with_side(tmp_path / "ds", users=pa.table({"user_id": pa.array([7, 7], pa.int64()),
                                                       "city": ["a", "b"]}))
    problems, _ = validate_dataset(root)
    assert problems == ["users.parquet: duplicate user_id at rows 1"]
    pq.write_table(pa.table({"uid": [1], "city": ["a"]}), root / "users.parquet")
    problems, _ = validate_dataset(root)
    assert problems == ["users.parquet: missing columns ['user_id']"]


def test_side_values_store_labels_as_strings_and_numbers_as_floats(side_ds: Dataset) -> None:
    specs = discover_side_features(side_ds)
    items = side_values([s for s in specs if s.source == "items"], side_ds.items)
    assert items["shop_id"].tolist() == ["3", "4", "3"]
    assert items["brand"].tolist() == ["acme", "acme", None]
    assert items["n_reviews"].dtype == "float64"
