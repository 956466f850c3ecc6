"""Direct batched reads of Feast's SQLite online-store rows, for the serving fast path.

Feast's ``SqliteOnlineStore.online_read`` spends most of a 200-row read outside SQLite: it builds
and serializes an ``EntityKey`` protobuf per id (~20% of the read), selects every feature of the
view together with its event timestamp, which Python's sqlite converter parses row by row (~45%),
and sorts the rows. :class:`SqliteRowReader` runs the same lookup on Feast's own connection and
table, but selects only the requested features and no timestamp, and builds the entity keys from a
byte template that it first checks against Feast's ``serialize_entity_key`` (any mismatch, e.g. a
future key format, falls back to Feast's function). It returns the stored ``ValueProto`` objects, so
callers decode them exactly as they decode Feast's answer; the parity tests compare both paths.

:class:`SqliteRowWriter` is the write side: Feast's ``online_write_batch`` runs one upsert statement
per (entity, feature) and serializes every entity key from a protobuf (the behavior job's main
cost once the user row lost its vectors); the writer runs the SAME upsert statement, row for row the
values Feast would store, through one ``executemany``. It applies only where Feast's write has no
extra columns (no ``value_num``, no vector search); elsewhere callers keep Feast's write. The
writer puts the database in write-ahead-log mode (see :class:`SqliteRowWriter`).
"""

from __future__ import annotations

import logging
import sqlite3
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import repeat
from typing import Any, cast

from feast import FeatureStore, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id, extract_text_and_num
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.utils import to_naive_utc

from feature_repo.feast_internals import sqlite_connection

logger = logging.getLogger(__name__)
_PROBES = (0, 1, -1, 2**40 + 7)  # ids whose serialized keys must all follow the template


class SqliteRowReader:
    """Batched reads of ``(entity id) -> {feature: ValueProto}`` from a store's SQLite online store.

    Args:
        store: an open Feast store whose online store is SQLite (see :meth:`supports`).
    """

    def __init__(self, store: FeatureStore) -> None:
        conn = sqlite_connection(store)  # the table Feast itself reads, on Feast's connection
        if conn is None:
            raise TypeError("not a SQLite online store")
        self._conn = conn
        self._project = store.config.project
        self._versioning = store.config.registry.enable_online_feature_view_versioning
        self._key_version = store.config.entity_key_serialization_version
        self._prefixes: dict[str, bytes | None] = {}
        self._tables: dict[str, str] = {}

    @staticmethod
    def supports(store: FeatureStore) -> bool:
        """Whether ``store``'s online store is Feast's SQLite store."""
        return sqlite_connection(store) is not None

    def _feast_key(self, join_key: str, value: int) -> bytes:
        proto = EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=value)])
        return serialize_entity_key(proto, entity_key_serialization_version=self._key_version)

    def _prefix(self, join_key: str) -> bytes | None:
        """The serialized key's bytes before the little-endian int64 id, or None if keys are not so built."""
        if join_key not in self._prefixes:
            first = self._feast_key(join_key, _PROBES[0])
            prefix: bytes | None = first[:-8]
            for v in _PROBES:
                if self._feast_key(join_key, v) != prefix + struct.pack("<q", v):  # type: ignore[operator]
                    prefix = None
                    break
            self._prefixes[join_key] = prefix
        return self._prefixes[join_key]

    def keys(self, join_key: str, ids: Sequence[int]) -> list[bytes]:
        """The stored entity keys of int64 ``ids`` (exactly Feast's serialization)."""
        prefix = self._prefix(join_key)
        if prefix is None:
            return [self._feast_key(join_key, int(i)) for i in ids]
        return [prefix + struct.pack("<q", int(i)) for i in ids]

    def read(self, view: FeatureView, join_key: str, ids: Sequence[int],
             names: Sequence[str]) -> list[dict[str, ValueProto] | None]:
        """The rows of ``ids`` in request order: ``{feature: value}`` of ``names``, None where absent."""
        if not ids:
            return []
        table = self._tables.get(view.name)
        if table is None:
            table = self._tables[view.name] = compute_table_id(self._project, view, self._versioning)
        keys = self.keys(join_key, ids)
        unique = list(dict.fromkeys(keys))
        quoted = '"' + table.replace('"', '""') + '"'
        sql = (f"SELECT entity_key, feature_name, value FROM {quoted} WHERE entity_key IN "
               f"({','.join('?' * len(unique))}) AND feature_name IN ({','.join('?' * len(names))})")
        found: dict[bytes, dict[str, ValueProto]] = {}
        for key, name, blob in self._conn.execute(sql, [*unique, *names]).fetchall():
            value = ValueProto()
            value.ParseFromString(blob)
            found.setdefault(key, {})[name] = value
        return [found.get(k) for k in keys]


