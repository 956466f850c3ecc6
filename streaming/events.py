"""Event schemas of the three input topics (docs/events.md) and their (de)serialisation.

Values are JSON objects; the Kafka key is the entity id as the dataset writes it (``item_id`` for
``items``, ``user_id`` for ``behaviors`` and ``impressions``). Ids may be JSON integers or strings
(:func:`infra.ids.id_to_int64` maps them); times follow :mod:`infra.contract` (any UTC instant that
nanosecond time holds, plus ``data.plausible_time_window`` when set). Parsing is strict otherwise: a
float or boolean id, a missing field, an unknown action, a naive timestamp are all
:class:`~infra.errors.InvalidEventError` with a one-line ``reason`` that the dead-letter record
carries. Extra fields of item events are side features (kept in ``model_extra``); extra fields of
behavior and impression events are ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from infra.contract import MAX_TIME, MIN_TIME, RESERVED_ITEM_FIELDS, TimeWindow, check_time
from infra.dataset import Dataset
from infra.errors import InvalidEventError
from infra.ids import InvalidIdError, id_to_int64

TopicKind = Literal["items", "behaviors", "impressions"]
TOPIC_KINDS: tuple[TopicKind, ...] = ("items", "behaviors", "impressions")


def _check_time(v: datetime, info: ValidationInfo) -> datetime:
    window = (info.context or {}).get("window")
    return check_time(v, window)


def _id_value(v: Any) -> Any:
    """A string id as its int64; anything else is left to the strict int check."""
    if isinstance(v, str):
        try:
            return id_to_int64(v)
        except InvalidIdError as exc:
            raise ValueError(str(exc)) from None
    return v


class _Event(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class ItemEvent(_Event):
    """A new (or updated) item on the ``items`` topic.

    Attributes:
        item_id: the int64 id (a string id is mapped by :func:`infra.ids.id_to_int64`).
        item_key: the id as the producer sent it (a string, or the integer).
        model_extra: the side features (every field beyond the contract's).
    """

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    item_id: int = Field(ge=0, le=2**63 - 1)
    item_key: Any = Field(default=None, validation_alias="item_id", exclude=True)  # the id as sent
    title: str
    category: str = Field(min_length=1)
    image_uri: str | None = None
    created_at: AwareDatetime

    _ids = field_validator("item_id", mode="before")(_id_value)

    @property
    def side_features(self) -> dict[str, Any]:
        """The fields beyond the contract's (``{}`` when none)."""
        return {k: v for k, v in (self.model_extra or {}).items() if k not in RESERVED_ITEM_FIELDS}

    def spelling(self) -> int | str:
        """The item id as the producer wrote it."""
        return self.item_key if isinstance(self.item_key, str) else self.item_id

    def image_path(self) -> str | None:
        """The local image path of ``image_uri`` (``file://`` URIs decoded), or None."""
        if not self.image_uri:
            return None
        if self.image_uri.startswith("file:"):
            return unquote(urlparse(self.image_uri).path)
        return self.image_uri

    def key(self) -> int:
        """The entity id the event is keyed by."""
        return self.item_id


class BehaviorEvent(_Event):
    """A user acted on an item (``behaviors`` topic)."""

    user_id: int = Field(ge=0, le=2**63 - 1)
    item_id: int = Field(ge=0, le=2**63 - 1)
    action: Literal["click", "cart", "purchase"]
    ts: AwareDatetime

    _ids = field_validator("user_id", "item_id", mode="before")(_id_value)

    def key(self) -> int:
        """The entity id the event is keyed by."""
        return self.user_id


class ImpressionEvent(_Event):
    """An ad shown to a user and whether it was clicked (``impressions`` topic)."""

    user_id: int = Field(ge=0, le=2**63 - 1)
    item_id: int = Field(ge=0, le=2**63 - 1)
    clicked: Literal[0, 1]
    ts: AwareDatetime

    _ids = field_validator("user_id", "item_id", mode="before")(_id_value)

    def key(self) -> int:
        """The entity id the event is keyed by."""
        return self.user_id


class _CheckedItem(ItemEvent):
    _time = field_validator("created_at")(_check_time)


class _CheckedBehavior(BehaviorEvent):
    _time = field_validator("ts")(_check_time)


class _CheckedImpression(ImpressionEvent):
    _time = field_validator("ts")(_check_time)


Event = ItemEvent | BehaviorEvent | ImpressionEvent
SCHEMAS: dict[TopicKind, type[_Event]] = {
    "items": ItemEvent, "behaviors": BehaviorEvent, "impressions": ImpressionEvent,
}
# the same schemas with the time rule (infra.contract.check_time) as a field validator: the slow path
_CHECKED: dict[TopicKind, type[_Event]] = {
    "items": _CheckedItem, "behaviors": _CheckedBehavior, "impressions": _CheckedImpression,
}
TIME_FIELDS: dict[TopicKind, str] = {"items": "created_at", "behaviors": "ts", "impressions": "ts"}
_ZERO = timedelta(0)
_FIRST_FULL_YEAR, _LAST_FULL_YEAR = MIN_TIME.year + 1, MAX_TIME.year - 1


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "json_invalid":
            parts.append(f"bad JSON: {err.get('ctx', {}).get('error', err['msg'])}")
        elif err["type"] == "missing":
            parts.append(f"missing field '{loc}'")
        elif err["type"] == "model_type":
            parts.append("value is not a JSON object")
        elif not loc:
            parts.append(msg)
        else:
            parts.append(f"field '{loc}' = {err.get('input')!r}: {msg}")
    return "; ".join(parts)


def parse_event(kind: TopicKind, raw: bytes | None, window: TimeWindow | None = None) -> Event:
    """Parse and validate one message value.

    Args:
        kind: which topic's schema applies.
        raw: the message value.
        window: the optional plausibility window (``cfg.data.plausible_time_window``).

    Returns:
        The validated event.

    Raises:
        InvalidEventError: the value is empty, not JSON, or breaks the schema (``reason`` says how).
    """
    if not raw:
        raise InvalidEventError("empty message value", raw)
    # Fast path: the schema without Python validators (the time validator was half the job's parse
    # time), then the time rule checked inline. Anything else (an invalid value, a time outside the
    # rule, a non-UTC offset to normalise) is validated again by the checked schema, which gives
    # the one reason text and the UTC time.
    try:
        event = SCHEMAS[kind].model_validate_json(raw)
    except ValidationError:
        event = None
    if event is not None:
        t: datetime = getattr(event, TIME_FIELDS[kind])
        # the years strictly inside nanosecond time's range, compared as ints (an aware datetime
        # comparison costs 1.3 us); the edge years take the exact check of the slow path
        if (_FIRST_FULL_YEAR <= t.year <= _LAST_FULL_YEAR and t.utcoffset() == _ZERO
                and (window is None or window[0] <= t < window[1])):
            return event  # type: ignore[return-value]
    try:
        return _CHECKED[kind].model_validate_json(raw, context={"window": window})  # type: ignore[return-value]
    except ValidationError as exc:
        raise InvalidEventError(_reason(exc), raw) from None


def iso_utc(ts: pd.Timestamp | datetime) -> str:
    """ISO-8601 UTC with a ``Z`` suffix and microseconds, e.g. ``2024-05-01T12:00:00.000000Z``."""
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _image_uri(ds: Dataset, rel: Any) -> str | None:
    if rel is None or (isinstance(rel, float) and np.isnan(rel)):
        return None
    return str((Path(ds.root) / str(rel)).resolve())


def encode_value(fields: dict[str, Any]) -> bytes:
    """JSON bytes of an event value (compact, UTF-8)."""
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def _side_value(v: Any) -> Any:
    """A side-feature value as JSON: numbers and strings as they are, null for missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return v.item() if isinstance(v, np.generic) else v


def _value_rows(ds: Dataset, kind: TopicKind) -> tuple[pd.Series, list[int | str], list[dict[str, Any]]]:
    """(event times, key ids, value dicts) of one frame, sorted by time (stable); ids as the dataset wrote them."""
    if kind == "items":
        df = ds.items.sort_values("created_at", kind="stable")
        times = df["created_at"]
        keys = [ds.item_key(i) for i in df["item_id"].tolist()]
        side = ds.item_side_columns
        side_rows = zip(*(df[c].tolist() for c in side), strict=True) if side else ([] for _ in range(len(df)))
        values = [{"item_id": k, "title": str(t), "category": str(c), "image_uri": _image_uri(ds, p),
                   "created_at": iso_utc(ts), **{n: _side_value(v) for n, v in zip(side, extra, strict=True)}}
                  for k, t, c, p, ts, extra in zip(keys, df["title"].tolist(), df["category"].tolist(),
                                                   df["image_path"].tolist(), times, side_rows, strict=True)]
        return times, list(keys), values
    df = (ds.behaviors if kind == "behaviors" else ds.impressions).sort_values("ts", kind="stable")
    times = df["ts"]
    field, col = ("action", "action") if kind == "behaviors" else ("clicked", "clicked")
    cast = str if kind == "behaviors" else int
    users = [ds.user_key(u) for u in df["user_id"].tolist()]
    values = [{"user_id": u, "item_id": ds.item_key(i), field: cast(a), "ts": iso_utc(ts)}
              for u, i, a, ts in zip(users, df["item_id"].tolist(), df[col].tolist(), times, strict=True)]
    return times, list(users), values


def dataset_events(ds: Dataset, kind: TopicKind) -> Iterator[tuple[pd.Timestamp, bytes, bytes]]:
    """A dataset's rows of one topic as ``(event time, key, value)``, in timestamp order (stable).

    Args:
        ds: the loaded dataset (image paths become absolute local paths in ``image_uri``).
        kind: which frame to publish.

    Yields:
        ``(ts, key bytes, JSON value bytes)`` per row; the key is the entity id as the dataset
        wrote it (item id for items, user id for behaviors and impressions).
    """
    times, keys, values = _value_rows(ds, kind)
    for ts, key, value in zip(times, keys, values, strict=True):
        yield pd.Timestamp(ts), str(key).encode(), encode_value(value)
