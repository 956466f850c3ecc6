"""Validation of the dataset directory (infra/dataset.py): one test per kind of problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from infra.dataset import load_dataset, time_cut, validate_dataset
from infra.errors import DatasetError

TS = pa.timestamp("us", tz="UTC")
T0 = 1_709_251_200_000_000  # 2024-03-01 UTC in microseconds


def _ts(offsets_s: list[int]) -> pa.Array:
    return pa.array([T0 + s * 1_000_000 for s in offsets_s], type=TS)


def _tables() -> dict[str, pa.Table]:
    return {
        "items.parquet": pa.table({
            "item_id": pa.array([1, 2, 3], pa.int64()),
            "title": ["red linen dress", "blue wool coat", "green mug"],
            "category": ["dress", "jacket", "mug"],
            "image_path": pa.array(["images/1.png", "images/2.png", None], pa.string()),
            "created_at": _ts([0, 10, 20]),
        }),
        "behaviors.parquet": pa.table({
            "user_id": pa.array([7, 7, 8], pa.int64()), "item_id": pa.array([1, 2, 3], pa.int64()),
            "action": ["click", "cart", "purchase"], "ts": _ts([100, 110, 120]),
        }),
        "impressions.parquet": pa.table({
            "user_id": pa.array([7, 8, 8, 7], pa.int64()), "item_id": pa.array([1, 2, 3, 3], pa.int64()),
            "clicked": pa.array([1, 0, 0, 1], pa.int8()), "ts": _ts([130, 140, 150, 160]),
        }),
        "queries.parquet": pa.table({
            "query_text": ["crimson flax gown", "navy merino parka"],
            "query_image_path": pa.array(["images/q0.png", None], pa.string()),
            "item_id": pa.array([1, 2], pa.int64()), "ts": _ts([90, 95]),
            "clicked_item_ids": pa.array([[2], []], pa.list_(pa.int64())),
        }),
    }


def _write(root: Path, tables: dict[str, pa.Table]) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in ("1.png", "2.png", "q0.png"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "images" / name)
    for name, table in tables.items():
        pq.write_table(table, root / name)
    return root


def _replace(tables: dict[str, pa.Table], file: str, column: str, values: pa.Array) -> dict[str, pa.Table]:
    t = tables[file]
    tables[file] = t.set_column(t.schema.get_field_index(column), column, values)
    return tables


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    return _write(tmp_path / "ds", _tables())


def _problems(root: Path) -> list[str]:
    problems, ds = validate_dataset(root)
    assert ds is None
    return problems


def test_valid_dataset_loads(valid: Path) -> None:
    problems, ds = validate_dataset(valid)
    assert problems == []
    assert ds is not None
    assert ds.has_images
    assert list(ds.items["item_id"]) == [1, 2, 3]
    assert ds.image_file("images/1.png") == valid / "images" / "1.png"
    assert ds.image_file(None) is None
    assert len(load_dataset(valid).impressions) == 4


def test_missing_file(valid: Path) -> None:
    (valid / "impressions.parquet").unlink()
    assert _problems(valid) == ["impressions.parquet: missing"]


def test_queries_file_is_optional(valid: Path) -> None:
    (valid / "queries.parquet").unlink()
    problems, ds = validate_dataset(valid)
    assert problems == []
    assert ds is not None
    assert ds.queries.empty


def test_missing_column(tmp_path: Path) -> None:
    tables = _tables()
    tables["items.parquet"] = tables["items.parquet"].drop_columns(["title"])
    problems = _problems(_write(tmp_path, tables))
    assert problems == ["items.parquet: missing columns ['title']"]


def test_unexpected_column(tmp_path: Path) -> None:
    tables = _tables()
    tables["impressions.parquet"] = tables["impressions.parquet"].append_column("price", pa.array([1.0] * 4))
    assert _problems(_write(tmp_path, tables)) == ["impressions.parquet: unexpected columns ['price']"]


def test_wrong_dtype(tmp_path: Path) -> None:
    tables = _replace(_tables(), "behaviors.parquet", "user_id", pa.array(["7", "7", "8"]))
    problems = _problems(_write(tmp_path, tables))
    assert len(problems) == 1
    assert "behaviors.parquet: column 'user_id' must be an integer column" in problems[0]


def test_naive_timestamps(tmp_path: Path) -> None:
    naive = pa.array([T0, T0 + 1, T0 + 2], pa.timestamp("us"))
    problems = _problems(_write(tmp_path, _replace(_tables(), "items.parquet", "created_at", naive)))
    assert len(problems) == 1
    assert "items.parquet: column 'created_at' must be a UTC timestamp" in problems[0]


def test_non_utc_timestamps(tmp_path: Path) -> None:
    paris = pa.array([T0, T0 + 1, T0 + 2], pa.timestamp("us", tz="Europe/Paris"))
    problems = _problems(_write(tmp_path, _replace(_tables(), "behaviors.parquet", "ts", paris)))
    assert problems == ["behaviors.parquet: column 'ts' must be in UTC, found timezone Europe/Paris"]


def test_dangling_item_id(tmp_path: Path) -> None:
    tables = _replace(_tables(), "impressions.parquet", "item_id", pa.array([1, 2, 99, 3], pa.int64()))
    problems = _problems(_write(tmp_path, tables))
    assert len(problems) == 1
    assert "impressions.parquet: item_id refers to unknown items at rows 2" in problems[0]
    assert "[99]" in problems[0]


def test_dangling_clicked_item_id(tmp_path: Path) -> None:
    bad = pa.array([[2, 42], None], pa.list_(pa.int64()))
    problems = _problems(_write(tmp_path, _replace(_tables(), "queries.parquet", "clicked_item_ids", bad)))
    assert problems == ["queries.parquet: clicked_item_ids refer to unknown items [42]"]


def test_clicked_item_ids_not_integers(tmp_path: Path) -> None:
    bad = pa.array([["x"], []], pa.list_(pa.string()))
    problems = _problems(_write(tmp_path, _replace(_tables(), "queries.parquet", "clicked_item_ids", bad)))
    assert len(problems) == 1
    assert "clicked_item_ids must be lists of integer item ids at rows 0" in problems[0]


def test_missing_image(valid: Path) -> None:
    (valid / "images" / "2.png").unlink()
    assert _problems(valid) == ["items.parquet: row 1: image images/2.png does not exist"]


def test_undecodable_image(valid: Path) -> None:
    (valid / "images" / "q0.png").write_bytes(b"not a png at all")
    problems = _problems(valid)
    assert len(problems) == 1
    assert problems[0].startswith("queries.parquet: row 0: image images/q0.png does not decode")
    # existence is always checked, decoding only on request
    assert validate_dataset(valid, decode_images=False)[0] == []


def test_bad_action(tmp_path: Path) -> None:
    tables = _replace(_tables(), "behaviors.parquet", "action", pa.array(["click", "like", "purchase"]))
    problems = _problems(_write(tmp_path, tables))
    assert problems == ["behaviors.parquet: action not one of ['click', 'cart', 'purchase'] at rows 1"]


def test_clicked_not_binary(tmp_path: Path) -> None:
    tables = _replace(_tables(), "impressions.parquet", "clicked", pa.array([1, 2, 0, -1], pa.int8()))
    assert _problems(_write(tmp_path, tables)) == ["impressions.parquet: clicked not 0/1 at rows 1, 3"]


def test_duplicate_item_ids(tmp_path: Path) -> None:
    tables = _replace(_tables(), "items.parquet", "item_id", pa.array([1, 2, 2], pa.int64()))
    problems = _problems(_write(tmp_path, tables))
    assert "items.parquet: duplicate item_id at rows 2" in problems


def test_nulls_in_required_column(tmp_path: Path) -> None:
    tables = _replace(_tables(), "items.parquet", "title", pa.array(["a", None, "c"], pa.string()))
    assert _problems(_write(tmp_path, tables)) == ["items.parquet: column 'title' has nulls at rows 1"]


def test_all_problems_listed_together(tmp_path: Path) -> None:
    """A broken column, a dangling item id and a missing image: all three are reported."""
    tables = _replace(_tables(), "items.parquet", "category", pa.array([1, 2, 3], pa.int64()))
    tables = _replace(tables, "behaviors.parquet", "item_id", pa.array([1, 2, 77], pa.int64()))
    root = _write(tmp_path, tables)
    (root / "images" / "1.png").unlink()
    with pytest.raises(DatasetError, match=r"invalid \(3 problems\)") as err:
        load_dataset(root)
    problems = err.value.problems
    assert any("items.parquet: column 'category' must be a string column" in p for p in problems)
    assert any("behaviors.parquet: item_id refers to unknown items at rows 2" in p for p in problems)
    assert any("items.parquet: row 0: image images/1.png does not exist" in p for p in problems)


def test_not_a_directory(tmp_path: Path) -> None:
    assert validate_dataset(tmp_path / "nope") == ([f"{tmp_path / 'nope'}: not a directory"], None)


def test_time_cut_on_microsecond_timestamps(valid: Path) -> None:
    """Parquet loads timestamps as microseconds; the cut must land inside the data, not in 1970."""
    ds = load_dataset(valid)
    cut = time_cut(ds.impressions, 0.5)
    ts = ds.impressions["ts"]
    assert ts.min() <= cut <= ts.max()
    assert cut == pd.Timestamp(T0 + 145 * 1_000_000, unit="us", tz="UTC")
    explicit = pd.Timestamp("2024-03-02T01:00:00+01:00")
    assert time_cut(ds.impressions, cut_time=explicit) == pd.Timestamp("2024-03-02T00:00:00", tz="UTC")
    assert np.isclose((ts <= cut).mean(), 0.5)
