"""Candidate retrieval from Milvus: ANN by multimodal vector, neighbours of an item, fresh items.

The collection (``cfg.milvus.collection``) is owned by the streaming item indexer: primary key
``item_id`` INT64, vector field :data:`VECTOR_FIELD` (dim d, COSINE), ``category``, ``created_at``
(epoch ms), ``model_version``, ``item_key`` (a string id's spelling). Items are searchable as soon
as the indexer upserts them, before any ID statistics exist: that is how a brand-new item reaches ``/recommend``.

Cold-user fallback (documented contract): a user with no history vectors gets the **freshest
items** in the collection (newest ``created_at`` first, :meth:`Retriever.fresh_items`, cached for
``FRESH_TTL_S``), which the ranker then orders; the model's item-ID embeddings carry each known
item's popularity/quality, and new items get the model's cold-item treatment. Users whose ANN
results fall short of the pool are topped up from the same list.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from infra.config import MmadsConfig
from infra.errors import StackError
from infra.milvus import ensure_loaded, guarded_call
from serving.errors import RequestError, RetrievalUnavailableError

logger = logging.getLogger(__name__)

# Mirrors streaming.milvus_sink.VECTOR_FIELD (serving may not import streaming; a test pins them equal).
VECTOR_FIELD = "vector"
KEY_FIELD = "item_key"  # the string id as the dataset wrote it ("" for an integer id)
META_FIELDS = ["category", "created_at", KEY_FIELD]
CALL_TIMEOUT_S = 5.0
FRESH_TTL_S = 10.0
MILVUS_MAX_LIMIT = 16384  # Milvus caps offset + limit of one query/search
# Look-back windows (ms) tried in turn until enough fresh items are found; None = everything.
FRESH_WINDOWS_MS: tuple[int | None, ...] = (3_600_000, 86_400_000, 7 * 86_400_000, 90 * 86_400_000, None)

T = TypeVar("T")


@dataclass(frozen=True)
class Neighbour:
    """One ANN hit: item id, cosine similarity and the item's metadata (``key``: its string id, or None)."""

    item_id: int
    similarity: float
    category: str | None
    created_at_ms: int | None
    key: str | None = None


def merge_hits(hits: Sequence[Sequence[tuple[int, float]]], exclude: set[int], limit: int) -> list[int]:
    """Merge several ranked hit lists into one de-duplicated candidate list.

    Args:
        hits: per query vector, ``(item_id, similarity)`` pairs.
        exclude: ids never to return (the user's own history).
        limit: the most ids to return.

    Returns:
        Item ids ordered by their best similarity over all queries (ties: smaller id first).
    """
    best: dict[int, float] = {}
    for per_query in hits:
        for item_id, sim in per_query:
            if item_id not in exclude and sim > best.get(item_id, -np.inf):
                best[item_id] = sim
    ordered = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return [item_id for item_id, _ in ordered[:limit]]


