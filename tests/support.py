"""Helpers for tests (importable as ``tests.support``)."""

from __future__ import annotations

from pathlib import Path

from infra.config import MmadsConfig, load_config
from infra.processes import free_port


def make_config(state_dir: Path, **overrides: object) -> MmadsConfig:
    """A config with an isolated state dir and free ports, ignoring the caller's MMADS_* variables."""
    base = load_config(env={})
    changes: dict[str, object] = {
        "state_dir": state_dir,
        "kafka": {"port": free_port(), "partitions": 4},
        "milvus": {"port": free_port()},
        "serving": {"port": free_port()},
    }
    changes.update(overrides)
    return base.with_overrides(**changes)
