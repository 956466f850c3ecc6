"""The Feast store of mmads: render ``feature_store.yaml`` from config, apply, open, append, write.

Everything lives under ``cfg.state_dir / "feature_repo"``: ``feature_store.yaml``, ``registry.db``,
``online.db`` (SQLite online store; Redis when ``cfg.feast.online_store == "redis"``) and the offline
part files ``offline/<view>/part-*.parquet`` read by the duckdb (default), file or Spark offline store.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml
from feast import FeatureStore, FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.types import Array, Float32, Int64, UnixTimestamp

from feature_repo.data_sources import offline_dir, repo_dir
from feature_repo.definitions import build_definitions
from feature_repo.feast_internals import online_write_batch
from feature_repo.schema import (
    CREATED_FIELD,
    ITEM_COLUMNS,
    ITEM_SCHEMA,
    ITEM_VECTOR_COLUMNS,
    ITEM_VIEW,
    SERVING_SERVICE,
    SIDE_VIEWS,
    TRAINING_SERVICE,
    TS_FIELD,
    USER_COLUMNS,
    USER_SCHEMA,
    USER_VIEW,
    VIEW_KEYS,
    VIEW_SCHEMAS,
    part_schema,
    side_schema,
)
from feature_repo.sqlite_rows import SqliteRowWriter
from infra.config import MmadsConfig
from infra.errors import FeatureError, StackNotRunningError

logger = logging.getLogger(__name__)

__all__ = [
    "ITEM_COLUMNS", "ITEM_SCHEMA", "ITEM_VIEW", "SERVING_SERVICE", "TRAINING_SERVICE", "TS_FIELD",
    "USER_COLUMNS", "USER_SCHEMA", "USER_VIEW", "append_offline", "apply_repo", "open_store",
    "latest_item_vectors", "latest_offline", "read_offline", "render_feature_store_yaml", "to_arrow",
    "view_schemas", "write_online_items", "write_online_users",
]

_TS_US = pa.timestamp("us", tz="UTC")
_EMPTY_PART = "part-00000000000000000000-empty.parquet"


def _online_store_section(cfg: MmadsConfig, root: Path) -> dict[str, Any]:
    if cfg.feast.online_store == "redis":
        conn = cfg.feast.redis_connection_string
        if os.environ.get(cfg.feast.redis_password_env):
            # a reference Feast expands when it loads the file: the password never lands on disk
            conn += f",password=${{{cfg.feast.redis_password_env}}}"
        return {"type": "redis", "redis_type": cfg.feast.redis_type, "connection_string": conn}
    return {"type": "sqlite", "path": str(root / "online.db")}


def _offline_store_section(cfg: MmadsConfig) -> dict[str, Any]:
    if cfg.feast.offline_store == "spark":
        return {"type": "spark", "spark_conf": cfg.feast.spark.spark_conf()}
    return {"type": cfg.feast.offline_store}


REPO_DEFINITIONS = "mmads_repo.py"  # beside feature_store.yaml: what the feast CLI reads
REPO_CONFIG = "mmads_config.yaml"  # the config the definitions are built from (no secrets)
_DEFINITIONS_SOURCE = '''"""Feast definitions of this mmads feature repo, for the feast CLI.

Rendered by mmads (feature_repo.store.render_feature_store_yaml): the objects are the ones
`mmads stack up` applies, built by feature_repo.definitions from the config beside this file, so
`feast plan`, `feast apply`, `feast feature-views list` and `feast ui` work here. Edit the
definitions in the mmads package, not here: this file is rewritten.
"""

from pathlib import Path as _Path

from feature_repo.definitions import build_definitions as _build_definitions
from infra.config import load_config as _load_config

for _obj in _build_definitions(_load_config(_Path(__file__).with_name("{config}"), env={{}})):
    globals()[f"{{type(_obj).__name__}}_{{_obj.name}}"] = _obj
'''


def render_feature_store_yaml(cfg: MmadsConfig) -> Path:
    """Write the Feast repo for ``cfg`` (atomically): ``feature_store.yaml`` beside the definitions.

    The definitions file (:data:`REPO_DEFINITIONS`) builds the objects of
    :func:`~feature_repo.definitions.build_definitions` from the config written beside it
    (:data:`REPO_CONFIG`), so the ``feast`` CLI can own the repo.

    Args:
        cfg: the configuration (``feast`` section and ``state_dir``).

    Returns:
        The path of ``feature_store.yaml``.
    """
    root = repo_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    doc = {
        "project": cfg.feast.project,
        "provider": "local",
        "registry": {"path": str(root / "registry.db"), "cache_ttl_seconds": 60},
        "online_store": _online_store_section(cfg, root),
        "offline_store": _offline_store_section(cfg),
        "entity_key_serialization_version": cfg.feast.entity_key_serialization_version,
    }
    _write_text_atomic(root / REPO_CONFIG, yaml.safe_dump(cfg.model_dump(mode="json")))
    _write_text_atomic(root / REPO_DEFINITIONS, _DEFINITIONS_SOURCE.format(config=REPO_CONFIG))
    path = root / "feature_store.yaml"
    _write_text_atomic(path, yaml.safe_dump(doc, sort_keys=False))
    return path


def _write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (other processes render the same repo)."""
    if path.is_file() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
