"""The Feast store of mmads: render ``feature_store.yaml`` from config, apply, open, append, write.

Everything lives under ``cfg.state_dir / "feature_repo"``: ``feature_store.yaml``, ``registry.db``,
``online.db`` (SQLite online store; Redis when ``cfg.feast.online_store == "redis"``) and the offline
part files ``offline/<view>/part-*.parquet`` read by the duckdb (default) or file offline store.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml
from feast import FeatureStore

from feature_repo.data_sources import offline_dir, repo_dir
from feature_repo.definitions import build_definitions
from feature_repo.schema import (
    ITEM_COLUMNS,
    ITEM_SCHEMA,
    ITEM_VIEW,
    SERVING_SERVICE,
    TRAINING_SERVICE,
    TS_FIELD,
    USER_COLUMNS,
    USER_SCHEMA,
    USER_VIEW,
    VIEW_SCHEMAS,
)
from infra.config import MmadsConfig
from infra.errors import FeatureError, StackNotRunningError

logger = logging.getLogger(__name__)

__all__ = [
    "ITEM_COLUMNS", "ITEM_SCHEMA", "ITEM_VIEW", "SERVING_SERVICE", "TRAINING_SERVICE", "TS_FIELD",
    "USER_COLUMNS", "USER_SCHEMA", "USER_VIEW", "append_offline", "apply_repo", "open_store",
    "read_offline", "render_feature_store_yaml", "to_arrow", "write_online_items", "write_online_users",
]

_EMPTY_PART = "part-00000000000000000000-empty.parquet"


def _online_store_section(cfg: MmadsConfig, root: Path) -> dict[str, Any]:
    if cfg.feast.online_store == "redis":
        return {
            "type": "redis",
            "redis_type": cfg.feast.redis_type,
            "connection_string": cfg.feast.redis_connection_string,
        }
    return {"type": "sqlite", "path": str(root / "online.db")}


def render_feature_store_yaml(cfg: MmadsConfig) -> Path:
    """Write ``feature_store.yaml`` for ``cfg`` (atomically) and return its path.

    Args:
        cfg: the configuration (``feast`` section and ``state_dir``).

    Returns:
        The path of the rendered file.
    """
    root = repo_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    doc = {
        "project": cfg.feast.project,
        "provider": "local",
        "registry": {"path": str(root / "registry.db"), "cache_ttl_seconds": 60},
        "online_store": _online_store_section(cfg, root),
        "offline_store": {"type": cfg.feast.offline_store},
        "entity_key_serialization_version": cfg.feast.entity_key_serialization_version,
    }
    path = root / "feature_store.yaml"
    tmp = root / f".feature_store.yaml.{uuid.uuid4().hex}.tmp"
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)
    return path


def _ensure_offline_dirs(cfg: MmadsConfig) -> None:
    """Create each view's part directory with an empty, typed part (a glob must match a file)."""
    for view, schema in VIEW_SCHEMAS.items():
        folder = offline_dir(cfg, view)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / _EMPTY_PART).exists():
            _write_atomic(schema.empty_table(), folder / _EMPTY_PART)


def apply_repo(cfg: MmadsConfig) -> FeatureStore:
    """Render the yaml, create the offline directories and apply every definition (slow: 6-9 s).

    Args:
        cfg: the configuration.

    Returns:
        The applied, open store.
    """
    render_feature_store_yaml(cfg)
    _ensure_offline_dirs(cfg)
    started = time.perf_counter()
    store = FeatureStore(repo_path=str(repo_dir(cfg)))
    store.apply(build_definitions(cfg))
    logger.info("feast apply of %s took %.1f s", repo_dir(cfg), time.perf_counter() - started)
    return store


def open_store(cfg: MmadsConfig) -> FeatureStore:
    """Open the applied store (no apply); the yaml is re-rendered so config changes take effect.

    Raises:
        StackNotRunningError: the repo under ``cfg.state_dir`` was never applied.
    """
    root = repo_dir(cfg)
    if not (root / "registry.db").exists():
        raise StackNotRunningError(
            f"the feature repo at {root} was never applied (no registry.db): "
            "apply it first (feature_repo.store.apply_repo, or start the stack)"
        )
    render_feature_store_yaml(cfg)
    return FeatureStore(repo_path=str(root))


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def to_arrow(view: str, df: pd.DataFrame) -> pa.Table:
    """Cast a frame to the exact Arrow schema of ``view`` (timestamps floored to microseconds).

    Raises:
        FeatureError: unknown view or missing columns.
    """
    if view not in VIEW_SCHEMAS:
        raise FeatureError(f"unknown feature view {view!r}; expected one of {sorted(VIEW_SCHEMAS)}")
    schema = VIEW_SCHEMAS[view]
    missing = [c for c in schema.names if c not in df.columns]
    if missing:
        raise FeatureError(f"rows for {view} lack columns {missing}")
    frame = df[schema.names].copy()
    for f in schema:
        if pa.types.is_timestamp(f.type):
            frame[f.name] = pd.to_datetime(frame[f.name], utc=True).dt.floor("us")
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def append_offline(cfg: MmadsConfig, view: str, df: pd.DataFrame | pa.Table) -> Path:
    """Append ``df`` to the offline data of ``view`` as one new part file (tmp + rename).

    Args:
        cfg: the configuration (where the repo lives).
        view: ``item_embeddings`` or ``user_behavior``.
        df: rows with the view's columns (:data:`ITEM_COLUMNS` / :data:`USER_COLUMNS`); an Arrow
            table is cast to the view's schema as is.

    Returns:
        The path of the new part file.
    """
    if isinstance(df, pa.Table):
        if view not in VIEW_SCHEMAS:
            raise FeatureError(f"unknown feature view {view!r}; expected one of {sorted(VIEW_SCHEMAS)}")
        table = df.select(VIEW_SCHEMAS[view].names).cast(VIEW_SCHEMAS[view])
    else:
        table = to_arrow(view, df)
    folder = offline_dir(cfg, view)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    _write_atomic(table, path)
    logger.debug("appended %d rows to %s", table.num_rows, path)
    return path


def read_offline(cfg: MmadsConfig, view: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Every offline row of ``view`` (all part files), optionally only ``columns``.

    Raises:
        FeatureError: unknown view.
    """
    if view not in VIEW_SCHEMAS:
        raise FeatureError(f"unknown feature view {view!r}; expected one of {sorted(VIEW_SCHEMAS)}")
    files = sorted(str(p) for p in offline_dir(cfg, view).glob("*.parquet"))
    dataset = pads.dataset(files, schema=VIEW_SCHEMAS[view], format="parquet")
    return dataset.to_table(columns=columns).to_pandas()


def _coalesce(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """The latest row per entity (by event_timestamp, ties: the later row)."""
    if df.empty:
        return df
    return df.sort_values(TS_FIELD, kind="stable").drop_duplicates(key, keep="last")


def write_online_items(store: FeatureStore, df: pd.DataFrame) -> None:
    """Upsert item rows (:data:`ITEM_COLUMNS`) into the online store, one write per call."""
    frame = _coalesce(to_arrow(ITEM_VIEW, df).to_pandas(), "item_id")
    if not frame.empty:
        store.write_to_online_store(ITEM_VIEW, frame)


def write_online_users(store: FeatureStore, df: pd.DataFrame) -> None:
    """Upsert user history rows (:data:`USER_COLUMNS`), keeping the latest row per user."""
    frame = _coalesce(to_arrow(USER_VIEW, df).to_pandas(), "user_id")
    if not frame.empty:
        store.write_to_online_store(USER_VIEW, frame)