class SqliteRowWriter(SqliteRowReader):
    """Batched upserts of provider rows into a store's SQLite online store (see the module docstring).

    Args:
        store: an open Feast store whose online store is SQLite without ``value_num`` or vectors
            (see :meth:`supports`).
    """

    @staticmethod
    def supports(store: FeatureStore) -> bool:
        """Whether Feast's write to ``store`` is the plain upsert this writer runs."""
        online = store.config.online_store
        return (SqliteRowReader.supports(store) and not getattr(online, "vector_enabled", False)
                and not getattr(online, "enable_openai_compatible_store", False))

    def __init__(self, store: FeatureStore) -> None:
        super().__init__(store)
        # Write-ahead log, synced at checkpoints: a commit no longer rewrites and fsyncs a rollback
        # journal (a fifth of a 3,000-user upsert on a VM disk), readers (the ranking service) no
        # longer block the writer, and a killed process loses nothing it committed. What WAL with
        # synchronous=NORMAL can lose is the last commits before an OS crash or power failure (a
        # production online store is Redis, whose persistence settings decide the same question).
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError as exc:  # e.g. another process holds the file: keep its mode
            logger.warning("online store keeps its journal mode (%s)", exc)

    def write(self, view: FeatureView, join_key: str, ids: Sequence[int],
              columns: Mapping[str, Sequence[ValueProto] | Sequence[bytes]], event_ts: Sequence[datetime]) -> None:
        """Upsert rows, as Feast would, in one call: entity ``ids[r]`` gets ``columns[feature][r]`` at ``event_ts[r]``.

        A column holds ``Value`` messages, or their serialized bytes for list and time features (whose
        ``value_text`` Feast leaves NULL); created times are NULL, as in Feast's write of our rows.
        """
        table = compute_table_id(self._project, view, self._versioning)
        quoted = '"' + table.replace('"', '""') + '"'
        sql = (f"INSERT INTO {quoted} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
               "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
               "created_ts = excluded.created_ts;")
        keys = self.keys(join_key, ids)
        if len(event_ts) != len(keys):
            raise ValueError(f"{len(event_ts)} event times for {len(keys)} entities")
        # what sqlite3 would store for the datetimes: adapted once per row, not once per feature
        adapt = sqlite3.adapters.get((datetime, sqlite3.PrepareProtocol), lambda t: t)
        events = [adapt(to_naive_utc(t)) for t in event_ts]
        params: list[tuple[Any, ...]] = []
        for name, column in columns.items():
            if len(column) != len(keys):
                raise ValueError(f"feature {name}: {len(column)} values for {len(keys)} entities")
            if column and isinstance(column[0], bytes):  # parameter tuples built in C, no Python per row
                params.extend(zip(keys, repeat(name), column, repeat(None), events, repeat(None)))
            else:
                protos = cast(Sequence[ValueProto], column)
                params.extend((key, name, value.SerializeToString(), extract_text_and_num(value, False)[0], event, None)
                              for key, value, event in zip(keys, protos, events, strict=True))
        with self._conn:
            self._conn.executemany(sql, params)