def view_schemas(cfg: MmadsConfig) -> dict[str, pa.Schema]:
    """The Arrow schema of every stored view of ``cfg``: the two fixed views and the side views."""
    out = dict(VIEW_SCHEMAS)
    for source, view in SIDE_VIEWS.items():
        if any(s.source == source for s in cfg.data.side_features or ()):
            out[view] = side_schema(source, cfg.data.side_features or ())
    return out


def _ensure_offline_dirs(cfg: MmadsConfig) -> None:
    """Create each view's part directory with an empty, typed part (a glob must match a file).

    A side view whose features changed since the empty part was written gets a new one: every part
    of a view must carry its current columns.
    """
    for view, view_schema in view_schemas(cfg).items():
        schema = part_schema(view_schema)
        folder = offline_dir(cfg, view)
        folder.mkdir(parents=True, exist_ok=True)
        empty = folder / _EMPTY_PART
        stale = (view not in VIEW_SCHEMAS and empty.exists()
                 and not pq.read_schema(empty).remove_metadata().equals(schema))
        if not empty.exists() or stale:
            _write_atomic(schema.empty_table(), empty)


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


def _schema_of(view: str, schema: pa.Schema | None) -> pa.Schema:
    if schema is not None:
        return schema
    if view not in VIEW_SCHEMAS:
        raise FeatureError(f"unknown feature view {view!r}; expected one of {sorted(VIEW_SCHEMAS)}")
    return VIEW_SCHEMAS[view]


def to_arrow(view: str, df: pd.DataFrame | pa.Table, schema: pa.Schema | None = None) -> pa.Table:
    """Cast a frame to the exact Arrow schema of ``view`` (timestamps floored to microseconds).

    Args:
        view: the view name.
        df: its rows: a frame, or an Arrow table (taken as it is when its columns already have the
            view's types, else converted like a frame).
        schema: the view's schema; required for the side views (:func:`view_schemas`).

    Raises:
        FeatureError: unknown view or missing columns.
    """
    schema = _schema_of(view, schema)
    names = df.column_names if isinstance(df, pa.Table) else df.columns
    missing = [c for c in schema.names if c not in names]
    if missing:
        raise FeatureError(f"rows for {view} lack columns {missing}")
    if isinstance(df, pa.Table):
        picked = df.select(schema.names)
        return picked if picked.schema.equals(schema) else to_arrow(view, picked.to_pandas(), schema)
    frame = df[schema.names].copy()
    for f in schema:
        if pa.types.is_timestamp(f.type):
            frame[f.name] = pd.to_datetime(frame[f.name], utc=True).dt.floor("us")
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


_last_created_us = 0


