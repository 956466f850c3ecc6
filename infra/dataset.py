"""The dataset directory (import format, docs/data.md): schema, loading and validation.

Every command that reads a dataset calls :func:`load_dataset`, which validates first and raises
:class:`~infra.errors.DatasetError` listing every problem ("file: row N: what is wrong").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from infra.errors import DatasetError

if TYPE_CHECKING:
    from infra.config import MmadsConfig

logger = logging.getLogger(__name__)

ACTIONS = ("click", "cart", "purchase")
MAX_PROBLEMS_PER_CHECK = 20

# file -> {column: kind}; kinds: int, str, str?, ts, int8, list_int? ("?" = nullable / optional)
SCHEMA: dict[str, dict[str, str]] = {
    "items.parquet": {
        "item_id": "int", "title": "str", "category": "str", "image_path": "str?", "created_at": "ts",
    },
    "behaviors.parquet": {"user_id": "int", "item_id": "int", "action": "str", "ts": "ts"},
    "impressions.parquet": {"user_id": "int", "item_id": "int", "clicked": "int", "ts": "ts"},
    "queries.parquet": {
        "query_text": "str", "query_image_path": "str?", "item_id": "int", "ts": "ts",
    },
}
OPTIONAL_COLUMNS = {"queries.parquet": {"clicked_item_ids"}}
REQUIRED_FILES = ("items.parquet", "behaviors.parquet", "impressions.parquet")
# files whose columns beyond SCHEMA are side features (see infra.side_features), not errors
SIDE_FEATURE_FILES = ("items.parquet", "users.parquet")
USERS_FILE = "users.parquet"


@dataclass(frozen=True)
class Dataset:
    """A loaded, validated dataset.

    Attributes:
        root: the dataset directory (image paths are relative to it).
        items, behaviors, impressions: the frames of the import format.
        queries: the SCL query pairs, or an empty frame when the dataset has none.
        users: the optional ``users.parquet`` (``user_id`` + side-feature columns), or None.

    ``items`` keeps any columns beyond the import format: they are item side features.
    """

    root: Path
    items: pd.DataFrame
    behaviors: pd.DataFrame
    impressions: pd.DataFrame
    queries: pd.DataFrame
    users: pd.DataFrame | None = None

    @property
    def has_images(self) -> bool:
        """True when at least one item has an image."""
        return bool(self.items["image_path"].notna().any())

    def image_file(self, rel: str | None) -> Path | None:
        """Absolute path of an image given relative to the dataset directory."""
        return None if rel is None or (isinstance(rel, float) and np.isnan(rel)) else self.root / rel


def _rows(mask: np.ndarray | pd.Series) -> list[int]:
    return [int(i) for i in np.flatnonzero(np.asarray(mask))[:MAX_PROBLEMS_PER_CHECK]]


def _fmt_rows(rows: list[int], total: int) -> str:
    shown = ", ".join(str(r) for r in rows)
    return f"rows {shown}" + (f" (and {total - len(rows)} more)" if total > len(rows) else "")


def _check_column(file: str, df: pd.DataFrame, col: str, kind: str, problems: list[str]) -> None:
    s = df[col]
    nullable = kind.endswith("?")
    base = kind.rstrip("?")
    if not nullable and s.isna().any():
        bad = s.isna()
        problems.append(f"{file}: column '{col}' has nulls at {_fmt_rows(_rows(bad), int(bad.sum()))}")
    if base == "int" and not pd.api.types.is_integer_dtype(s.dtype):
        problems.append(f"{file}: column '{col}' must be an integer column, found {s.dtype}")
    elif base == "str" and not (pd.api.types.is_object_dtype(s.dtype) or pd.api.types.is_string_dtype(s.dtype)):
        problems.append(f"{file}: column '{col}' must be a string column, found {s.dtype}")
    elif base == "str":
        nonnull = s.dropna()
        bad = ~nonnull.map(lambda v: isinstance(v, str))
        if bad.any():
            positions = np.flatnonzero(s.notna().to_numpy())[bad.to_numpy()]
            idx = [int(i) for i in positions[:MAX_PROBLEMS_PER_CHECK]]
            problems.append(f"{file}: column '{col}' holds non-strings at {_fmt_rows(idx, int(bad.sum()))}")
    elif base == "ts":
        if not isinstance(s.dtype, pd.DatetimeTZDtype):
            problems.append(f"{file}: column '{col}' must be a UTC timestamp, found {s.dtype}")
        elif str(s.dtype.tz) != "UTC":
            problems.append(f"{file}: column '{col}' must be in UTC, found timezone {s.dtype.tz}")


def _check_ids(file: str, df: pd.DataFrame, col: str, known: set[int] | np.ndarray, problems: list[str]) -> None:
    if not pd.api.types.is_integer_dtype(df[col].dtype):
        return
    bad = ~df[col].isin(known)
    if bad.any():
        ids = sorted({int(v) for v in df.loc[bad, col].head(MAX_PROBLEMS_PER_CHECK)})
        problems.append(
            f"{file}: {col} refers to unknown items at {_fmt_rows(_rows(bad), int(bad.sum()))} (ids {ids})"
        )
    neg = df[col] < 0
    if neg.any():
        problems.append(f"{file}: {col} is negative at {_fmt_rows(_rows(neg), int(neg.sum()))}")


def _check_clicked_lists(col: pd.Series, known: set[int], problems: list[str]) -> None:
    """``clicked_item_ids``: each value null or a list of existing item ids."""
    bad_type: list[int] = []
    flat: list[int] = []
    for row, lst in enumerate(col.tolist()):
        if lst is None:
            continue
        values = list(lst) if isinstance(lst, list | tuple | np.ndarray) else None
        if values is None or not all(isinstance(v, int | np.integer) for v in values):
            bad_type.append(row)
            continue
        flat.extend(int(v) for v in values)
    if bad_type:
        problems.append(
            "queries.parquet: clicked_item_ids must be lists of integer item ids at "
            + _fmt_rows(bad_type[:MAX_PROBLEMS_PER_CHECK], len(bad_type))
        )
    unknown = sorted(set(flat) - known)
    if unknown:
        problems.append(f"queries.parquet: clicked_item_ids refer to unknown items {unknown[:20]}")


def _check_images(root: Path, file: str, df: pd.DataFrame, col: str, problems: list[str], decode: bool) -> None:
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


def _check_users(users: pd.DataFrame, problems: list[str]) -> None:
    """``users.parquet``: an integer, unique ``user_id``; every other column is a side feature."""
    if "user_id" not in users.columns:
        problems.append(f"{USERS_FILE}: missing columns ['user_id']")
        return
    _check_column(USERS_FILE, users, "user_id", "int", problems)
    dup = users["user_id"].duplicated()
    if dup.any():
        problems.append(f"{USERS_FILE}: duplicate user_id at {_fmt_rows(_rows(dup), int(dup.sum()))}")


def _read(root: Path, file: str, problems: list[str]) -> pd.DataFrame | None:
    path = root / file
    if not path.is_file():
        if file in REQUIRED_FILES:
            problems.append(f"{file}: missing")
        return None
    try:
        return pq.read_table(path).to_pandas()
    except Exception as exc:  # noqa: BLE001 - any parquet failure is a dataset problem to report
        problems.append(f"{file}: cannot be read as parquet ({exc})")
        return None


def validate_dataset(root: str | Path, *, decode_images: bool = True) -> tuple[list[str], Dataset | None]:
    """Check a dataset directory against the import format.

    Args:
        root: the dataset directory.
        decode_images: also open every image file (slower; existence is always checked).

    Returns:
        ``(problems, dataset)``: every problem found (empty when valid) and the loaded dataset
        when it is valid (None otherwise).
    """
    root = Path(root)
    if not root.is_dir():
        return [f"{root}: not a directory"], None
    problems: list[str] = []
    frames: dict[str, pd.DataFrame] = {}
    for file, columns in SCHEMA.items():
        df = _read(root, file, problems)
        if df is None:
            continue
        frames[file] = df
        missing = [c for c in columns if c not in df.columns]
        if missing:
            problems.append(f"{file}: missing columns {missing}")
        extra = set(df.columns) - set(columns) - OPTIONAL_COLUMNS.get(file, set())
        if extra and file not in SIDE_FEATURE_FILES:
            problems.append(f"{file}: unexpected columns {sorted(extra)}")
        for col, kind in columns.items():
            if col in df.columns:
                _check_column(file, df, col, kind, problems)
    items = frames.get("items.parquet")
    if items is not None and "item_id" in items.columns:
        dup = items["item_id"].duplicated()
        if dup.any():
            problems.append(f"items.parquet: duplicate item_id at {_fmt_rows(_rows(dup), int(dup.sum()))}")
        known = set(items["item_id"].dropna().astype("int64").tolist())
        for file in ("behaviors.parquet", "impressions.parquet", "queries.parquet"):
            if file in frames and "item_id" in frames[file].columns:
                _check_ids(file, frames[file], "item_id", known, problems)
        q = frames.get("queries.parquet")
        if q is not None and "clicked_item_ids" in q.columns:
            _check_clicked_lists(q["clicked_item_ids"], known, problems)
        if "image_path" in items.columns:
            _check_images(root, "items.parquet", items, "image_path", problems, decode_images)
    queries = frames.get("queries.parquet")
    if queries is not None and "query_image_path" in queries.columns:
        _check_images(root, "queries.parquet", queries, "query_image_path", problems, decode_images)
    beh = frames.get("behaviors.parquet")
    if beh is not None and "action" in beh.columns:
        bad = ~beh["action"].isin(ACTIONS)
        if bad.any():
            problems.append(
                f"behaviors.parquet: action not one of {list(ACTIONS)} at {_fmt_rows(_rows(bad), int(bad.sum()))}"
            )
    imp = frames.get("impressions.parquet")
    if imp is not None and "clicked" in imp.columns and pd.api.types.is_integer_dtype(imp["clicked"].dtype):
        bad = ~imp["clicked"].isin([0, 1])
        if bad.any():
            problems.append(f"impressions.parquet: clicked not 0/1 at {_fmt_rows(_rows(bad), int(bad.sum()))}")
    users = _read(root, USERS_FILE, problems)
    if users is not None:
        _check_users(users, problems)
    if problems:
        return problems, None
    queries = frames.get("queries.parquet")
    if queries is None:
        queries = pd.DataFrame({c: pd.Series(dtype="object") for c in SCHEMA["queries.parquet"]})
    ds = Dataset(
        root=root,
        items=frames["items.parquet"],
        behaviors=frames["behaviors.parquet"],
        impressions=frames["impressions.parquet"],
        queries=queries,
        users=users,
    )
    return [], ds


def load_dataset(root: str | Path, *, decode_images: bool = False) -> Dataset:
    """Validate and load a dataset; raise :class:`DatasetError` listing every problem."""
    problems, ds = validate_dataset(root, decode_images=decode_images)
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
