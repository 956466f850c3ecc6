"""Validation of the dataset directory (infra/dataset.py): one test per kind of problem."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from infra.dataset import check_dataset, load_dataset, time_cut, validate_dataset
from infra.errors import DatasetError
from infra.ids import STRING_ID_BASE, id_to_int64

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


def test_extra_event_column_is_ignored_with_a_note(tmp_path: Path) -> None:
    tables = _tables()
    tables["impressions.parquet"] = tables["impressions.parquet"].append_column("price", pa.array([1.0] * 4))
    res = check_dataset(_write(tmp_path, tables))
    assert res.problems == []
    assert "impressions.parquet: columns ['price'] are not part of the format and are ignored" in res.notes


def test_wrong_id_dtype(tmp_path: Path) -> None:
    tables = _replace(_tables(), "behaviors.parquet", "user_id", pa.array([7.0, 7.0, 8.0]))
    problems = _problems(_write(tmp_path, tables))
    assert len(problems) == 1
    assert "behaviors.parquet: column 'user_id' must hold integer or string ids, found float64" in problems[0]


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
    assert "['99']" in problems[0]


def test_dangling_clicked_item_id(tmp_path: Path) -> None:
    bad = pa.array([[2, 42], None], pa.list_(pa.int64()))
    problems = _problems(_write(tmp_path, _replace(_tables(), "queries.parquet", "clicked_item_ids", bad)))
    assert problems == ["queries.parquet: clicked_item_ids refer to unknown items [42]"]


def test_clicked_item_ids_not_ids(tmp_path: Path) -> None:
    bad = pa.array([[""], []], pa.list_(pa.string()))
    problems = _problems(_write(tmp_path, _replace(_tables(), "queries.parquet", "clicked_item_ids", bad)))
    assert len(problems) == 1
    assert "clicked_item_ids must be lists of item ids (integers or strings) at rows 0" in problems[0]


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
    assert problems == ["behaviors.parquet: action not one of ['click', 'cart', 'purchase'] at rows 1 (first 'like')"]


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


def _ts_at(iso: list[str]) -> pa.Array:
    micros = [int(np.datetime64(t, "us").astype(np.int64)) for t in iso]
    return pa.array(micros, pa.timestamp("us", tz="UTC"))


def _shift(tables: dict[str, pa.Table], years: int) -> dict[str, pa.Table]:
    """Every timestamp moved by whole years (order kept)."""
    delta = pd.DateOffset(years=years)
    for file, t in tables.items():
        for col in ("created_at", "ts"):
            if col in t.column_names:
                moved = (t.column(col).to_pandas() + delta).dt.tz_convert("UTC")
                tables[file] = t.set_column(t.schema.get_field_index(col), col,
                                            pa.array(moved, pa.timestamp("us", tz="UTC")))
    return tables


@pytest.mark.parametrize("years", [-54, 176])  # 1970 and 2200
def test_any_nanosecond_time_is_valid(tmp_path: Path, years: int) -> None:
    ds = load_dataset(_write(tmp_path, _shift(_tables(), years)))
    assert ds.impressions["ts"].dt.year.iloc[0] == 2024 + years
    assert str(ds.impressions["ts"].dtype) == "datetime64[ns, UTC]"


def test_time_outside_nanosecond_range(tmp_path: Path) -> None:
    tables = _replace(_tables(), "behaviors.parquet", "ts", _ts_at(["1600-01-01", "2024-03-01", "2024-03-01"]))
    problems = _problems(_write(tmp_path, tables))
    assert len(problems) == 1
    assert problems[0].startswith("behaviors.parquet: column 'ts' at rows 0: timestamp 1600-01-01")
    assert "outside what nanosecond time holds" in problems[0]


def test_plausible_window_is_off_by_default_and_applied_when_set(tmp_path: Path) -> None:
    root = _write(tmp_path, _shift(_tables(), -30))  # the 1990s
    assert validate_dataset(root)[0] == []
    window = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    problems = _problems_with(root, window=window)
    assert any("outside the plausible window" in p and p.startswith("impressions.parquet: column 'ts'")
               for p in problems)


def _problems_with(root: Path, **kwargs: object) -> list[str]:
    res = check_dataset(root, **kwargs)  # type: ignore[arg-type]
    assert res.dataset is None
    return res.problems


def _string_ids(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    names = {1: "B001", 2: "B002", 3: "B003"}
    for file in ("items.parquet", "behaviors.parquet", "impressions.parquet", "queries.parquet"):
        ids = [names[i] for i in tables[file].column("item_id").to_pylist()]
        tables = _replace(tables, file, "item_id", pa.array(ids))
    for file in ("behaviors.parquet", "impressions.parquet"):
        ids = [f"user-{u}" for u in tables[file].column("user_id").to_pylist()]
        tables = _replace(tables, file, "user_id", pa.array(ids))
    return _replace(tables, "queries.parquet", "clicked_item_ids", pa.array([["B002"], []], pa.list_(pa.string())))


def test_string_ids_map_to_int64_everywhere(tmp_path: Path) -> None:
    ds = load_dataset(_write(tmp_path, _string_ids(_tables())))
    b1 = id_to_int64("B001")
    assert b1 >= STRING_ID_BASE
    assert ds.items["item_id"].tolist() == [b1, id_to_int64("B002"), id_to_int64("B003")]
    assert ds.impressions["item_id"].dtype == np.int64 and ds.impressions["user_id"].dtype == np.int64
    assert set(ds.impressions["user_id"]) == {id_to_int64("user-7"), id_to_int64("user-8")}
    assert ds.queries["clicked_item_ids"].iloc[0] == [id_to_int64("B002")]
    assert ds.item_key(b1) == "B001" and ds.user_key(id_to_int64("user-7")) == "user-7"


def test_string_id_collision_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import infra.ids

    real = infra.ids.hash_string_id
    monkeypatch.setattr(infra.ids, "hash_string_id", lambda s: real("B001") if s in ("B001", "B002") else real(s))
    problems = _problems(_write(tmp_path, _string_ids(_tables())))
    assert any("item ids ['B001', 'B002'] all map to int64" in p for p in problems)


def test_string_colliding_with_integer_id_is_refused(tmp_path: Path) -> None:
    tables = _tables()
    clash = id_to_int64("user-x")
    tables = _replace(tables, "behaviors.parquet", "user_id", pa.array([clash, 7, 8], pa.int64()))
    tables = _replace(tables, "impressions.parquet", "user_id", pa.array(["user-x", "8", "8", "7"]))
    problems = _problems(_write(tmp_path, tables))
    assert problems == [f"user id 'user-x' maps to int64 {clash}, which is also an integer user id (id collision)"]


def test_canonical_decimal_strings_are_the_integers(tmp_path: Path) -> None:
    tables = _replace(_tables(), "impressions.parquet", "user_id", pa.array(["7", "8", "8", "7"]))
    ds = load_dataset(_write(tmp_path, tables))
    assert ds.impressions["user_id"].tolist() == [7, 8, 8, 7]


def test_empty_string_id_is_refused(tmp_path: Path) -> None:
    tables = _replace(_tables(), "impressions.parquet", "user_id", pa.array(["7", "", "8", "7"]))
    problems = _problems(_write(tmp_path, tables))
    assert problems == ["impressions.parquet: column 'user_id' holds invalid ids at rows 1: "
                        "invalid id '': an id cannot be the empty string"]


def test_side_features_are_accepted_and_listed(tmp_path: Path) -> None:
    tables = _tables()
    tables["items.parquet"] = tables["items.parquet"].append_column("price", pa.array([9.5, None, 3.0]))
    tables["items.parquet"] = tables["items.parquet"].append_column("brand", pa.array(["a", "b", None]))
    tables["users.parquet"] = pa.table({"user_id": pa.array([7], pa.int64()), "age": pa.array([31], pa.int64())})
    res = check_dataset(_write(tmp_path, tables))
    assert res.problems == []
    assert res.side_features == {"items.parquet": {"price": "numeric", "brand": "string"},
                                 "users.parquet": {"age": "numeric"}}
    assert res.dataset is not None
    assert res.dataset.item_side_columns == ["price", "brand"]
    assert res.dataset.users is not None and res.dataset.users["age"].tolist() == [31]
    assert any("users.parquet: 1 users of the events have no row" in n for n in res.notes)


def test_side_column_of_another_type_is_noted_and_ignored(tmp_path: Path) -> None:
    tables = _tables()
    tables["items.parquet"] = tables["items.parquet"].append_column(
        "tags", pa.array([["a"], [], None], pa.list_(pa.string())))
    res = check_dataset(_write(tmp_path, tables))
    assert res.problems == [] and res.side_features == {"items.parquet": {}}
    assert ("items.parquet: column 'tags' (object) is neither numeric nor string: not a side feature, ignored"
            in res.notes)


def test_no_users_file_means_users_is_none(valid: Path) -> None:
    assert load_dataset(valid).users is None


def test_image_path_may_be_absent(tmp_path: Path) -> None:
    tables = _tables()
    tables["items.parquet"] = tables["items.parquet"].drop_columns(["image_path"])
    res = check_dataset(_write(tmp_path, tables))
    assert res.problems == []
    assert res.dataset is not None and not res.dataset.has_images
    assert res.dataset.items["image_path"].isna().all()
    assert "no images: text-only items, the image tower is skipped" in res.notes


def test_no_queries_is_noted(valid: Path) -> None:
    (valid / "queries.parquet").unlink()
    res = check_dataset(valid)
    assert res.dataset is not None and not res.dataset.has_queries
    assert any(n.startswith("no query pairs (queries.parquet): SCL trains nothing") for n in res.notes)


@pytest.mark.parametrize("file", ["behaviors.parquet", "impressions.parquet"])
def test_events_before_their_item_exists(tmp_path: Path, file: str) -> None:
    tables = _tables()
    late = _ts([1000, 10, 20])  # item 1 created after every event
    tables = _replace(tables, "items.parquet", "created_at", late)
    problems = _problems(_write(tmp_path, tables))
    assert any(p.startswith(f"{file}: ") and "dated before their item's created_at" in p for p in problems)
    assert any("first: item 1 at" in p for p in problems)


def test_duplicate_users_are_refused(tmp_path: Path) -> None:
    tables = _tables()
    tables["users.parquet"] = pa.table({"user_id": pa.array(["7", "u8", "u8"]), "age": pa.array([1, 2, 3])})
    problems = _problems(_write(tmp_path, tables))
    assert problems == ["users.parquet: duplicate user_id at rows 2"]
