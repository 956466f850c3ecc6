"""Connecting to Milvus robustly.

pymilvus shares one gRPC channel per address among the clients of a process. Milvus Lite's server
answers a client that idled a while with GOAWAY "too_many_pings", and the next client created for
that address then fails once in pymilvus' channel recovery ("Fail connecting to server"); a second
attempt a moment later succeeds. :func:`milvus_client` retries for that reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from infra.config import MmadsConfig
from infra.errors import StackError, StackNotRunningError

logger = logging.getLogger(__name__)

T = TypeVar("T")
RELEASED_HINT = "call load()"  # how Milvus answers a search/get/query on a released collection


def milvus_client(cfg: MmadsConfig, *, attempts: int = 5, timeout_s: float = 10.0) -> Any:
    """A connected ``MilvusClient`` for ``cfg.milvus`` (the token comes from the environment).

    Raises:
        StackNotRunningError: no connection after ``attempts`` tries.
    """
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    last: Exception | None = None
    for attempt in range(attempts):
        try:
            client = MilvusClient(uri=cfg.milvus.address, token=cfg.milvus.token(), timeout=timeout_s)
            client.list_collections()
            return client
        except MilvusException as exc:
            last = exc
            logger.info("connecting to Milvus at %s failed (%s); retrying", cfg.milvus.address, exc)
            time.sleep(0.5 * (attempt + 1))
    raise StackNotRunningError(f"Milvus at {cfg.milvus.address} does not answer: {last}")


def loading_on_release(client: Any, collection: str, fn: Callable[[], T], *, timeout_s: float = 10.0) -> T:
    """Call ``fn``; when Milvus answers that ``collection`` is released, load it and call ``fn`` again.

    A restarted Milvus Lite server (``mmads stack down`` then ``up`` on the same state dir) keeps the
    collection's data but comes back with the collection released, so the first search fails.
    """
    try:
        return fn()
    except Exception as exc:
        if RELEASED_HINT not in str(exc):
            raise
        logger.info("Milvus collection %s is released (a restarted server); loading it", collection)
        client.load_collection(collection, timeout=timeout_s)
        return fn()


def ensure_loaded(client: Any, collection: str, *, timeout_s: float = 10.0) -> None:
    """Load ``collection`` unless Milvus reports it loaded (it exists: check ``has_collection`` first)."""
    state = client.get_load_state(collection).get("state")
    if getattr(state, "name", str(state)) != "Loaded":
        logger.info("loading Milvus collection %s (state %s)", collection, state)
        client.load_collection(collection, timeout=timeout_s)


def guarded_call(client: Any, collection: str, address: str, what: str, fn: Callable[[], T], *,
                 error: type[StackError] = StackError, timeout_s: float = 10.0) -> T:
    """Call ``fn`` (a request on ``client``, or the connect that makes it when ``client`` is None).

    A released collection is loaded once (:func:`loading_on_release`); any other failure becomes
    ``error`` naming Milvus, the collection and ``what`` failed (pymilvus raises grpc, Milvus and OS
    errors alike). An mmads :class:`StackError` passes through unchanged.
    """
    try:
        if client is None:
            return fn()
        return loading_on_release(client, collection, fn, timeout_s=timeout_s)
    except StackError:
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise error(f"Milvus at {address} (collection {collection!r}): {what} failed: "
                    f"{exc.__class__.__name__}: {str(exc)[:200]}") from exc
