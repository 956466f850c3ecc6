"""Shared fixtures: a real embedded stack (Tansu + Milvus Lite) on free loopback ports."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator

import pytest

from infra import stack
from infra.config import MmadsConfig
from tests.support import make_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
logging.getLogger("kafka").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def stack_cfg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MmadsConfig]:
    """A running embedded stack for the whole session (stopped at the end)."""
    cfg = make_config(tmp_path_factory.mktemp("stack"))
    stack.up(cfg)
    try:
        yield cfg
    finally:
        stack.down(cfg)


@pytest.fixture
def redis_conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway, empty ``redis-server`` per test on a free loopback port (skips without the package).

    Per test: Feast keys rows by project and entity, so two tests sharing one server would read each
    other's rows.
    """
    from benchmarks.bench_serving import redis_server

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; make system-deps)")
    with redis_server(tmp_path_factory.mktemp("redis")) as conn:
        yield conn