class Retriever:
    """Searches the item collection of Milvus (connects lazily; thread-safe).

    Args:
        cfg: the configuration (``milvus`` section).
        client: an existing ``MilvusClient`` (default: connect to ``cfg.milvus.address``).
    """

    def __init__(self, cfg: MmadsConfig, client: Any = None) -> None:
        self.cfg = cfg
        self.collection = cfg.milvus.collection
        self._client = client
        self._lock = threading.Lock()
        self._fresh: tuple[float, np.ndarray] | None = None
        self._refresh_lock = threading.Lock()
        self._refreshing = False

    @property
    def client(self) -> Any:
        """The connected ``MilvusClient``."""
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient

                self._client = self._call("connect", lambda: MilvusClient(
                    uri=self.cfg.milvus.address, token=self.cfg.milvus.token(), timeout=CALL_TIMEOUT_S))
            return self._client

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return guarded_call(self._client, self.collection, self.cfg.milvus.address, what, fn,
                            error=RetrievalUnavailableError, timeout_s=CALL_TIMEOUT_S)

    def ping(self) -> str:
        """Check the collection exists and is loaded (loading it if released); returns a one-line detail.

        Raises:
            RetrievalUnavailableError: Milvus is down or the collection is missing.
        """
        client = self.client
        if not self._call("has_collection", lambda: client.has_collection(self.collection, timeout=CALL_TIMEOUT_S)):
            raise RetrievalUnavailableError(
                f"Milvus collection {self.collection!r} does not exist yet (is the item indexer running?)")
        # a restarted Milvus Lite server keeps the data but releases the collection: load it here, so
        # "ready" means a search can run
        self._call("load", lambda: ensure_loaded(client, self.collection, timeout_s=CALL_TIMEOUT_S))
        return f"collection {self.collection} at {self.cfg.milvus.address}"

    def search(self, vectors: np.ndarray, limit: int) -> list[list[tuple[int, float]]]:
        """One batched ANN search.

        Args:
            vectors: ``(Q, d)`` query vectors.
            limit: hits per query (capped at Milvus's maximum).

        Returns:
            Per query, ``(item_id, cosine similarity)`` pairs, best first.
        """
        if len(vectors) == 0:
            return []
        limit = max(1, min(int(limit), MILVUS_MAX_LIMIT))
        client = self.client
        data = np.asarray(vectors, dtype=np.float32).tolist()
        params = {"ef": max(self.cfg.milvus.search_ef, limit)}
        res = self._call("search", lambda: client.search(
            self.collection, data=data, limit=limit, output_fields=["item_id"], search_params=params,
            anns_field=VECTOR_FIELD, timeout=CALL_TIMEOUT_S))
        return [[(int(hit["item_id"]), float(hit["distance"])) for hit in per_query] for per_query in res]

    def keys(self, item_ids: Sequence[int]) -> dict[int, str]:
        """The string spellings of the given ids (ids written as integers, or unknown, are absent)."""
        if not item_ids:
            return {}
        client = self.client
        rows = self._call("get keys", lambda: client.get(
            self.collection, ids=[int(i) for i in item_ids], output_fields=[KEY_FIELD], timeout=CALL_TIMEOUT_S))
        return {int(r["item_id"]): str(r[KEY_FIELD]) for r in rows if r.get(KEY_FIELD)}

    def vector(self, item_id: int, label: int | str | None = None) -> np.ndarray:
        """The stored vector of one item (``label``: the id as the request spelled it, for the message).

        Raises:
            RequestError: 404 when the item is not in the collection.
        """
        client = self.client
        rows = self._call("get", lambda: client.get(
            self.collection, ids=[int(item_id)], output_fields=[VECTOR_FIELD], timeout=CALL_TIMEOUT_S))
        if not rows:
            raise RequestError(404, f"item {item_id if label is None else label} has no multimodal vector in Milvus "
                                    "(unknown or not indexed yet)")
        return np.asarray(rows[0][VECTOR_FIELD], dtype=np.float32)

    def similar(self, item_id: int, k: int, label: int | str | None = None) -> list[Neighbour]:
        """The ``k`` nearest items to ``item_id`` by multimodal vector (the item itself excluded).

        Raises:
            RequestError: 404 when the item is not in the collection.
        """
        vec = self.vector(item_id, label)
        client = self.client
        limit = min(k + 1, MILVUS_MAX_LIMIT)
        params = {"ef": max(self.cfg.milvus.search_ef, limit)}
        res = self._call("search", lambda: client.search(
            self.collection, data=[vec.tolist()], limit=limit, output_fields=["item_id", *META_FIELDS],
            search_params=params, anns_field=VECTOR_FIELD, timeout=CALL_TIMEOUT_S))
        out = []
        for hit in res[0] if res else []:
            hit_id = int(hit["item_id"])  # pymilvus 3: the primary key under its field name
            if hit_id == int(item_id):
                continue
            created = hit.get("created_at")  # output fields: top level or under "entity"
            out.append(Neighbour(hit_id, float(hit["distance"]), hit.get("category"),
                                 None if created is None else int(created), hit.get(KEY_FIELD) or None))
        return out[:k]

    def fresh_items(self, n: int) -> np.ndarray:
        """The ``n`` newest items (by ``created_at``), cached for ``FRESH_TTL_S`` seconds.

        Only a cold cache (or a larger ``n`` than cached) queries Milvus on the caller's thread. A
        stale list is returned as is while one background thread replaces it: the query reads every
        row's ``created_at`` (~80 ms at 10k items), which on the request path was /recommend's p99.

        Returns:
            ``(<= n,)`` int64 item ids, newest first.
        """
        cached = self._fresh
        if cached is not None and len(cached[1]) >= n:
            if time.monotonic() - cached[0] >= FRESH_TTL_S:
                self._refresh_fresh(len(cached[1]))
            return cached[1][:n]
        now = time.monotonic()
        ids = self._query_fresh(max(n, 1))
        self._fresh = (now, ids)
        return ids[:n]

    def _refresh_fresh(self, n: int) -> None:
        """Replace the fresh-items list on a background thread (at most one at a time)."""
        with self._refresh_lock:
            if self._refreshing:
                return
            self._refreshing = True

        def work() -> None:
            try:
                now = time.monotonic()
                self._fresh = (now, self._query_fresh(n))
            except StackError as exc:  # keep serving the stale list; the next stale read retries
                logger.warning("refreshing the fresh-items list failed: %s", exc)
            finally:
                self._refreshing = False

        threading.Thread(target=work, name="fresh-items", daemon=True).start()

    def _query_fresh(self, n: int) -> np.ndarray:
        client = self.client
        now_ms = int(time.time() * 1000)
        rows: list[dict[str, Any]] = []
        for window in FRESH_WINDOWS_MS:
            expr = "item_id >= 0" if window is None else f"created_at >= {now_ms - window}"
            rows = self._call("query", lambda expr=expr: client.query(  # type: ignore[misc]
                self.collection, filter=expr, output_fields=["item_id", "created_at"], limit=MILVUS_MAX_LIMIT,
                timeout=CALL_TIMEOUT_S))
            if len(rows) >= n:
                break
        if not rows:
            return np.zeros(0, dtype=np.int64)
        ids = np.fromiter((int(r["item_id"]) for r in rows), dtype=np.int64, count=len(rows))
        created = np.fromiter((int(r.get("created_at") or 0) for r in rows), dtype=np.int64, count=len(rows))
        order = np.lexsort((ids, -created))  # newest first, ties by id
        return ids[order]  # all that were read (>= n when the collection has them): a cache for larger n

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
