"""``mmads data import`` (mmads/importer.py): CSV / JSON Lines / Parquet sources into the dataset format."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from infra.dataset import check_dataset
from infra.ids import id_to_int64
from mmads.cli import main
from mmads.importer import CHUNK_ROWS, DataImportError, import_dataset, load_mapping

SHOP = Path(__file__).resolve().parents[2] / "data" / "shop_log"


def test_shipped_shop_log_imports_and_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "import", "--mapping", str(SHOP / "mapping.yaml"), "--out", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "is valid: 160 items" in out
    assert "side features (used unless config data.side_features says otherwise): price (numeric, items), " \
           "brand (categorical, items)" in out
    res = check_dataset(tmp_path / "ds")
    assert res.dataset is not None
    ds = res.dataset
    assert ds.item_key(id_to_int64("P-00001")) == "P-00001"
    assert ds.impressions["ts"].dt.year.unique().tolist() == [1997]
    assert set(ds.behaviors["action"]) == {"click", "cart", "purchase"}
    shown = pd.read_csv(SHOP / "shown.csv")
    assert ds.impressions["clicked"].sum() == (shown["clicks"] > 0).sum()


def _ms(day: str) -> int:
    return int(pd.Timestamp(day, tz="UTC").value // 1_000_000)


def _write_sources(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"sku": [10, 11], "name": ["red mug", "blue mug"], "dept": ["mug", "mug"],
                  "added": ["2200-01-01 10:00", "2200-01-02 10:00"]}).to_parquet(root / "items.parquet")
    with (root / "events.jsonl").open("w") as f:
        for u, i, kind, t in [(1, 10, "click", "2200-01-03T00:00:00Z"), (2, 11, "buy", "2200-01-04T00:00:00Z")]:
            f.write(json.dumps({"uid": u, "sku": i, "kind": kind, "at": t}) + "\n")
    pd.DataFrame({"uid": [1, 2, 1], "sku": [10, 11, 11], "click": [True, False, True],
                  "at": [_ms("2200-01-05"), _ms("2200-01-06"), _ms("2200-01-07")]}).to_csv(root / "shown.csv",
                                                                                         index=False)


def _mapping(root: Path, **items: object) -> dict[str, object]:
    return {
        "items": {"file": "items.parquet", "columns": {"item_id": "sku", "title": "name", "category": "dept",
                                                       "created_at": "added"}, **items},
        "behaviors": {"file": "events.jsonl", "columns": {"user_id": "uid", "item_id": "sku", "action": "kind",
                                                          "ts": "at"}, "values": {"action": {"buy": "purchase"}}},
        "impressions": {"file": "shown.csv", "columns": {"user_id": "uid", "item_id": "sku", "clicked": "click",
                                                         "ts": "at"}, "time_unit": "ms"},
    }


def _load(root: Path, doc: dict[str, object]) -> object:
    path = root / "mapping.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return load_mapping(path, [])


def test_parquet_jsonl_and_csv_with_2200_times_and_integer_ids(tmp_path: Path) -> None:
    _write_sources(tmp_path)
    import_dataset(_load(tmp_path, _mapping(tmp_path)), tmp_path / "ds", progress=False)  # type: ignore[arg-type]
    res = check_dataset(tmp_path / "ds")
    assert res.problems == []
    ds = res.dataset
    assert ds is not None
    assert ds.impressions["item_id"].tolist() == [10, 11, 11] and not ds.item_keys
    assert ds.impressions["clicked"].tolist() == [1, 0, 1]
    assert ds.behaviors["action"].tolist() == ["click", "purchase"]
    assert ds.items["created_at"].iloc[0] == pd.Timestamp("2200-01-01 10:00", tz="UTC")


def test_created_at_from_first_event(tmp_path: Path) -> None:
    _write_sources(tmp_path)
    doc = _mapping(tmp_path)
    doc["items"]["columns"]["created_at"] = "first_event"  # type: ignore[index]
    import_dataset(_load(tmp_path, doc), tmp_path / "ds", progress=False)  # type: ignore[arg-type]
    items = pd.read_parquet(tmp_path / "ds" / "items.parquet")
    assert items["created_at"].tolist() == [pd.Timestamp("2200-01-03", tz="UTC"), pd.Timestamp("2200-01-04", tz="UTC")]


def test_missing_source_column_is_named(tmp_path: Path) -> None:
    _write_sources(tmp_path)
    doc = _mapping(tmp_path)
    doc["items"]["columns"]["title"] = "headline"  # type: ignore[index]
    with pytest.raises(DataImportError, match=r"items.parquet: no column 'headline' \(mapped to items.title\)"):
        import_dataset(_load(tmp_path, doc), tmp_path / "ds", progress=False)  # type: ignore[arg-type]


def test_bad_time_names_file_row_and_value(tmp_path: Path) -> None:
    _write_sources(tmp_path)
    shown = pd.read_csv(tmp_path / "shown.csv", dtype=str)
    shown.loc[2, "at"] = "yesterday"
    shown.to_csv(tmp_path / "shown.csv", index=False)
    with pytest.raises(DataImportError, match=r"shown.csv: column 'ts'.*cannot read times"):
        import_dataset(_load(tmp_path, _mapping(tmp_path)), tmp_path / "ds", progress=False)  # type: ignore[arg-type]


def test_id_type_decided_on_the_first_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmads.importer

    _write_sources(tmp_path)
    monkeypatch.setattr(mmads.importer, "CHUNK_ROWS", 2)
    pd.DataFrame({"uid": [1, 2, "x9"], "sku": [10, 11, 11], "click": [1, 0, 1],
                  "at": [_ms("2200-01-05")] * 3}).to_csv(tmp_path / "shown.csv", index=False)
    with pytest.raises(DataImportError, match=r"shown.csv: row 2: column 'user_id' = 'x9' is not an integer id"):
        import_dataset(_load(tmp_path, _mapping(tmp_path)), tmp_path / "ds", progress=False)  # type: ignore[arg-type]
    assert CHUNK_ROWS == 200_000


def test_cli_map_options_and_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["data", "import", "--out", str(tmp_path / "ds"), "--map", "items.nope"])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --map 'items.nope'") and "Traceback" not in err
    rc = main(["data", "import", "--out", str(tmp_path / "ds"), "--map", "items.file=missing.csv"])
    assert rc == 1
    assert "invalid import mapping: behaviors: Field required" in capsys.readouterr().err


def test_progress_totals_count_the_rows_of_every_format(tmp_path: Path) -> None:
    from mmads.importer import _total_rows

    frame = pd.DataFrame({"a": range(7), "b": ["x"] * 7})
    frame.to_csv(tmp_path / "f.csv", index=False)
    frame.to_json(tmp_path / "f.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "f.parquet")
    (tmp_path / "g.csv").write_text("a,b\n1,x\n2,y")  # no line break after the last row
    assert [_total_rows(tmp_path / n) for n in ("f.csv", "f.jsonl", "f.parquet", "g.csv")] == [7, 7, 7, 2]
    shown = pd.read_csv(SHOP / "shown.csv")
    assert _total_rows(SHOP / "shown.csv") == len(shown)
