"""The Milvus side of the item indexer: collection schema, upserts, periodic flush, reads by id.

Schema: ``item_id`` INT64 primary key, ``vector`` FLOAT_VECTOR(d), ``category`` VARCHAR,
``created_at`` INT64 (epoch ms), ``model_version`` VARCHAR, ``item_key`` VARCHAR (the id as the
producer wrote it when that was a string, else empty: the service answers with it). The index type comes from
``cfg.milvus.index_type`` (HNSW by default) with the COSINE metric. Upserts are visible to search
at once; flushing makes them part of the index (unflushed rows are brute-forced on every search),
so :meth:`MilvusSink.maybe_flush` flushes every ``cfg.milvus.flush_interval_s`` after writes, never
per event (docs/architecture.md, Milvus Lite). Any failure to reach Milvus is a
:class:`~infra.errors.StackError`, which the consumer loop retries with backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from infra.config import MmadsConfig
from infra.errors import StackError
from infra.milvus import guarded_call

logger = logging.getLogger(__name__)

VECTOR_FIELD = "vector"
OUTPUT_FIELDS = ["item_id", "category", "created_at", "model_version", "item_key"]
KEY_FIELD = "item_key"
MAX_VARCHAR = 512
CALL_TIMEOUT_S = 5.0


def _index_params(cfg: MmadsConfig) -> dict[str, Any]:
    m = cfg.milvus
    params: dict[str, Any] = {}
    if m.index_type in ("HNSW", "HNSW_SQ"):
        params = {"M": m.hnsw_m, "efConstruction": m.hnsw_ef_construction}
    elif m.index_type in ("IVF_FLAT", "IVF_SQ8"):
        params = {"nlist": 128}
    return {"field_name": VECTOR_FIELD, "index_type": m.index_type, "metric_type": "COSINE", "params": params}


class MilvusSink:
    """Writes item vectors to one Milvus collection (created on first use).

    Args:
        cfg: the configuration (``milvus`` section).
        dim: the vector dimension d.
        client: an existing ``MilvusClient`` (default: connect to ``cfg.milvus.address``).
    """

    def __init__(self, cfg: MmadsConfig, dim: int, client: Any = None) -> None:
        self.cfg = cfg
        self.dim = dim
        self.collection = cfg.milvus.collection
        self._client = client
        self._dirty = False
        self._last_flush = time.monotonic()

    @property
    def client(self) -> Any:
        """The connected ``MilvusClient`` (connects lazily)."""
        if self._client is None:
            from pymilvus import MilvusClient

            def connect() -> Any:
                return MilvusClient(uri=self.cfg.milvus.address, token=self.cfg.milvus.token(),
                                    timeout=CALL_TIMEOUT_S)

            for attempt in range(3):
                try:
                    self._client = self._call("connect", connect)
                    break
                except StackError:
                    # A pooled gRPC channel the server closed (GOAWAY) fails once, then reconnects.
                    if attempt == 2:
                        raise
                    time.sleep(0.5)
        return self._client

    def _call(self, what: str, fn: Any) -> Any:
        return guarded_call(self._client, self.collection, self.cfg.milvus.address, what, fn,
                            timeout_s=CALL_TIMEOUT_S)

    def ensure_collection(self) -> None:
        """Create the collection and its index when missing, and load it.

        Two processes started together (the indexer's deployment: a process per core) may both find
        the collection missing; the one whose create then fails because the other made it meanwhile
        goes on with that collection, checked like any existing one.

        Raises:
            StackError: Milvus is unreachable, or the existing collection has another dimension.
        """
        c = self.client
        if self._call("has_collection", lambda: c.has_collection(self.collection)):
            self._check_and_load()
            return
        try:
            self._create()
        except StackError:
            if not self._call("has_collection", lambda: c.has_collection(self.collection)):
                raise
            logger.info("Milvus collection %s was created by another process meanwhile", self.collection)
            self._check_and_load()

    def _check_and_load(self) -> None:
        """Refuse an existing collection made for another dimension or by an older mmads; load it."""
        c = self.client
        desc = self._call("describe", lambda: c.describe_collection(self.collection))
        dims = [f.get("params", {}).get("dim") for f in desc.get("fields", []) if f.get("name") == VECTOR_FIELD]
        if dims and int(dims[0]) != self.dim:
            raise StackError(f"Milvus collection {self.collection} has dim {dims[0]}, the encoder makes "
                             f"{self.dim}: run `mmads stream reindex` with a new collection name")
        if KEY_FIELD not in {f.get("name") for f in desc.get("fields", [])}:
            raise StackError(f"Milvus collection {self.collection} has no {KEY_FIELD} field (made by an "
                             "older mmads): run `mmads stream reindex` with a new collection name")
        self._call("load", lambda: c.load_collection(self.collection, timeout=CALL_TIMEOUT_S))

    def _create(self) -> None:
        """Create the collection with its index (Milvus loads it)."""
        from pymilvus import DataType

        c = self.client
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("item_id", DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("category", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("model_version", DataType.VARCHAR, max_length=128)
        schema.add_field(KEY_FIELD, DataType.VARCHAR, max_length=MAX_VARCHAR)
        index = c.prepare_index_params()
        index.add_index(**_index_params(self.cfg))
        self._call("create_collection", lambda: c.create_collection(
            self.collection, schema=schema, index_params=index, timeout=CALL_TIMEOUT_S))
        logger.info("created Milvus collection %s (dim %d, %s, COSINE)", self.collection, self.dim,
                    self.cfg.milvus.index_type)

    def upsert(self, item_ids: np.ndarray, vectors: np.ndarray, categories: Sequence[str],
               created_at_ms: np.ndarray, model_version: str, item_keys: Sequence[str] | None = None) -> None:
        """Upsert items by primary key (re-delivery overwrites the same rows).

        Args:
            item_ids: ``(n,)`` int64.
            vectors: ``(n, d)`` float32.
            categories: n category names.
            created_at_ms: ``(n,)`` epoch milliseconds.
            model_version: the encoder version that made the vectors.
            item_keys: per item, its string id as written ("" for an integer id; default all "").
        """
        if len(item_ids) == 0:
            return
        keys = [""] * len(item_ids) if item_keys is None else item_keys
        rows = [{"item_id": int(i), VECTOR_FIELD: v.tolist(), "category": str(c)[:MAX_VARCHAR],
                 "created_at": int(t), "model_version": model_version, KEY_FIELD: str(k)}
                for i, v, c, t, k in zip(item_ids, np.asarray(vectors, np.float32), categories, created_at_ms,
                                         keys, strict=True)]
        self._call("upsert", lambda: self.client.upsert(self.collection, rows, timeout=CALL_TIMEOUT_S))
        self._dirty = True

    def maybe_flush(self, force: bool = False) -> bool:
        """Flush when rows were written and ``flush_interval_s`` has passed (or ``force``)."""
        due = time.monotonic() - self._last_flush >= self.cfg.milvus.flush_interval_s
        if not self._dirty or not (due or force):
            return False
        self._call("flush", lambda: self.client.flush(self.collection, timeout=CALL_TIMEOUT_S))
        self._dirty = False
        self._last_flush = time.monotonic()
        return True

    def get_vectors(self, item_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored vectors of the ids that exist (missing ids are simply absent)."""
        ids = [int(i) for i in item_ids]
        if not ids:
            return {}
        rows = self._call("get", lambda: self.client.get(
            self.collection, ids=ids, output_fields=["item_id", VECTOR_FIELD], timeout=CALL_TIMEOUT_S))
        return {int(r["item_id"]): np.asarray(r[VECTOR_FIELD], dtype=np.float32) for r in rows}

    def get_keys(self, item_ids: Sequence[int]) -> dict[int, str]:
        """The string spellings of the ids that have one (integer ids and missing ids are absent)."""
        ids = [int(i) for i in item_ids]
        if not ids:
            return {}
        rows = self._call("get keys", lambda: self.client.get(
            self.collection, ids=ids, output_fields=["item_id", KEY_FIELD], timeout=CALL_TIMEOUT_S))
        return {int(r["item_id"]): str(r[KEY_FIELD]) for r in rows if r.get(KEY_FIELD)}

    def count(self) -> int:
        """Number of rows (entities) in the collection."""
        res = self._call("count", lambda: self.client.query(
            self.collection, filter="", output_fields=["count(*)"], timeout=CALL_TIMEOUT_S))
        return int(res[0]["count(*)"])

    def close(self) -> None:
        """Flush pending rows (best effort) and close the connection."""
        if self._client is None:
            return
        try:
            self.maybe_flush(force=True)
        except StackError as exc:
            logger.warning("final Milvus flush failed: %s", exc)
        self._client.close()
        self._client = None
