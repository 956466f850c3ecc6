import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from infra.dataset import Dataset
from infra.errors import InvalidEventError
from infra.ids import id_to_int64
from streaming.dlq import DeadLetter, parse_dead_letter
from streaming.events import BehaviorEvent, ImpressionEvent, ItemEvent, dataset_events, iso_utc, parse_event

ITEM = {"item_id": 7, "title": "red wool scarf", "category": "c1", "image_uri": "file:///tmp/a%20b.png",
        "created_at": "2024-05-01T12:00:00.250000Z"}
BEHAVIOR = {"user_id": 3, "item_id": 7, "action": "cart", "ts": "2024-05-01T12:00:01Z"}


def _raw(d: dict) -> bytes:
    return json.dumps(d).encode()


def test_valid_events_parse_with_utc_times() -> None:
    item = parse_event("items", _raw(ITEM))
    assert isinstance(item, ItemEvent)
    assert item.item_id == 7 and item.key() == 7
    assert item.created_at == pd.Timestamp("2024-05-01T12:00:00.25Z")
    assert item.image_path() == "/tmp/a b.png"
    beh = parse_event("behaviors", _raw(BEHAVIOR))
    assert isinstance(beh, BehaviorEvent) and beh.key() == 3 and beh.action == "cart"
    imp_raw = {"user_id": 1, "item_id": 2, "clicked": 1, "ts": "2024-05-01T00:00:00+02:00"}
    imp = parse_event("impressions", _raw(imp_raw))
    assert isinstance(imp, ImpressionEvent)
    assert imp.ts == pd.Timestamp("2024-04-30T22:00:00Z")


def test_extra_fields_are_ignored() -> None:
    assert parse_event("behaviors", _raw({**BEHAVIOR, "session": "x"})).item_id == 7  # type: ignore[union-attr]


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty message value"),
    (b"{not json", "bad JSON"),
    (b"[1, 2]", "not a JSON object"),
    (_raw({k: v for k, v in BEHAVIOR.items() if k != "ts"}), "missing field 'ts'"),
    (_raw({**BEHAVIOR, "item_id": 7.0}), "field 'item_id'"),
    (_raw({**BEHAVIOR, "item_id": ""}), "field 'item_id' = '': invalid id ''"),
    (_raw({**BEHAVIOR, "user_id": True}), "field 'user_id'"),
    (_raw({**BEHAVIOR, "user_id": -1}), "field 'user_id'"),
    (_raw({**BEHAVIOR, "action": "view"}), "field 'action'"),
    (_raw({**BEHAVIOR, "ts": "1600-01-01T00:00:00Z"}), "outside what nanosecond time holds"),
    (_raw({**BEHAVIOR, "ts": "9999-01-01T00:00:00Z"}), "outside what nanosecond time holds"),
    (_raw({**BEHAVIOR, "ts": "2024-05-01T12:00:00"}), "timezone"),
    (_raw({**BEHAVIOR, "ts": 1714560000}), "field 'ts'"),
])
def test_bad_behaviors_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEventError, match=reason) as info:
        parse_event("behaviors", raw)
    assert info.value.raw == raw


@pytest.mark.parametrize("ts", ["1970-01-01T00:00:00Z", "1995-06-01T08:00:00Z", "2200-01-01T00:00:00Z"])
def test_any_nanosecond_time_is_valid(ts: str) -> None:
    beh = parse_event("behaviors", _raw({**BEHAVIOR, "ts": ts}))
    assert beh.ts == pd.Timestamp(ts)  # type: ignore[union-attr]


def test_plausible_window_applies_when_given() -> None:
    window = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    raw = _raw({**BEHAVIOR, "ts": "1995-06-01T08:00:00Z"})
    with pytest.raises(InvalidEventError, match="outside the plausible window"):
        parse_event("behaviors", raw, window)
    assert parse_event("behaviors", _raw(BEHAVIOR), window).user_id == 3  # type: ignore[union-attr]


def test_string_ids_map_like_the_dataset() -> None:
    beh = parse_event("behaviors", _raw({**BEHAVIOR, "user_id": "user-3", "item_id": "7"}))
    assert beh.user_id == id_to_int64("user-3") and beh.item_id == 7  # type: ignore[union-attr]
    item = parse_event("items", _raw({**ITEM, "item_id": "B007", "price": 9.5, "brand": "acme"}))
    assert isinstance(item, ItemEvent)
    assert item.item_id == id_to_int64("B007") and item.spelling() == "B007"
    assert item.side_features == {"price": 9.5, "brand": "acme"}
    assert parse_event("items", _raw(ITEM)).spelling() == 7  # type: ignore[union-attr]


def test_item_title_must_be_a_string() -> None:
    with pytest.raises(InvalidEventError, match="field 'title'"):
        parse_event("items", _raw({**ITEM, "title": 5}))


def test_impression_clicked_must_be_0_or_1() -> None:
    with pytest.raises(InvalidEventError, match="field 'clicked'"):
        parse_event("impressions", _raw({"user_id": 1, "item_id": 2, "clicked": 2, "ts": "2024-05-01T00:00:00Z"}))


def _dataset(tmp_path: Path) -> Dataset:
    ts = pd.to_datetime(["2024-01-03", "2024-01-01", "2024-01-02"], utc=True)
    items = pd.DataFrame({"item_id": [10, 11, 12], "title": ["a", "b", "c"], "category": ["x", "y", "x"],
                          "image_path": ["img/10.png", None, None], "created_at": ts})
    beh = pd.DataFrame({"user_id": [5, 6, 5], "item_id": [10, 11, 12], "action": ["click", "cart", "purchase"],
                        "ts": ts})
    imp = pd.DataFrame({"user_id": [5, 6, 5], "item_id": [10, 11, 12], "clicked": pd.array([1, 0, 1], "int8"),
                        "ts": ts})
    return Dataset(root=tmp_path, items=items, behaviors=beh, impressions=imp, queries=pd.DataFrame())


