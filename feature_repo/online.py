"""Online features for one user x B candidates: the fast path and the ODFV path (identical values).

The fast path reads the (lean) user row once - history item ids and times, no vectors - and the
candidate rows together with the history items' rows in one batched call, gathers the history
vectors with the shared :func:`~feature_repo.history.gather` (the training set's gather) and calls
the shared :func:`~feature_repo.simtier.simtier` with the user's history shared by all candidates.
The ODFV path asks Feast for the ``ctr_serving`` feature service, which evaluates the ``simtier``
on-demand view per request over the same gathered history vectors, passed as request data (slower;
used to check parity and as the reference).

An optional :class:`ItemRowCache` keeps decoded item rows (candidates and history items alike) for a
short time to live: item rows change only when an item is (re)indexed, and decoding 250 rows of
protobuf is most of a read. Only rows that exist are cached, so an item indexed a moment ago is read
from the store on its first request (a history item without a vector is read again with every
request's batch, and skipped as "no vector" until it has one); a re-indexed item is served its old
vector for at most the TTL, as a candidate and as a history item.

When the run has side features, the fast path also reads ``item_side`` for the candidates (cached
like their rows) and ``user_side`` for the user: :attr:`OnlineFeatures.side`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore, FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feature_repo.feast_internals import online_read
from feature_repo.history import ItemVectors, gather
from feature_repo.on_demand import target_matrix
from feature_repo.schema import (
    HIST_VECTORS_FIELD,
    ITEM_SIDE_VIEW,
    ITEM_VIEW,
    SERVING_SERVICE,
    USER_SIDE_VIEW,
    USER_VIEW,
)
from feature_repo.simtier import SIMTIER_COLUMNS, simtier
from feature_repo.sqlite_rows import SqliteRowReader
from infra.config import MmadsConfig

logger = logging.getLogger(__name__)

ITEM_FEATURES = ["emb", "category", "created_at"]
USER_FEATURES = ["hist_item_ids", "hist_ts"]


def _python_value(value: ValueProto | None) -> Any:
    """A stored Value as Python: lists for list values, datetime for timestamps, None when unset."""
    kind = value.WhichOneof("val") if value is not None else None
    if value is None or kind is None or kind == "null_val":
        return None
    if kind == "unix_timestamp_val":
        return datetime.fromtimestamp(value.unix_timestamp_val, tz=UTC)
    raw = getattr(value, kind)
    if kind in ("float_list_val", "double_list_val"):
        return np.asarray(raw.val, dtype=np.float32 if kind == "float_list_val" else np.float64)
    return list(raw.val) if kind.endswith("_list_val") else raw


@dataclass(frozen=True)
class UserRow:
    """A user's ``user_behavior`` row as stored online (the lean row: no vectors).

    Attributes:
        item_ids: ``(L,)`` int64 history item ids, newest first (empty for an unknown user).
        item_ts: ``(L,)`` int64 their behavior times, epoch microseconds (empty when not stored).
    """

    item_ids: np.ndarray
    item_ts: np.ndarray


class ItemRowCache:
    """Decoded item rows kept for ``ttl_s`` seconds, at most ``max_items`` of them.

    Thread-safe; the oldest entries go first when full. Rows that do not exist (every column None)
    are never cached.

    Args:
        ttl_s: how long a row is served from memory.
        max_items: the most rows kept.
        clock: seconds, monotonic (tests pass a fake one).
        columns: the row's columns (default :data:`ITEM_FEATURES` of ``item_embeddings``; the
            reader keeps a second cache for the ``item_side`` columns).
    """

    def __init__(self, ttl_s: float, max_items: int, clock: Callable[[], float] = time.monotonic,
                 columns: Sequence[str] = tuple(ITEM_FEATURES)) -> None:
        self.ttl_s = ttl_s
        self.max_items = max_items
        self.clock = clock
        self.columns = tuple(columns)
        self._rows: dict[int, tuple[Any, ...]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, ids: Sequence[int]) -> tuple[list[tuple[Any, ...] | None], list[int]]:
        """Cached rows (values of :attr:`columns`) per id (None when absent or expired), and the misses."""
        now = self.clock()
        rows: list[tuple[Any, ...] | None] = []
        missing: list[int] = []
        for i in ids:
            entry = self._rows.get(i)
            if entry is not None and entry[0] > now:
                rows.append(entry[1:])
            else:
                rows.append(None)
                missing.append(i)
        self.hits += len(ids) - len(missing)
        self.misses += len(missing)
        return rows, missing

    def put(self, ids: Sequence[int], values: dict[str, list[Any]]) -> None:
        """Keep the rows of ``ids`` (values per column of :attr:`columns`) that exist."""
        expires = self.clock() + self.ttl_s
        with self._lock:
            for k, i in enumerate(ids):
                row = tuple(values[c][k] for c in self.columns)
                if any(v is not None for v in row):
                    self._rows.pop(i, None)  # re-insert: the dict's order is the entries' age
                    self._rows[i] = (expires, *row)
            excess = len(self._rows) - self.max_items
            if excess > 0:
                for key in list(self._rows)[:excess]:
                    del self._rows[key]


@dataclass(frozen=True)
class OnlineFeatures:
    """Features of one ranking request.

    Attributes:
        user_id: the user.
        item_ids: ``(B,)`` int64 candidate ids, request order.
        hist_item_ids: ``(L,)`` int64 the user's history, newest first (empty for a new user).
        item_emb: ``(B, d)`` float32 candidate vectors (zeros where missing).
        has_emb: ``(B,)`` bool, which candidates have a vector.
        category: per candidate, its category or None.
        item_created_at: per candidate, its creation time or None.
        simtier: ``(B, T + 3)`` float64, columns ``simtier_columns``.
        simtier_columns: :func:`SIMTIER_COLUMNS` of T.
        hist_emb: ``(L, d)`` float32 the user's history vectors as gathered from the item rows
            (zeros: no vector; None: not read).
        side: per configured side feature, its B raw stored values (item features per candidate,
            user features repeated); empty when the run has no side features.
    """

    user_id: int
    item_ids: np.ndarray
    hist_item_ids: np.ndarray
    item_emb: np.ndarray
    has_emb: np.ndarray
    category: list[str | None]
    item_created_at: list[datetime | None]
    simtier: np.ndarray
    simtier_columns: list[str]
    hist_emb: np.ndarray | None = None
    side: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def missing_item_ids(self) -> list[int]:
        """Candidates without an embedding in the online store."""
        return [int(i) for i in self.item_ids[~self.has_emb]]

    def frame(self) -> pd.DataFrame:
        """One row per candidate: item_id, has_emb, category and the SimTier columns."""
        df = pd.DataFrame({"item_id": self.item_ids, "has_emb": self.has_emb, "category": self.category})
        return pd.concat([df, pd.DataFrame(self.simtier, columns=self.simtier_columns)], axis=1)


class OnlineFeatureReader:
    """Reads online features for ranking requests.

    Args:
        store: an open Feast store (:func:`feature_repo.store.open_store`).
        cfg: the configuration (``model.dim``, ``model.n_tiers``).
        item_cache: keep decoded candidate rows here (default: every read goes to the store).
    """

    def __init__(self, store: FeatureStore, cfg: MmadsConfig, item_cache: ItemRowCache | None = None) -> None:
        self.store = store
        self.dim = cfg.model.dim
        self.n = cfg.model.history_len
        self.n_tiers = cfg.model.n_tiers
        self.columns = SIMTIER_COLUMNS(self.n_tiers)
        self.item_cache = item_cache
        self.item_side = [s.name for s in cfg.data.side_features or () if s.source == "items"]
        self.user_side = [s.name for s in cfg.data.side_features or () if s.source == "users"]
        self.side_cache = (ItemRowCache(item_cache.ttl_s, item_cache.max_items, item_cache.clock, self.item_side)
                           if item_cache is not None and self.item_side else None)
        self._views: dict[str, FeatureView] = {}
        self._sqlite = SqliteRowReader(store) if SqliteRowReader.supports(store) else None

    def _online_read(self, view: str, join_key: str, ids: Sequence[int], names: list[str]) -> dict[str, list[Any]]:
        """One batched online-store read of ``names`` for entity ``ids`` (request order; None = missing).

        Feast's ``get_online_features`` spends ~10 ms per 200 rows grouping entity keys and building
        its response; the provider's ``online_read`` is the same storage read without that. On SQLite,
        :class:`~feature_repo.sqlite_rows.SqliteRowReader` skips the rest of Feast's overhead.
        """
        if view not in self._views:
            self._views[view] = self.store.get_feature_view(view)
        if self._sqlite is not None:
            rows: Sequence[dict[str, ValueProto] | None] = self._sqlite.read(self._views[view], join_key, ids, names)
        else:
            keys = [EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=int(i))]) for i in ids]
            rows = [values for _, values in online_read(self.store, self._views[view], keys, names)]
        out: dict[str, list[Any]] = {name: [] for name in names}
        for values in rows:
            for name in names:
                out[name].append(_python_value(values.get(name) if values else None))
        return out

    def read_user(self, user_id: int) -> UserRow:
        """One read of the user's ``user_behavior`` row (an unknown user has an empty history)."""
        row = self._online_read(USER_VIEW, "user_id", [int(user_id)], USER_FEATURES)
        ids, ts = row["hist_item_ids"][0], row["hist_ts"][0]
        return UserRow(np.asarray(ids if ids is not None else (), dtype=np.int64),
                       np.asarray(ts if ts is not None else (), dtype=np.int64))

    def history_vectors(self, row: UserRow, emb_of: dict[int, Any] | None = None) -> np.ndarray:
        """The user's history vectors, ``(L, d)`` float32 with L cut to N: :func:`gather` over item rows.

        Args:
            row: the user's row.
            emb_of: item id -> its ``emb`` value (None: no row) for at least the history items, when
                the caller read them already; else one (cached) read of the history items' rows.

        Returns:
            Row ``j`` is the vector of ``row.item_ids[j]``; zeros where the item has no vector.
        """
        hist = row.item_ids[: self.n]
        if len(hist) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if emb_of is None:
            emb_of = dict(zip(hist.tolist(), self.read_items(hist.tolist())["emb"], strict=True))
        known = {i: e for i, e in ((int(i), emb_of.get(int(i))) for i in hist) if e is not None and len(e) == self.dim}
        items = (ItemVectors(list(known), np.stack(list(known.values())), dense_ids=0) if known
                 else ItemVectors(np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)))
        vectors, _ = gather(hist, np.array([len(hist)]), items, self.n)
        return vectors[0, : len(hist)]

    def read_items(self, item_ids: Sequence[int]) -> dict[str, list[Any]]:
        """The candidates' ``item_embeddings`` rows (request order; None = missing): cache, then one read."""
        return self._cached_read(self.item_cache, ITEM_VIEW, [int(i) for i in item_ids], ITEM_FEATURES)

    def _cached_read(self, cache: ItemRowCache | None, view: str, ids: list[int], names: list[str]
                     ) -> dict[str, list[Any]]:
        """Item rows of ``view`` (request order; None = missing): ``cache``, then one read of the misses."""
        if cache is None:
            return self._online_read(view, "item_id", ids, names)
        cached, missing = cache.get(ids)
        fetched = self._online_read(view, "item_id", missing, names) if missing else None
        if fetched is not None:
            cache.put(missing, fetched)
        out: dict[str, list[Any]] = {name: [] for name in names}
        k = 0
        for row in cached:
            if row is None:
                assert fetched is not None  # every None in ``cached`` is one of ``missing``
                row = tuple(fetched[name][k] for name in names)
                k += 1
            for name, value in zip(names, row, strict=True):
                out[name].append(value)
        return out

    def read(self, user_id: int, item_ids: Sequence[int], user: UserRow | None = None) -> OnlineFeatures:
        """Fast path: one read of the user row, one batched read of the candidates, shared SimTier.

        Args:
            user_id: the user.
            item_ids: the B candidates.
            user: the user's row when the caller has read it already (``/recommend``).

        Returns:
            The request's :class:`OnlineFeatures` (with the history vectors).
        """
        ids = np.asarray(item_ids, dtype=np.int64)
        row = user if user is not None else self.read_user(user_id)
        # one batched read: the candidates and the history items (each id once; the cache first)
        wanted = list(dict.fromkeys([*ids.tolist(), *row.item_ids[: self.n].tolist()]))
        rows = self.read_items(wanted)
        pos = {i: k for k, i in enumerate(wanted)}
        items = {name: [values[pos[i]] for i in ids.tolist()] for name, values in rows.items()}
        history = self.history_vectors(row, dict(zip(wanted, rows["emb"], strict=True)))
        target = target_matrix(items["emb"], self.dim)
        out = self._assemble(user_id, ids, row.item_ids, items, simtier(target, history, None, self.n_tiers),
                             hist_emb=history, target=target)
        return replace(out, side=self.read_side(user_id, ids.tolist())) if self.item_side or self.user_side else out

    def read_side(self, user_id: int, item_ids: Sequence[int]) -> dict[str, list[Any]]:
        """The side features of the request: one read of ``item_side`` for the candidates, one of ``user_side``.

        Candidate rows come from the side cache when the reader has an item cache (same time to live).

        Returns:
            Per configured side feature, B values in candidate order (None = missing); empty when
            the run has no side features.
        """
        side: dict[str, list[Any]] = {}
        if self.item_side:
            ids = [int(i) for i in item_ids]
            side.update(self._cached_read(self.side_cache, ITEM_SIDE_VIEW, ids, self.item_side))
        if self.user_side:
            row = self._online_read(USER_SIDE_VIEW, "user_id", [int(user_id)], self.user_side)
            side.update({name: values * len(item_ids) for name, values in row.items()})
        return side

    def read_via_odfv(self, user_id: int, item_ids: Sequence[int]) -> OnlineFeatures:
        """Reference path: Feast's ``get_online_features`` through the ``ctr_serving`` service.

        The history vectors go in as request data: gathered, like the fast path's, from the rows of
        the history items (through the reader's item cache, if it has one).

        Returns:
            The same :class:`OnlineFeatures` as :meth:`read` (values computed by the ODFV).
        """
        ids = np.asarray(item_ids, dtype=np.int64)
        # an empty history goes as None: Feast cannot type a request field whose values are all empty
        flat = self.history_vectors(self.read_user(user_id)).ravel().tolist() or None
        res = self.store.get_online_features(
            features=self.store.get_feature_service(SERVING_SERVICE),
            entity_rows={"user_id": [int(user_id)] * len(ids), "item_id": ids.tolist(),
                         HIST_VECTORS_FIELD: [flat] * len(ids)},
            full_feature_names=False,  # True silently drops ODFV outputs online (Feast 0.67)
        ).to_dict()
        sim = np.zeros((len(ids), len(self.columns)), dtype=np.float64)
        for k, col in enumerate(self.columns):
            sim[:, k] = np.asarray(res[col], dtype=np.float64)
        hist = res["hist_item_ids"][0] if len(ids) else None
        out = self._assemble(user_id, ids, hist, res, sim)
        return replace(out, side={name: list(res[name]) for name in [*self.item_side, *self.user_side]})

    def _assemble(
        self, user_id: int, ids: np.ndarray, hist: Any, items: dict[str, list[Any]], sim: np.ndarray,
        hist_emb: np.ndarray | None = None, target: np.ndarray | None = None,
    ) -> OnlineFeatures:
        emb_rows = items.get("emb", [None] * len(ids))
        has_emb = np.array([e is not None and len(e) == self.dim for e in emb_rows], dtype=bool)
        return OnlineFeatures(
            user_id=int(user_id),
            item_ids=ids,
            hist_item_ids=np.asarray(hist if hist is not None else [], dtype=np.int64),
            item_emb=target if target is not None else target_matrix(emb_rows, self.dim),
            has_emb=has_emb,
            category=list(items.get("category", [None] * len(ids))),
            item_created_at=list(items.get("created_at", [None] * len(ids))),
            simtier=sim,
            simtier_columns=self.columns,
            hist_emb=hist_emb,
        )
