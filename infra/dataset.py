"""The dataset directory (docs/data.md): loading and validation against :mod:`infra.contract`.

Every command that reads a dataset calls :func:`load_dataset`, which validates first and raises
:class:`~infra.errors.DatasetError` listing every problem ("file: row N: what is wrong").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from infra import dataset_checks as chk
from infra.contract import (
    ACTIONS,
    OPTIONAL_COLUMNS,
    OPTIONAL_FILES,
    REQUIRED_FILES,
    SCHEMA,
    SIDE_FEATURE_FILES,
    TimeWindow,
)
from infra.errors import DatasetError

if TYPE_CHECKING:
    from infra.config import MmadsConfig

logger = logging.getLogger(__name__)

__all__ = ["ACTIONS", "OPTIONAL_COLUMNS", "REQUIRED_FILES", "SCHEMA", "Dataset", "DatasetCheck", "check_dataset",
           "dataset_cut", "load_dataset", "time_cut", "validate_dataset"]

ITEM_ID_COLUMNS = (("items.parquet", "item_id"), ("behaviors.parquet", "item_id"),
                   ("impressions.parquet", "item_id"), ("queries.parquet", "item_id"))
USER_ID_COLUMNS = (("users.parquet", "user_id"), ("behaviors.parquet", "user_id"),
                   ("impressions.parquet", "user_id"))


@dataclass(frozen=True)
class Dataset:
    """A loaded, validated dataset; every id column is int64 (:func:`infra.ids.id_to_int64`).

    Attributes:
        root: the dataset directory (image paths are relative to it).
        items: the catalogue; ``image_path`` is present (all null for a text-only dataset) and any
            side-feature columns follow the contract columns.
        behaviors, impressions: the event frames (timestamps in nanoseconds, UTC).
        queries: the SCL query pairs, or an empty frame when the dataset has none.
        users: ``users.parquet`` (``user_id`` + side-feature columns), or None when absent.
        item_keys: the spelling of every item id the dataset wrote as a string (int64 -> string).
        user_keys: the same for user ids.
        notes: what validation noticed without refusing (optional parts absent, ignored columns).
    """

    root: Path
    items: pd.DataFrame
    behaviors: pd.DataFrame
    impressions: pd.DataFrame
    queries: pd.DataFrame
    users: pd.DataFrame | None = None
    item_keys: Mapping[int, str] = field(default_factory=dict)
    user_keys: Mapping[int, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def has_images(self) -> bool:
        """True when at least one item has an image."""
        return bool(self.items["image_path"].notna().any())

    @property
    def has_queries(self) -> bool:
        """True when the dataset has SCL query pairs."""
        return len(self.queries) > 0

    @property
    def item_side_columns(self) -> list[str]:
        """The side-feature columns of ``items`` (everything beyond the contract columns)."""
        contract = set(SCHEMA["items.parquet"]) | set(OPTIONAL_COLUMNS["items.parquet"])
        return [c for c in self.items.columns if c not in contract]

    def item_key(self, item_id: int) -> int | str:
        """The item id as the dataset wrote it (its string, or the integer)."""
        return self.item_keys.get(int(item_id), int(item_id))

    def user_key(self, user_id: int) -> int | str:
        """The user id as the dataset wrote it (its string, or the integer)."""
        return self.user_keys.get(int(user_id), int(user_id))

    def image_file(self, rel: str | None) -> Path | None:
        """Absolute path of an image given relative to the dataset directory."""
        return None if rel is None or (isinstance(rel, float) and np.isnan(rel)) else self.root / rel


@dataclass(frozen=True)
class DatasetCheck:
    """What :func:`check_dataset` found.

    Attributes:
        problems: every reason the dataset is refused (empty when valid).
        notes: facts worth telling the user that do not refuse it.
        dataset: the loaded dataset when valid, else None.
        side_features: ``file -> {column: "numeric" | "string"}`` of the accepted side features.
    """

    problems: list[str]
    notes: list[str]
    dataset: Dataset | None
    side_features: dict[str, dict[str, str]] = field(default_factory=dict)


def _read(root: Path, file: str, problems: list[str]) -> pd.DataFrame | None:
    path = root / file
    if not path.is_file():
        if file in REQUIRED_FILES:
            problems.append(f"{file}: missing")
        return None
    try:
        # strings as categoricals: ids of a 10M-row log are then codes plus a small table, not 10M objects
        return pq.read_table(path).to_pandas(strings_to_categorical=True)
    except Exception as exc:  # noqa: BLE001 - any parquet failure is a dataset problem to report
        problems.append(f"{file}: cannot be read as parquet ({exc})")
        return None


@dataclass
class _State:
    """Working state of one check: frames as read, converted columns, id mappings."""

    root: Path
    window: TimeWindow | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, pd.DataFrame] = field(default_factory=dict)
    out: dict[str, dict[str, Any]] = field(default_factory=dict)  # file -> column -> converted values
    maps: dict[tuple[str, str], dict[Any, int]] = field(default_factory=dict)
    side: dict[str, dict[str, str]] = field(default_factory=dict)

    def converted(self, file: str, col: str) -> Any:
        return self.out.get(file, {}).get(col)


def _check_column(st: _State, file: str, df: pd.DataFrame, col: str, kind: str) -> None:
    s, p = df[col], st.problems
    conv: Any = None
    if kind == "id":
        conv, mapping = chk.map_ids(file, s, col, p)
        st.maps[(file, col)] = mapping
    elif kind == "ts":
        conv = chk.check_times(file, s, col, st.window, p)
    elif kind in ("str", "str?"):
        if kind == "str":
            chk.check_nulls(file, s, col, p)
        chk.check_strings(file, s, col, p)
    elif kind == "action":
        chk.check_nulls(file, s, col, p)
        chk.check_actions(s, p)
    elif kind == "clicked":
        chk.check_clicked(s, p)
    if conv is not None:
        st.out.setdefault(file, {})[col] = conv


def _check_file(st: _State, file: str, df: pd.DataFrame) -> None:
    columns = SCHEMA[file]
    optional = OPTIONAL_COLUMNS.get(file, {})
    missing = [c for c in columns if c not in df.columns]
    if missing:
        st.problems.append(f"{file}: missing columns {missing}")
    for col, kind in {**columns, **optional}.items():
        if col in df.columns and kind != "id_list?":
            _check_column(st, file, df, col, kind)
    extra = [c for c in df.columns if c not in columns and c not in optional]
    if file in SIDE_FEATURE_FILES:
        kinds = {c: chk.check_side_column(file, df[c], c, st.notes) for c in extra}
        st.side[file] = {c: k for c, k in kinds.items() if k is not None}
    elif extra:
        st.notes.append(f"{file}: columns {extra} are not part of the format and are ignored")
    if len(df) == 0 and file in ("items.parquet", "impressions.parquet"):
        st.problems.append(f"{file}: has no rows")


def _check_ids(st: _State) -> None:
    for namespace, cols in (("item", ITEM_ID_COLUMNS), ("user", USER_ID_COLUMNS)):
        maps = [st.maps[c] for c in cols if c in st.maps]
        st.problems.extend(chk.collisions(namespace, maps))
        ints = [st.converted(f, c) for f, c in cols if not st.maps.get((f, c)) and st.converted(f, c) is not None]
        st.problems.extend(chk.int_collisions(namespace, maps, ints))
    item_ids = st.converted("items.parquet", "item_id")
    if item_ids is None:
        return
    dup = pd.Series(item_ids).duplicated().to_numpy()
    if dup.any():
        st.problems.append(f"items.parquet: duplicate item_id at {chk.fmt_rows(chk.rows_of(dup), int(dup.sum()))}")
    known = np.unique(item_ids)
    for file in ("behaviors.parquet", "impressions.parquet", "queries.parquet"):
        ids = st.converted(file, "item_id")
        if ids is not None:
            chk.check_unknown(file, "item_id", ids, known, st.raw[file]["item_id"], "items", st.problems)
    created = st.converted("items.parquet", "created_at")
    if created is not None and not dup.any():
        by_item = pd.Series(created.dt.as_unit("ns").astype("int64").to_numpy(), index=item_ids)
        for file in ("behaviors.parquet", "impressions.parquet"):
            ids, ts = st.converted(file, "item_id"), st.converted(file, "ts")
            if ids is not None and ts is not None and np.isin(ids, known).all():
                chk.check_before_created(file, ids, ts, by_item, st.problems)
    q = st.raw.get("queries.parquet")
    if q is not None and "clicked_item_ids" in q.columns:
        lists, mapping = _clicked_lists(q["clicked_item_ids"], known, st.problems)
        st.maps[("queries.parquet", "clicked_item_ids")] = mapping
        st.out.setdefault("queries.parquet", {})["clicked_item_ids"] = lists


def _clicked_lists(col: pd.Series, known: np.ndarray, problems: list[str]) -> tuple[list[Any], dict[Any, int]]:
    """``clicked_item_ids``: each value null or a list of existing item ids (ints or strings)."""
    from infra.ids import InvalidIdError, id_to_int64

    bad_type: list[int] = []
    out: list[Any] = []
    mapping: dict[Any, int] = {}
    for row, lst in enumerate(col.tolist()):
        if lst is None:
            out.append(None)
            continue
        values = list(lst) if isinstance(lst, list | tuple | np.ndarray) else None
        try:
            if values is None:
                raise InvalidIdError(lst, "not a list")
            ints = [id_to_int64(v.item() if isinstance(v, np.generic) else v) for v in values]
        except InvalidIdError:
            bad_type.append(row)
            out.append(None)
            continue
        mapping.update({v: i for v, i in zip(values, ints, strict=True) if isinstance(v, str)})
        out.append(ints)
    if bad_type:
        problems.append("queries.parquet: clicked_item_ids must be lists of item ids (integers or strings) at "
                        + chk.fmt_rows(bad_type[:chk.MAX_PROBLEMS_PER_CHECK], len(bad_type)))
    unknown = sorted(set(v for lst in out if lst for v in lst) - set(known.tolist()))
    if unknown:
        problems.append(f"queries.parquet: clicked_item_ids refer to unknown items {unknown[:20]}")
    return out, mapping


def _frame(st: _State, file: str) -> pd.DataFrame:
    df = st.raw[file].copy()
    for col, values in st.out.get(file, {}).items():
        df[col] = values
    for col in df.columns:  # text columns as plain object columns of str / None, as read before
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df


def _keys(st: _State, cols: tuple[tuple[str, str], ...]) -> dict[int, str]:
    keys: dict[int, str] = {}
    for c in cols:
        keys.update({v: raw for raw, v in st.maps.get(c, {}).items() if isinstance(raw, str)})
    return keys


def _users_notes(st: _State, users: pd.DataFrame) -> None:
    dup = users["user_id"].duplicated().to_numpy()
    if dup.any():
        st.problems.append(f"users.parquet: duplicate user_id at {chk.fmt_rows(chk.rows_of(dup), int(dup.sum()))}")
    seen = np.unique(np.concatenate([st.out[f]["user_id"] for f in ("behaviors.parquet", "impressions.parquet")]))
    missing = np.setdiff1d(seen, users["user_id"].to_numpy(np.int64))
    if len(missing):
        st.notes.append(f"users.parquet: {len(missing)} users of the events have no row (their side features "
                        "are null)")


def _assemble(st: _State) -> Dataset:
    items = _frame(st, "items.parquet")
    if "image_path" not in items.columns:
        contract = list(SCHEMA["items.parquet"])
        items.insert(len(contract), "image_path", pd.Series([None] * len(items), dtype=object, index=items.index))
    if "queries.parquet" in st.raw:
        queries = _frame(st, "queries.parquet")
    else:
        queries = pd.DataFrame({c: pd.Series(dtype="object") for c in SCHEMA["queries.parquet"]})
        queries["item_id"] = queries["item_id"].astype("int64")
    users = _frame(st, "users.parquet") if "users.parquet" in st.raw else None
    return Dataset(
        root=st.root, items=items, behaviors=_frame(st, "behaviors.parquet"),
        impressions=_frame(st, "impressions.parquet"), queries=queries, users=users,
        item_keys=_keys(st, (*ITEM_ID_COLUMNS, ("queries.parquet", "clicked_item_ids"))),
        user_keys=_keys(st, USER_ID_COLUMNS), notes=tuple(st.notes))


def _optional_notes(st: _State) -> None:
    q = st.raw.get("queries.parquet")
    if q is None or len(q) == 0:
        st.notes.append("no query pairs (queries.parquet): SCL trains nothing and the item indexer uses the "
                        "frozen backbones")
    items = st.raw.get("items.parquet")
    if items is not None and ("image_path" not in items.columns or not items["image_path"].notna().any()):
        st.notes.append("no images: text-only items, the image tower is skipped")
    if st.maps and any(st.maps.values()):
        st.notes.append("string ids are mapped to int64 by infra.ids.id_to_int64 (docs/data.md, Ids)")


def check_dataset(root: str | Path, *, decode_images: bool = True, window: TimeWindow | None = None) -> DatasetCheck:
    """Check a dataset directory against the data contract (:mod:`infra.contract`).

    Args:
        root: the dataset directory.
        decode_images: also open every image file (slower; existence is always checked).
        window: the optional plausibility window (``cfg.data.plausible_time_window``).

    Returns:
        A :class:`DatasetCheck`: every problem, the notes, the side features and the dataset
        (None unless valid).
    """
    root = Path(root)
    if not root.is_dir():
        return DatasetCheck([f"{root}: not a directory"], [], None)
    st = _State(root=root, window=window)
    for file in (*REQUIRED_FILES, *OPTIONAL_FILES):
        df = _read(root, file, st.problems)
        if df is not None:
            st.raw[file] = df
            _check_file(st, file, df)
    _check_ids(st)
    items = st.raw.get("items.parquet")
    if items is not None and "image_path" in items.columns:
        chk.check_images(root, "items.parquet", items, "image_path", st.problems, decode_images)
    queries = st.raw.get("queries.parquet")
    if queries is not None and "query_image_path" in queries.columns:
        chk.check_images(root, "queries.parquet", queries, "query_image_path", st.problems, decode_images)
    if st.problems:
        return DatasetCheck(st.problems, st.notes, None, st.side)
    if "users.parquet" in st.raw:
        _users_notes(st, _frame(st, "users.parquet"))
        if st.problems:
            return DatasetCheck(st.problems, st.notes, None, st.side)
    _optional_notes(st)
    return DatasetCheck([], st.notes, _assemble(st), st.side)


def validate_dataset(root: str | Path, *, decode_images: bool = True,
                     window: TimeWindow | None = None) -> tuple[list[str], Dataset | None]:
    """Check a dataset directory against the import format.

    Args:
        root: the dataset directory.
        decode_images: also open every image file (slower; existence is always checked).
        window: the optional plausibility window (``cfg.data.plausible_time_window``).

    Returns:
        ``(problems, dataset)``: every problem found (empty when valid) and the loaded dataset
        when it is valid (None otherwise).
    """
    res = check_dataset(root, decode_images=decode_images, window=window)
    return res.problems, res.dataset


def load_dataset(root: str | Path, *, decode_images: bool = False, window: TimeWindow | None = None) -> Dataset:
    """Validate and load a dataset; raise :class:`DatasetError` listing every problem."""
    problems, ds = validate_dataset(root, decode_images=decode_images, window=window)
    if ds is None:
        raise DatasetError(f"dataset {root} is invalid ({len(problems)} problems)", problems)
    logger.info(
        "loaded dataset %s: %d items, %d behaviors, %d impressions, %d queries",
        root, len(ds.items), len(ds.behaviors), len(ds.impressions), len(ds.queries),
    )
    return ds


def dataset_cut(dataset: Dataset, cfg: MmadsConfig) -> pd.Timestamp:
    """The dataset's one train/test cut: ``data.cut_time``, else ``data.cut_quantile`` of impression times.

    Every stage that fits anything takes its cut from here (the ``validate`` stage records it as
    ``data.cut_time``): SCL query pairs and their hard negatives, the CTR models and LightGBM (with
    their validation slices before it), the retrieval evaluation.
    """
    return time_cut(dataset.impressions, cfg.data.cut_quantile, cfg.data.cut_time)


def time_cut(
    impressions: pd.DataFrame, quantile: float = 0.8, cut_time: datetime | pd.Timestamp | None = None
) -> pd.Timestamp:
    """The train/test cut: an explicit time, else the given quantile of impression ``ts``."""
    if cut_time is not None:
        return pd.Timestamp(cut_time).tz_convert("UTC")
    # as_unit("ns"): parquet timestamps load as microseconds, and a bare integer is read as ns
    ts = impressions["ts"].dt.as_unit("ns").astype("int64")
    return pd.Timestamp(int(np.quantile(ts.to_numpy(), quantile)), tz="UTC")