def test_dataset_events_are_time_ordered_keyed_and_round_trip(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    items = list(dataset_events(ds, "items"))
    assert [json.loads(v)["item_id"] for _, _, v in items] == [11, 12, 10]
    assert [k for _, k, _ in items] == [b"11", b"12", b"10"]
    last = parse_event("items", items[-1][2])
    assert isinstance(last, ItemEvent)
    assert last.image_path() == str((tmp_path / "img/10.png").resolve())
    assert last.created_at == ds.items["created_at"].iloc[0]
    beh = list(dataset_events(ds, "behaviors"))
    assert [k for _, k, _ in beh] == [b"6", b"5", b"5"]
    parsed = [parse_event("behaviors", v) for _, _, v in beh]
    assert [p.item_id for p in parsed] == [11, 12, 10]
    imp = [parse_event("impressions", v) for _, _, v in dataset_events(ds, "impressions")]
    assert [p.clicked for p in imp] == [0, 1, 1]  # type: ignore[union-attr]


def test_dataset_events_carry_string_ids_and_side_features(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    items = ds.items.assign(item_id=[id_to_int64(f"B{i}") for i in ds.items["item_id"]], price=[1.5, None, 3.0])
    beh = ds.behaviors.assign(item_id=items["item_id"].to_numpy(), user_id=[id_to_int64("u5"), 6, id_to_int64("u5")])
    ds = Dataset(root=tmp_path, items=items, behaviors=beh, impressions=ds.impressions, queries=pd.DataFrame(),
                 item_keys={id_to_int64(f"B{i}"): f"B{i}" for i in (10, 11, 12)}, user_keys={id_to_int64("u5"): "u5"})
    values = [json.loads(v) for _, _, v in dataset_events(ds, "items")]
    assert [(v["item_id"], v["price"]) for v in values] == [("B11", None), ("B12", 3.0), ("B10", 1.5)]
    keyed = [(k, json.loads(v)) for _, k, v in dataset_events(ds, "behaviors")]
    assert [(k, v["user_id"], v["item_id"]) for k, v in keyed] == [(b"6", 6, "B11"), (b"u5", "u5", "B12"),
                                                                  (b"u5", "u5", "B10")]
    parsed = parse_event("behaviors", json.dumps(keyed[1][1]).encode())
    assert parsed.user_id == id_to_int64("u5") and parsed.item_id == id_to_int64("B12")  # type: ignore[union-attr]


def test_iso_utc_formats_naive_and_aware() -> None:
    assert iso_utc(pd.Timestamp("2024-01-01 00:00:01.5")) == "2024-01-01T00:00:01.500000Z"
    assert iso_utc(pd.Timestamp("2024-01-01 02:00", tz="Europe/Berlin")) == "2024-01-01T01:00:00.000000Z"


class _Rec:
    topic, partition, offset, key, timestamp = "items", 2, 17, b"42", 1_714_560_000_000

    def __init__(self, value: bytes) -> None:
        self.value = value


def test_dead_letter_keeps_exact_bytes_and_metadata() -> None:
    raw = b"\xff\xfe not utf-8"
    doc = parse_dead_letter(DeadLetter.of(_Rec(raw), "bad JSON: x").to_json())
    assert doc["original_bytes"] == raw
    assert doc["original"] is None
    assert (doc["topic"], doc["partition"], doc["offset"], doc["key"]) == ("items", 2, 17, "42")
    assert doc["error"] == "bad JSON: x"
    text = parse_dead_letter(DeadLetter.of(_Rec(b'{"a":1}'), "missing").to_json())
    assert text["original"] == '{"a":1}'


@pytest.mark.parametrize("ts", [
    "1677-09-21T00:12:43.145225Z", "1677-09-21T00:12:43.145224Z", "1678-01-01T00:00:00Z",  # the edges
    "2261-12-31T23:59:59.999999Z", "2262-04-11T23:47:16.854775Z", "2262-04-11T23:47:16.854776Z",
    "2024-05-01T12:00:00+02:00", "2024-05-01T12:00:00-00:00", "2024-05-01T12:00:00+00:00",
    "2099-12-31T23:59:59.999999Z", "2100-01-01T00:00:00Z",
])
@pytest.mark.parametrize("kind", ["behaviors", "impressions", "items"])
def test_the_fast_path_agrees_with_the_checked_schema(ts: str, kind: str) -> None:
    """parse_event's inline time check accepts exactly what the schema with the time validator accepts."""
    from streaming.events import _CHECKED, TIME_FIELDS

    base = {"behaviors": BEHAVIOR, "impressions": {"user_id": 1, "item_id": 2, "clicked": 0, "ts": ""},
            "items": ITEM}[kind]
    raw = _raw({**base, TIME_FIELDS[kind]: ts})  # type: ignore[index]
    for window in (None, (datetime(1990, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))):
        try:
            want = _CHECKED[kind].model_validate_json(raw, context={"window": window})  # type: ignore[index]
        except ValueError:
            with pytest.raises(InvalidEventError):
                parse_event(kind, raw, window)  # type: ignore[arg-type]
            continue
        got = parse_event(kind, raw, window)  # type: ignore[arg-type]
        assert isinstance(got, type(want).__mro__[1]) and got.model_dump() == want.model_dump()
        assert getattr(got, TIME_FIELDS[kind]).utcoffset() == pd.Timedelta(0)  # type: ignore[index]
