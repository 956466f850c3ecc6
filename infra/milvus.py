"""Connecting to Milvus robustly.

pymilvus shares one gRPC channel per address among the clients of a process. Milvus Lite's server
answers a client that idled a while with GOAWAY "too_many_pings", and the next client created for
that address then fails once in pymilvus' channel recovery ("Fail connecting to server"); a second
attempt a moment later succeeds. :func:`milvus_client` retries for that reason.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from infra.config import MmadsConfig
from infra.errors import StackNotRunningError

logger = logging.getLogger(__name__)


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
