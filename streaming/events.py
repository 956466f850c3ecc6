"""Event schemas of the three input topics (docs/events.md) and their (de)serialisation.

Values are JSON objects; the Kafka key is the entity id as a decimal string (``item_id`` for
``items``, ``user_id`` for ``behaviors`` and ``impressions``). Parsing is strict: a string where an
int belongs, a missing field, an unknown action, a naive or absurd timestamp are all
:class:`~infra.errors.InvalidEventError` with a one-line ``reason`` that the dead-letter record
carries. Unknown extra fields are ignored (a newer producer may add some).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from infra.dataset import Dataset
from infra.errors import InvalidEventError

TopicKind = Literal["items", "behaviors", "impressions"]
TOPIC_KINDS: tuple[TopicKind, ...] = ("items", "behaviors", "impressions")

# Timestamps outside this window are rejected as absurd (epoch-zero defaults, ms/s mix-ups, year 9999).
MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_EVENT_TIME = datetime(2100, 1, 1, tzinfo=UTC)


def _check_time(v: datetime) -> datetime:
    if not MIN_EVENT_TIME <= v < MAX_EVENT_TIME:
        raise ValueError(f"absurd timestamp {v.isoformat()} (outside {MIN_EVENT_TIME.year}-{MAX_EVENT_TIME.year})")
    return v.astimezone(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class ItemEvent(_Event):
    """A new (or updated) item on the ``items`` topic."""

    item_id: int = Field(ge=0)
    title: str
    category: str = Field(min_length=1)
    image_uri: str | None
    created_at: AwareDatetime

    _time = field_validator("created_at")(_check_time)

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

    user_id: int = Field(ge=0)
    item_id: int = Field(ge=0)
    action: Literal["click", "cart", "purchase"]
    ts: AwareDatetime

    _time = field_validator("ts")(_check_time)

    def key(self) -> int:
        """The entity id the event is keyed by."""
        return self.user_id


class ImpressionEvent(_Event):
    """An ad shown to a user and whether it was clicked (``impressions`` topic)."""

    user_id: int = Field(ge=0)
    item_id: int = Field(ge=0)
    clicked: Literal[0, 1]
    ts: AwareDatetime

    _time = field_validator("ts")(_check_time)

    def key(self) -> int:
        """The entity id the event is keyed by."""
        return self.user_id


Event = ItemEvent | BehaviorEvent | ImpressionEvent
SCHEMAS: dict[TopicKind, type[_Event]] = {
    "items": ItemEvent, "behaviors": BehaviorEvent, "impressions": ImpressionEvent,
}


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "json_invalid":
            parts.append(f"bad JSON: {err.get('ctx', {}).get('error', err['msg'])}")
        elif err["type"] == "missing":
            parts.append(f"missing field '{loc}'")
        elif err["type"] == "model_type":
            parts.append("value is not a JSON object")
        else:
            parts.append(f"field '{loc}' = {err.get('input')!r}: {err['msg']}")
    return "; ".join(parts)


def parse_event(kind: TopicKind, raw: bytes | None) -> Event:
    """Parse and validate one message value.

    Args:
        kind: which topic's schema applies.
        raw: the message value.

    Returns:
        The validated event.

    Raises:
        InvalidEventError: the value is empty, not JSON, or breaks the schema (``reason`` says how).
    """
    if not raw:
        raise InvalidEventError("empty message value", raw)
    try:
        return SCHEMAS[kind].model_validate_json(raw)  # type: ignore[return-value]
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


def _value_rows(ds: Dataset, kind: TopicKind) -> tuple[pd.Series, list[int], list[dict[str, Any]]]:
    """(event times, key ids, value dicts) of one frame, sorted by time (stable)."""
    if kind == "items":
        df = ds.items.sort_values("created_at", kind="stable")
        times = df["created_at"]
        values = [{"item_id": int(i), "title": str(t), "category": str(c), "image_uri": _image_uri(ds, p),
                   "created_at": iso_utc(ts)}
                  for i, t, c, p, ts in zip(df["item_id"].tolist(), df["title"].tolist(), df["category"].tolist(),
                                            df["image_path"].tolist(), times, strict=True)]
        return times, df["item_id"].astype("int64").tolist(), values
    df = (ds.behaviors if kind == "behaviors" else ds.impressions).sort_values("ts", kind="stable")
    times = df["ts"]
    field, col = ("action", "action") if kind == "behaviors" else ("clicked", "clicked")
    cast = str if kind == "behaviors" else int
    values = [{"user_id": int(u), "item_id": int(i), field: cast(a), "ts": iso_utc(ts)}
              for u, i, a, ts in zip(df["user_id"].tolist(), df["item_id"].tolist(), df[col].tolist(), times,
                                     strict=True)]
    return times, df["user_id"].astype("int64").tolist(), values


def dataset_events(ds: Dataset, kind: TopicKind) -> Iterator[tuple[pd.Timestamp, bytes, bytes]]:
    """A dataset's rows of one topic as ``(event time, key, value)``, in timestamp order (stable).

    Args:
        ds: the loaded dataset (image paths become absolute local paths in ``image_uri``).
        kind: which frame to publish.

    Yields:
        ``(ts, key bytes, JSON value bytes)`` per row; the key is the entity id (item id for
        items, user id for behaviors and impressions).
    """
    times, keys, values = _value_rows(ds, kind)
    for ts, key, value in zip(times, keys, values, strict=True):
        yield pd.Timestamp(ts), str(key).encode(), encode_value(value)
