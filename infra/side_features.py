"""Side features: extra columns of ``items.parquet`` and the optional ``users.parquet``.

A side feature is named in config (``data.side_features``) or discovered from the dataset (config
``null``): every column of ``items.parquet`` beyond the import format and every column of
``users.parquet`` but ``user_id``. Discovered kinds: strings, booleans and integer columns named
``*_id`` are categorical; other integers and floats are numeric; anything else (timestamps, lists)
is skipped with a warning.

The resolved list is stored back into the run's config (:func:`with_side_features`), so the Feast
views, the training set and the models all read the same list.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from infra.config import MmadsConfig, SideFeature
from infra.dataset import Dataset
from infra.errors import ConfigError

logger = logging.getLogger(__name__)

# columns of the feature views and the training set a side feature may not shadow
RESERVED_NAMES = frozenset({
    "user_id", "item_id", "ts", "clicked", "category", "item_created_at", "created_at", "has_emb",
    "item_emb", "emb", "hist_item_ids", "hist_emb_flat", "last_event_ts", "event_timestamp", "hist_len",
    "sim_max", "sim_mean", "is_new", "title", "image_path", "_row",
})


def _is_reserved(name: str) -> bool:
    return name in RESERVED_NAMES or name.startswith("tier_")


def infer_kind(name: str, series: pd.Series) -> str | None:
    """The kind of a discovered column: ``categorical``, ``numeric`` or None (not a side feature)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_integer_dtype(dtype):
        return "categorical" if name.endswith("_id") else "numeric"
    if pd.api.types.is_float_dtype(dtype):
        return "numeric"
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        values = series.dropna()
        return "categorical" if values.map(lambda v: isinstance(v, str)).all() else None
    return None


def _extra_columns(ds: Dataset) -> dict[str, list[str]]:
    items = ds.item_side_columns  # beyond the contract's columns, optional ones (image_path) included
    users = [c for c in ds.users.columns if c != "user_id"] if ds.users is not None else []
    return {"items": items, "users": users}


def _frame(ds: Dataset, source: str) -> pd.DataFrame | None:
    return ds.items if source == "items" else ds.users


def discover_side_features(ds: Dataset) -> tuple[SideFeature, ...]:
    """Every usable extra column of the dataset as a side feature (kinds inferred).

    Raises:
        ConfigError: a discovered column is named like a reserved column or appears in both files.
    """
    found: list[SideFeature] = []
    for source, columns in _extra_columns(ds).items():
        frame = _frame(ds, source)
        if frame is None:
            continue
        for name in columns:
            kind = infer_kind(name, frame[name])
            if kind is None:
                logger.warning("%s.parquet column %r (%s) is not a side feature: not numeric or categorical",
                               source, name, frame[name].dtype)
                continue
            found.append(SideFeature(name=name, kind=kind, source=source))  # type: ignore[arg-type]
    _check_names(found)
    return tuple(found)


def _check_names(specs: Sequence[SideFeature]) -> None:
    names = [s.name for s in specs]
    reserved = [n for n in names if _is_reserved(n)]
    if reserved:
        raise ConfigError(f"side features may not be named like the platform's own columns: {reserved}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"side features {dup} appear in both items.parquet and users.parquet; rename one")


def resolve_side_features(cfg: MmadsConfig, ds: Dataset) -> tuple[SideFeature, ...]:
    """The side features of a run: the configured ones (checked against the dataset), else discovered.

    Raises:
        ConfigError: a configured feature is not a column of its source file, or has a kind its
            values cannot have (numeric over a non-numeric column).
    """
    declared = cfg.data.side_features
    if declared is None:
        return discover_side_features(ds)
    _check_names(declared)
    problems = []
    for spec in declared:
        frame = _frame(ds, spec.source)
        if frame is None or spec.name not in frame.columns or spec.name in ("user_id", "item_id"):
            problems.append(f"{spec.name}: no such column in {spec.source}.parquet")
        elif spec.kind == "numeric" and not (
            pd.api.types.is_numeric_dtype(frame[spec.name].dtype) and not pd.api.types.is_bool_dtype(
                frame[spec.name].dtype)):
            problems.append(f"{spec.name}: declared numeric, but {spec.source}.parquet holds {frame[spec.name].dtype}")
    if problems:
        raise ConfigError("config data.side_features does not fit the dataset: " + "; ".join(problems))
    return tuple(declared)


def with_side_features(cfg: MmadsConfig, specs: Sequence[SideFeature]) -> MmadsConfig:
    """A copy of ``cfg`` whose ``data.side_features`` is exactly ``specs`` (a resolved list)."""
    return cfg.with_overrides(data={"side_features": [s.model_dump() for s in specs]})


def configured(cfg: MmadsConfig, source: str | None = None) -> tuple[SideFeature, ...]:
    """The side features in ``cfg`` (none while unresolved), optionally only those of ``source``."""
    specs = cfg.data.side_features or ()
    return tuple(s for s in specs if source is None or s.source == source)


def side_values(specs: Sequence[SideFeature], frame: pd.DataFrame) -> pd.DataFrame:
    """The stored form of side-feature columns: categoricals as strings (None = missing), numerics float64.

    Both the Feast rows and, through them, the training set and serving see this form, so a
    categorical ``shop_id`` 7 is the label ``"7"`` everywhere.
    """
    out = pd.DataFrame(index=frame.index)
    for spec in specs:
        col = frame[spec.name]
        if spec.kind == "numeric":
            out[spec.name] = pd.to_numeric(col, errors="coerce").astype("float64")
        else:
            out[spec.name] = pd.Series([None if pd.isna(v) else str(v) for v in col.tolist()],
                                       index=frame.index, dtype="object")
    return out
