"""The one place mmads calls Feast's private API, and the check that it is still there.

Feast's public calls are too slow for the serving and streaming paths (see :mod:`feature_repo.online`,
:mod:`feature_repo.sqlite_rows` and :func:`feature_repo.store.write_online_rows`), so three private
pieces are used, all through this module:

* ``FeatureStore._get_provider()``: the provider, for ``online_read`` and ``online_write_batch``
  without ``get_online_features`` / ``write_to_online_store``'s per-element conversions;
* ``SqliteOnlineStore._get_conn(config)``: Feast's own SQLite connection, for the batched row reader.

:func:`check_feast_internals` verifies that each exists with the parameters used here; a unit test
calls it, so a Feast upgrade that moves them fails that test by name instead of a request at run time.
"""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import Sequence
from typing import Any

from feast import FeatureStore, FeatureView
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.infra.passthrough_provider import PassthroughProvider
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto

from infra.errors import FeatureError

TESTED_FEAST = "0.67.0"  # the Feast version these private calls were written against

# (owner, private or provider attribute, the parameters mmads passes)
_USED: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (FeatureStore, "_get_provider", ()),
    (PassthroughProvider, "online_read", ("config", "table", "entity_keys", "requested_features")),
    (PassthroughProvider, "online_write_batch", ("config", "table", "data", "progress")),
    (SqliteOnlineStore, "_get_conn", ("config",)),
)


def check_feast_internals() -> None:
    """Raise FeatureError naming every private Feast call that moved or changed its parameters."""
    import feast

    problems = []
    for owner, name, params in _USED:
        fn = getattr(owner, name, None)
        if not callable(fn):
            problems.append(f"{owner.__name__}.{name} is gone")
            continue
        have = set(inspect.signature(fn).parameters)
        missing = [p for p in params if p not in have]
        if missing:
            problems.append(f"{owner.__name__}.{name} lost parameters {missing}")
    if problems:
        raise FeatureError(f"Feast {feast.__version__} (mmads was written against {TESTED_FEAST}) moved private "
                           f"calls mmads uses: {'; '.join(problems)}; update feature_repo/feast_internals.py")


def _provider(store: FeatureStore) -> Any:
    return store._get_provider()  # noqa: SLF001 - the documented exception of this module


def online_read(store: FeatureStore, view: FeatureView, keys: Sequence[EntityKeyProto],
                names: Sequence[str]) -> list[Any]:
    """The provider's ``online_read``: ``[(timestamp, {feature: ValueProto} or None)]`` in key order."""
    # the Redis store appends its timestamp column to requested_features: pass a fresh list
    return list(_provider(store).online_read(config=store.config, table=view, entity_keys=list(keys),
                                             requested_features=list(names)))


def online_write_batch(store: FeatureStore, view: FeatureView, rows: list[Any]) -> None:
    """The provider's ``online_write_batch`` of ``(entity key, {feature: ValueProto}, ts, created)`` rows."""
    _provider(store).online_write_batch(config=store.config, table=view, data=rows, progress=None)


def sqlite_connection(store: FeatureStore) -> sqlite3.Connection | None:
    """Feast's own connection to the store's SQLite online store; None when the store is not SQLite."""
    online = _provider(store).online_store
    if not isinstance(online, SqliteOnlineStore):
        return None
    conn: sqlite3.Connection = online._get_conn(store.config)  # noqa: SLF001 - one per store, Feast's
    return conn