def _created_stamps(n: int) -> pa.Array:
    """``n`` write times, one microsecond apart and after every earlier stamp of this process.

    Row order is apply order (a job appends its snapshots in the order it folded the events), so a
    later row of an entity always has the later stamp, even within one part file.
    """
    global _last_created_us
    start = max(time.time_ns() // 1000, _last_created_us + 1)
    _last_created_us = start + max(n - 1, 0)
    return pa.array(np.arange(start, start + n, dtype=np.int64), type=pa.int64()).cast(_TS_US)


def append_offline(cfg: MmadsConfig, view: str, df: pd.DataFrame | pa.Table,
                   schema: pa.Schema | None = None) -> Path:
    """Append ``df`` to the offline data of ``view`` as one new part file (tmp + rename).

    Each row is stamped with its write time (:data:`~feature_repo.schema.CREATED_FIELD`), which
    breaks ties between rows of one entity with equal event times in point-in-time joins.

    Args:
        cfg: the configuration (where the repo lives).
        view: ``item_embeddings`` or ``user_behavior``.
        df: rows with the view's columns (:data:`ITEM_COLUMNS` / :data:`USER_COLUMNS`); an Arrow
            table is cast to the view's schema as is.
        schema: the view's schema; required for the side views (:func:`view_schemas`).

    Returns:
        The path of the new part file.
    """
    if isinstance(df, pa.Table):
        target = _schema_of(view, schema)
        table = df.select(target.names).cast(target)
    else:
        table = to_arrow(view, df, schema)
    table = table.append_column(CREATED_FIELD, _created_stamps(table.num_rows))
    folder = offline_dir(cfg, view)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    _write_atomic(table, path)
    logger.debug("appended %d rows to %s", table.num_rows, path)
    return path


def read_offline(cfg: MmadsConfig, view: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Every offline row of ``view`` (all part files, side views included), optionally only ``columns``.

    Raises:
        FeatureError: unknown view.
    """
    schemas = view_schemas(cfg)
    if view not in schemas:
        raise FeatureError(f"unknown feature view {view!r}; expected one of {sorted(schemas)}")
    files = sorted(str(p) for p in offline_dir(cfg, view).glob("*.parquet"))
    dataset = pads.dataset(files, schema=part_schema(schemas[view]), format="parquet")
    return dataset.to_table(columns=columns).to_pandas()


def _coalesce(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """The latest row per entity (by event_timestamp, ties: the later row)."""
    if df.empty:
        return df
    return df.sort_values(TS_FIELD, kind="stable").drop_duplicates(key, keep="last")


def latest_offline(cfg: MmadsConfig, view: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The latest offline row per entity of ``view`` (by ``event_timestamp``; ties: the later row).

    Args:
        cfg: the configuration.
        view: ``item_embeddings`` or ``user_behavior``.
        columns: the columns to return (the entity key and ``event_timestamp`` are read either way).

    Raises:
        FeatureError: unknown view.
    """
    if view not in VIEW_KEYS:
        raise FeatureError(f"unknown feature view {view!r}; expected one of {sorted(VIEW_KEYS)}")
    key = VIEW_KEYS[view]
    read = None if columns is None else list(dict.fromkeys([key, TS_FIELD, *columns]))
    rows = _coalesce(read_offline(cfg, view, read), key).reset_index(drop=True)
    return rows if columns is None else rows[columns]


def latest_item_vectors(cfg: MmadsConfig) -> pd.DataFrame:
    """The item-vector table (:data:`~feature_repo.schema.ITEM_VECTOR_COLUMNS`) from the offline store."""
    return latest_offline(cfg, ITEM_VIEW, ITEM_VECTOR_COLUMNS)


def write_online_items(store: FeatureStore, df: pd.DataFrame) -> None:
    """Upsert item rows (:data:`ITEM_COLUMNS`) into the online store, one write per call."""
    write_online_rows(store, ITEM_VIEW, df)


def write_online_users(store: FeatureStore, df: pd.DataFrame | pa.Table) -> None:
    """Upsert user history rows (:data:`USER_COLUMNS`), keeping the latest row per user."""
    write_online_rows(store, USER_VIEW, df)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


_SMALL_VARINTS = [_varint(n) for n in range(1 << 14)]  # every length of a list up to 16 KiB: one lookup
_FLOAT_LIST_TAG = _varint(ValueProto.DESCRIPTOR.fields_by_name["float_list_val"].number << 3 | 2)
_INT64_LIST_TAG = _varint(ValueProto.DESCRIPTOR.fields_by_name["int64_list_val"].number << 3 | 2)
_UNIX_TIMESTAMP_TAG = _varint(ValueProto.DESCRIPTOR.fields_by_name["unix_timestamp_val"].number << 3)


def _length(n: int) -> bytes:
    return _SMALL_VARINTS[n] if n < 16_384 else _varint(n)


def _packed_wire(tag: bytes, payload: bytes) -> bytes:
    """The serialized list ``Value`` whose list field holds ``payload``, the packed bytes of its elements.

    Byte for byte what ``ValueProto.SerializeToString`` gives for that value (unit tests compare them):
    the list field's tag, its length, then the list message (field 1, packed: tag 0x0a, length, payload);
    an empty list is the field with length 0.
    """
    if not payload:
        return tag + b"\x00"
    size = _length(len(payload))
    return tag + _length(1 + len(size) + len(payload)) + b"\x0a" + size + payload


def _varints(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """``(wire bytes, bounds)``: the protobuf varints of int64 ``values``, concatenated.

    Value i's varint is ``wire[bounds[i]:bounds[i + 1]]``: 7 bits a byte, low group first, the high
    bit set on every byte but the last; a negative value is its two's complement (10 bytes).
    """
    u = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
    size = np.ones(len(u), dtype=np.int64)
    for k in range(1, 10):
        size += (u >> np.uint64(7 * k)) != 0
    bounds = np.zeros(len(u) + 1, dtype=np.int64)
    np.cumsum(size, out=bounds[1:])
    out = np.empty(int(bounds[-1]), dtype=np.uint8)
    for k in range(10):
        at = np.flatnonzero(size > k)
        if not len(at):
            break
        group = (u[at] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (size[at] > k + 1).astype(np.uint64) << np.uint64(7)
        out[bounds[at] + k] = (group | more).astype(np.uint8)
    return out.tobytes(), bounds


def _float_list_wires(flat: np.ndarray, offsets: np.ndarray, valid: np.ndarray) -> list[bytes]:
    """Row r's float32 list ``flat[offsets[r]:offsets[r + 1]]``, serialized as a ``Value`` (null rows: ``b""``)."""
    data = np.ascontiguousarray(flat, dtype="<f4").tobytes()
    at = (offsets * 4).tolist()
    return [_packed_wire(_FLOAT_LIST_TAG, data[at[r]:at[r + 1]]) if ok else b""
            for r, ok in enumerate(valid.tolist())]


def _int64_list_wires(flat: np.ndarray, offsets: np.ndarray, valid: np.ndarray) -> list[bytes]:
    """Row r's int64 list ``flat[offsets[r]:offsets[r + 1]]``, serialized as a ``Value`` (null rows: ``b""``).

    Byte for byte Feast's ``Value(int64_list_val=Int64List(val=...))`` (a unit test compares them),
    built from one vectorised varint encoding instead of a Python int per element.
    """
    wire, bounds = _varints(flat)
    at = bounds[offsets].tolist()
    return [_packed_wire(_INT64_LIST_TAG, wire[at[r]:at[r + 1]]) if ok else b""
            for r, ok in enumerate(valid.tolist())]


def _latest_rows(table: pa.Table, key: str) -> pa.Table:
    """:func:`_coalesce` on an Arrow table: the latest row per entity, in the same order."""
    if table.num_rows == 0:
        return table
    index = pd.DataFrame({key: table.column(key).to_numpy(), TS_FIELD: table.column(TS_FIELD).to_numpy()})
    return table.take(pa.array(_coalesce(index, key).index.to_numpy()))


def _list_offsets(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(flat values, offsets, valid)`` of a list column: row r is ``flat[offsets[r]:offsets[r + 1]]``."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    offsets = arr.offsets.to_numpy()
    flat = arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_numpy(zero_copy_only=False)
    valid = (arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count
             else np.ones(len(arr), dtype=bool))
    return flat, offsets - offsets[0], valid


def _unix_seconds(column: pa.ChunkedArray) -> np.ndarray:
    """Feast's ``unix_timestamp_val`` of each value of a timestamp column without nulls.

    Feast stores ``int(t.timestamp())``: the float seconds truncated toward zero, which is
    ``trunc(us / 1e6)`` in the same float64 arithmetic (a unit test compares both over 400,000 times).
    """
    us = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    return np.trunc(us / 1e6).astype(np.int64)


def _unix_timestamp_wires(column: pa.ChunkedArray) -> list[bytes]:
    """Each time of a timestamp column without nulls as Feast's serialized ``Value(unix_timestamp_val=...)``."""
    wire, bounds = _varints(_unix_seconds(column))
    at = bounds.tolist()
    return [_UNIX_TIMESTAMP_TAG + wire[a:b] for a, b in zip(at[:-1], at[1:], strict=True)]


# One feature column of provider values: Feast's Value messages, or their serialized bytes (list and
# time features, built here without a message per cell; value_text is None for them).
ValueColumn = list[ValueProto] | list[bytes]


def _provider_columns(store: FeatureStore, view: str, df: pd.DataFrame | pa.Table, schema: pa.Schema | None,
                      wire: bool) -> tuple[list[int], dict[str, ValueColumn], list[datetime]]:
    """``(entity ids, {feature: value per row}, naive UTC event time per row)`` of ``df``'s latest rows per entity.

    With ``wire``, float-list, int64-list and timestamp features come as serialized ``Value`` bytes,
    encoded vectorised straight out of the Arrow columns (:func:`_float_list_wires`,
    :func:`_int64_list_wires`, :func:`_unix_timestamp_wires`); without it, as the ``Value`` messages
    those bytes parse to. Every other feature goes through Feast's own ``python_values_to_proto_values``.
    """
    key = VIEW_KEYS[view]
    table = _latest_rows(to_arrow(view, df, schema), key)
    fv = _feature_view(store, view)
    columns: dict[str, ValueColumn] = {}
    for field in fv.features:
        col = table.column(field.name)
        # only types whose value_text Feast's SQL stores leave NULL (extract_text_and_num gives text to
        # scalar strings, numbers and bools) are built here as bytes
        wires: list[bytes] | None = None
        if field.dtype in (Array(Float32), Array(Int64)):
            flat, off, valid = _list_offsets(col)
            wires = (_float_list_wires if field.dtype == Array(Float32) else _int64_list_wires)(flat, off, valid)
        elif field.dtype == UnixTimestamp and pa.types.is_timestamp(col.type) and col.null_count == 0:
            wires = _unix_timestamp_wires(col)
        if wires is None:
            columns[field.name] = python_values_to_proto_values(col.to_pandas().tolist(), field.dtype.to_value_type())
        else:
            columns[field.name] = wires if wire else [ValueProto.FromString(w) for w in wires]
    ids = table.column(key).to_numpy().astype(np.int64).tolist()
    stamps = pd.DatetimeIndex(table.column(TS_FIELD).to_pandas()).tz_convert(None).to_pydatetime().tolist()
    return ids, columns, stamps


def online_rows(store: FeatureStore, view: str, df: pd.DataFrame | pa.Table, schema: pa.Schema | None = None
                ) -> list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]]:
    """The provider rows of ``df`` for ``view``: what ``write_to_online_store`` builds, built faster.

    The latest row per entity wins (:func:`_provider_columns` builds the values). A test checks that
    rows written this way read back exactly like rows written by ``write_to_online_store``.
    """
    key = VIEW_KEYS[view]
    ids, columns, stamps = _provider_columns(store, view, df, schema, wire=False)
    names = list(columns)
    return [(EntityKeyProto(join_keys=[key], entity_values=[ValueProto(int64_val=i)]),
             {n: cast(ValueProto, columns[n][r]) for n in names}, t.replace(tzinfo=UTC), None)
            for r, (i, t) in enumerate(zip(ids, stamps, strict=True))]


def write_online_rows(store: FeatureStore, view: str, df: pd.DataFrame | pa.Table,
                      schema: pa.Schema | None = None) -> None:
    """Upsert ``df``'s rows of ``view`` into the online store with one provider write.

    This is ``store.write_to_online_store(view, df)`` without Feast's per-element conversion of list
    features (most of its time for 3,200-float history rows). ``schema``: required for side views.
    """
    writer = _sqlite_writer(store)
    if writer is None:
        rows = online_rows(store, view, df, schema)
        if rows:
            online_write_batch(store, _feature_view(store, view), rows)  # the public write is the slow part
        return
    ids, columns, stamps = _provider_columns(store, view, df, schema, wire=True)
    if ids:  # Feast's upsert statement, one executemany instead of a call per feature
        writer.write(_feature_view(store, view), VIEW_KEYS[view], ids, columns, stamps)


_WRITERS: weakref.WeakKeyDictionary[FeatureStore, SqliteRowWriter | None] = weakref.WeakKeyDictionary()
_VIEWS: weakref.WeakKeyDictionary[FeatureStore, dict[str, tuple[float, FeatureView]]] = weakref.WeakKeyDictionary()
VIEW_CACHE_S = 60.0


def _feature_view(store: FeatureStore, view: str) -> FeatureView:
    """``store.get_feature_view(view)``, kept for :data:`VIEW_CACHE_S` seconds.

    Feast rebuilds the view from the registry proto on every call (4 ms with its type checks); a
    stream job writes every batch. A re-applied repo is seen within the minute.
    """
    views = _VIEWS.setdefault(store, {})
    now = time.monotonic()
    hit = views.get(view)
    if hit is None or now - hit[0] > VIEW_CACHE_S:
        hit = views[view] = (now, store.get_feature_view(view))
    return hit[1]


def _sqlite_writer(store: FeatureStore) -> SqliteRowWriter | None:
    """The store's :class:`~feature_repo.sqlite_rows.SqliteRowWriter` (None: not a plain SQLite store)."""
    if store not in _WRITERS:
        _WRITERS[store] = SqliteRowWriter(store) if SqliteRowWriter.supports(store) else None
    return _WRITERS[store]
