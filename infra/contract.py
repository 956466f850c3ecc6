"""The data contract: what a valid dataset row and a valid event are, in one place.

``mmads data validate`` (:mod:`infra.dataset`), ``mmads events replay``, the streaming jobs' event
schemas (:mod:`streaming.events`) and every stage of the main job read the rules below, so what
``validate`` accepts the jobs accept, and what a job would dead-letter ``validate`` reports first.
``docs/data.md`` and ``docs/events.md`` describe the same rules for people.

* **Ids** (``item_id``, ``user_id``): an integer or a string, mapped to int64 by
  :func:`infra.ids.id_to_int64`.
* **Times**: timezone-aware UTC instants that pandas/Arrow can hold in nanoseconds (1677-09-21 to
  2262-04-11). There is no plausibility window by default; ``data.plausible_time_window`` sets one
  (``[start, end)``), and then ``validate`` and the jobs both apply it.
* **Actions**: ``click``, ``cart``, ``purchase``; **clicked**: 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd

ACTIONS = ("click", "cart", "purchase")

# the instants a datetime64[ns] holds, rounded inwards to microseconds (what JSON/Python carry)
MIN_TIME: datetime = pd.Timestamp.min.ceil("us").to_pydatetime().replace(tzinfo=UTC)
MAX_TIME: datetime = pd.Timestamp.max.floor("us").to_pydatetime().replace(tzinfo=UTC)

TimeWindow = tuple[datetime, datetime]

# file -> {column: kind}; kinds: id, str, str?, ts, clicked, action ("?" = nullable)
SCHEMA: dict[str, dict[str, str]] = {
    "items.parquet": {"item_id": "id", "title": "str", "category": "str", "created_at": "ts"},
    "behaviors.parquet": {"user_id": "id", "item_id": "id", "action": "action", "ts": "ts"},
    "impressions.parquet": {"user_id": "id", "item_id": "id", "clicked": "clicked", "ts": "ts"},
    "queries.parquet": {"query_text": "str", "item_id": "id", "ts": "ts"},
    "users.parquet": {"user_id": "id"},
}
# optional contract columns: present or absent, never side features
OPTIONAL_COLUMNS: dict[str, dict[str, str]] = {
    "items.parquet": {"image_path": "str?"},
    "queries.parquet": {"query_image_path": "str?", "clicked_item_ids": "id_list?"},
}
REQUIRED_FILES = ("items.parquet", "behaviors.parquet", "impressions.parquet")
OPTIONAL_FILES = ("queries.parquet", "users.parquet")
# files whose extra columns are side features (the others' extra columns are ignored)
SIDE_FEATURE_FILES = ("items.parquet", "users.parquet")
# keys of item events the platform reserves; any other field of an item event is a side feature
RESERVED_ITEM_FIELDS = frozenset({"item_id", "title", "category", "image_uri", "created_at", "item_key"})


def time_problem(t: datetime, window: TimeWindow | None = None) -> str | None:
    """Why ``t`` is not a valid event time, or None when it is.

    Args:
        t: a timezone-aware instant.
        window: the optional plausibility window ``[start, end)``.
    """
    if t.tzinfo is None or t.utcoffset() is None:
        return "timestamp has no timezone (write UTC, e.g. 2024-05-01T12:00:00Z)"
    if not MIN_TIME <= t <= MAX_TIME:
        return (f"timestamp {t.isoformat()} is outside what nanosecond time holds "
                f"({MIN_TIME.date()} to {MAX_TIME.date()})")
    if window is not None and not window[0] <= t < window[1]:
        return (f"timestamp {t.isoformat()} is outside the plausible window "
                f"[{window[0].isoformat()}, {window[1].isoformat()}) (data.plausible_time_window)")
    return None


def check_time(t: datetime, window: TimeWindow | None = None) -> datetime:
    """``t`` in UTC when it is a valid event time.

    Raises:
        ValueError: the reason (see :func:`time_problem`).
    """
    why = time_problem(t, window)
    if why is not None:
        raise ValueError(why)
    return t.astimezone(UTC)


def out_of_range(s: pd.Series, window: TimeWindow | None = None) -> np.ndarray:
    """Mask of the values of a timezone-aware timestamp column that break the time rule."""
    lo, hi = (pd.Timestamp(MIN_TIME), pd.Timestamp(MAX_TIME))
    if window is not None:
        lo, hi = max(lo, pd.Timestamp(window[0])), min(hi, pd.Timestamp(window[1]))
        # the window's end is exclusive
        return np.asarray(s.notna() & ((s < lo) | (s >= hi)))
    return np.asarray(s.notna() & ((s < lo) | (s > hi)))


def parse_window(values: Sequence[datetime] | None) -> TimeWindow | None:
    """A ``[start, end)`` window from two aware datetimes (None passes through).

    Raises:
        ValueError: not two values, a naive one, or ``start >= end``.
    """
    if values is None:
        return None
    if len(values) != 2:
        raise ValueError(f"plausible_time_window takes [start, end], got {list(values)}")
    start, end = values
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("plausible_time_window times must carry a timezone (UTC)")
    if not start < end:
        raise ValueError(f"plausible_time_window start {start.isoformat()} is not before end {end.isoformat()}")
    return start.astimezone(UTC), end.astimezone(UTC)
