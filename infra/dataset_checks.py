"""Column- and row-level checks of a dataset directory (the rules of :mod:`infra.contract`).

Each check appends one line per problem to ``problems``: the file, the column, the first rows and
the first offending value, e.g. ``impressions.parquet: column 'ts' at rows 3, 9 (and 12 more):
timestamp 1601-01-01T00:00:00+00:00 is outside ...``. :mod:`infra.dataset` runs them in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infra.contract import ACTIONS, TimeWindow, out_of_range, time_problem
from infra.ids import InvalidIdError, id_to_int64

MAX_PROBLEMS_PER_CHECK = 20


def rows_of(mask: np.ndarray | pd.Series) -> list[int]:
    """The first :data:`MAX_PROBLEMS_PER_CHECK` positions where ``mask`` is true."""
    return [int(i) for i in np.flatnonzero(np.asarray(mask))[:MAX_PROBLEMS_PER_CHECK]]


def fmt_rows(rows: list[int], total: int) -> str:
    """``rows 1, 5 (and 3 more)``."""
    shown = ", ".join(str(r) for r in rows)
    return f"rows {shown}" + (f" (and {total - len(rows)} more)" if total > len(rows) else "")


def _where(mask: np.ndarray | pd.Series) -> str:
    m = np.asarray(mask)
    return fmt_rows(rows_of(m), int(m.sum()))


def is_string_column(s: pd.Series) -> bool:
    """True for object, string or categorical-of-strings dtypes."""
    return bool(pd.api.types.is_object_dtype(s.dtype) or pd.api.types.is_string_dtype(s.dtype)
                or isinstance(s.dtype, pd.CategoricalDtype))


def check_nulls(file: str, s: pd.Series, col: str, problems: list[str]) -> bool:
    """Report nulls in a required column; True when there are none."""
    bad = s.isna()
    if bad.any():
        problems.append(f"{file}: column '{col}' has nulls at {_where(bad)}")
        return False
    return True


def check_strings(file: str, s: pd.Series, col: str, problems: list[str]) -> None:
    """A string column: every non-null value is a ``str``."""
    if not is_string_column(s):
        problems.append(f"{file}: column '{col}' must be a string column, found {s.dtype}")
        return
    nonnull = s.dropna()
    if isinstance(s.dtype, pd.CategoricalDtype) and all(isinstance(v, str) for v in s.cat.categories):
        return
    bad = ~nonnull.map(lambda v: isinstance(v, str)).to_numpy(bool)
    if bad.any():
        positions = np.flatnonzero(s.notna().to_numpy())[bad]
        idx = [int(i) for i in positions[:MAX_PROBLEMS_PER_CHECK]]
        problems.append(f"{file}: column '{col}' holds non-strings at {fmt_rows(idx, int(bad.sum()))} "
                        f"(first {nonnull.iloc[int(np.flatnonzero(bad)[0])]!r})")


def map_ids(file: str, s: pd.Series, col: str, problems: list[str]) -> tuple[np.ndarray | None, dict[Any, int]]:
    """An id column as int64 by :func:`infra.ids.id_to_int64`.

    Returns:
        ``(ids, mapping)``: the int64 ids (None when the column is invalid) and the distinct raw
        values with their ints (for collision checks).
    """
    if pd.api.types.is_bool_dtype(s.dtype) or not (pd.api.types.is_integer_dtype(s.dtype) or is_string_column(s)):
        problems.append(f"{file}: column '{col}' must hold integer or string ids, found {s.dtype}")
        return None, {}
    if not check_nulls(file, s, col, problems):
        return None, {}
    if pd.api.types.is_integer_dtype(s.dtype):
        neg = (s < 0).to_numpy()
        if neg.any():
            problems.append(f"{file}: column '{col}' is negative at {_where(neg)} (first {int(s[neg].iloc[0])})")
            return None, {}
        ids = s.to_numpy(np.int64)
        return ids, {}
    if isinstance(s.dtype, pd.CategoricalDtype):
        codes, uniques = s.cat.codes.to_numpy(), pd.Index(s.cat.categories)
    else:
        codes, uniques = pd.factorize(s.astype(object), sort=False)
    mapped = np.empty(len(uniques), dtype=np.int64)
    bad_codes: list[int] = []
    first_error = ""
    for k, raw in enumerate(uniques.tolist()):
        try:
            mapped[k] = id_to_int64(raw)
        except InvalidIdError as exc:
            bad_codes.append(k)
            first_error = first_error or str(exc)
    if bad_codes:
        bad = np.isin(codes, bad_codes)
        problems.append(f"{file}: column '{col}' holds invalid ids at {_where(bad)}: {first_error}")
        return None, {}
    return mapped[codes], dict(zip(uniques.tolist(), mapped.tolist(), strict=True))


def check_times(file: str, s: pd.Series, col: str, window: TimeWindow | None, problems: list[str]) -> pd.Series | None:
    """A UTC timestamp column within the time rule; returns it in nanoseconds (None when invalid)."""
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        hint = " (naive: localize it to UTC)" if pd.api.types.is_datetime64_dtype(s.dtype) else ""
        problems.append(f"{file}: column '{col}' must be a UTC timestamp, found {s.dtype}{hint}")
        return None
    if str(s.dtype.tz) != "UTC":
        problems.append(f"{file}: column '{col}' must be in UTC, found timezone {s.dtype.tz}")
        return None
    if not check_nulls(file, s, col, problems):
        return None
    bad = out_of_range(s, window)
    if bad.any():
        first = s[bad].iloc[0]
        why = time_problem(first.to_pydatetime(), window) or "out of range"
        problems.append(f"{file}: column '{col}' at {_where(bad)}: {why}")
        return None
    return s.dt.as_unit("ns")


def check_actions(s: pd.Series, problems: list[str]) -> None:
    """``behaviors.action`` is one of :data:`~infra.contract.ACTIONS`."""
    bad = ~s.isin(ACTIONS)
    if bad.any():
        problems.append(f"behaviors.parquet: action not one of {list(ACTIONS)} at {_where(bad)} "
                        f"(first {s[bad].iloc[0]!r})")


def check_clicked(s: pd.Series, problems: list[str]) -> None:
    """``impressions.clicked`` is an integer 0 or 1."""
    if not pd.api.types.is_integer_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        problems.append(f"impressions.parquet: column 'clicked' must be an integer column (0/1), found {s.dtype}")
        return
    bad = ~s.isin([0, 1])
    if bad.any():
        problems.append(f"impressions.parquet: clicked not 0/1 at {_where(bad)}")


def check_side_column(file: str, s: pd.Series, col: str, notes: list[str]) -> str | None:
    """A side-feature column's kind: ``numeric`` (numbers, booleans) or ``string``.

    Columns of other types are noted and ignored (None).
    """
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        return "numeric"
    if isinstance(s.dtype, pd.CategoricalDtype):
        if all(isinstance(v, str) for v in s.cat.categories):
            return "string"
    elif pd.api.types.is_object_dtype(s.dtype):
        if s.dropna().map(lambda v: isinstance(v, str)).all():
            return "string"
    elif pd.api.types.is_string_dtype(s.dtype):
        return "string"
    notes.append(f"{file}: column '{col}' ({s.dtype}) is neither numeric nor string: not a side feature, ignored")
    return None


def collisions(namespace: str, mappings: list[dict[Any, int]]) -> list[str]:
    """Distinct ids (by their text) that map to the same int64, across the files of one namespace."""
    by_int: dict[int, set[str]] = {}
    for mapping in mappings:
        for raw, v in mapping.items():
            by_int.setdefault(v, set()).add(str(raw))
    problems = []
    for v, texts in by_int.items():
        if len(texts) > 1:
            problems.append(f"{namespace} ids {sorted(texts)} all map to int64 {v} (id collision): "
                            f"rename one of them")
    return problems[:MAX_PROBLEMS_PER_CHECK]


def int_collisions(namespace: str, mappings: list[dict[Any, int]], int_ids: list[np.ndarray]) -> list[str]:
    """String ids whose hash equals an integer id of the same namespace."""
    hashed = {v: raw for m in mappings for raw, v in m.items() if isinstance(raw, str)}
    if not hashed:
        return []
    ints = np.unique(np.concatenate(int_ids)) if int_ids else np.zeros(0, np.int64)
    clash = [v for v in np.intersect1d(ints, np.fromiter(hashed, np.int64)).tolist() if str(v) != hashed[v]]
    return [f"{namespace} id {hashed[v]!r} maps to int64 {v}, which is also an integer {namespace} id "
            f"(id collision)" for v in clash[:MAX_PROBLEMS_PER_CHECK]]


def check_unknown(file: str, col: str, ids: np.ndarray, known: np.ndarray, raw: pd.Series,
                  what: str, problems: list[str]) -> None:
    """Ids in an event/query file that are not in the catalogue file."""
    bad = ~np.isin(ids, known)
    if bad.any():
        shown = sorted({str(v) for v in raw[bad].head(MAX_PROBLEMS_PER_CHECK).tolist()})
        problems.append(f"{file}: {col} refers to unknown {what} at {_where(bad)} (ids {shown})")


def check_before_created(file: str, ids: np.ndarray, ts: pd.Series, created: pd.Series, problems: list[str]) -> None:
    """Events dated before their item's ``created_at`` (the item is not indexed yet then).

    Args:
        file: the events' file name (for the message).
        ids: the events' int64 item ids (all in the catalogue).
        ts: the events' times (nanoseconds, UTC).
        created: epoch nanoseconds (int64) of each item's ``created_at``, indexed by item id.
        problems: where the problem line goes.
    """
    when = created.reindex(ids).to_numpy(np.int64)  # int64 throughout: 10M Timestamp objects would be GBs
    t = ts.dt.as_unit("ns").astype("int64").to_numpy()
    bad = t < when
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        problems.append(
            f"{file}: {int(bad.sum())} rows are dated before their item's created_at, at {_where(bad)} "
            f"(first: item {ids[i]} at {pd.Timestamp(int(t[i]), tz='UTC').isoformat()}, created "
            f"{pd.Timestamp(int(when[i]), tz='UTC').isoformat()})")


def check_images(root: Path, file: str, df: pd.DataFrame, col: str, problems: list[str], decode: bool) -> None:
    """Every non-null image path exists (and decodes, with ``decode``)."""
    from PIL import Image, UnidentifiedImageError

    bad_rows: list[tuple[int, str]] = []
    for i, rel in enumerate(df[col].tolist()):
        if rel is None or (isinstance(rel, float) and np.isnan(rel)):
            continue
        path = root / str(rel)
        if not path.is_file():
            bad_rows.append((i, f"image {rel} does not exist"))
        elif decode:
            try:
                with Image.open(path) as im:
                    im.verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                bad_rows.append((i, f"image {rel} does not decode ({exc.__class__.__name__})"))
    for i, why in bad_rows[:MAX_PROBLEMS_PER_CHECK]:
        problems.append(f"{file}: row {i}: {why}")
    if len(bad_rows) > MAX_PROBLEMS_PER_CHECK:
        problems.append(f"{file}: ... and {len(bad_rows) - MAX_PROBLEMS_PER_CHECK} more image problems")
