import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infra.config import MmadsConfig, load_config
from infra.errors import StackError
from streaming.behavior_state import ItemCache
from streaming.buffers import FlushPolicy
from streaming.impression_logger import ImpressionLogger, read_impression_log
from streaming.stats import (
    FreshnessLog,
    JobStats,
    StatsWriter,
    committed_counts,
    freshness_summary,
    wait_caught_up,
)


def _cfg(tmp_path: Path) -> MmadsConfig:
    return load_config(env={}).with_overrides(state_dir=tmp_path)


def test_committed_counts_take_the_max_per_partition_across_processes(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    a = JobStats(job="items", committed={"items:0": 10, "items:1": 4})
    StatsWriter(cfg, a, "items").write()
    b = JobStats(job="items", committed={"items:0": 7, "items:1": 9, "other:0": 3})
    w = StatsWriter(cfg, b, "items")
    w.path = w.path.with_name("items-99999.json")  # a second (e.g. restarted) process
    w.write()
    assert committed_counts(cfg) == {"items": 19, "other": 3}
    assert wait_caught_up(cfg, {"items": 19}, timeout_s=1) == {"items": 19, "other": 3}
    with pytest.raises(StackError, match="items: 19/20"):
        wait_caught_up(cfg, {"items": 20}, timeout_s=0.2)


def test_freshness_summary_uses_first_write_per_message(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    log = FreshnessLog(cfg, "items")
    log.record(np.array([1, 2, 3]), np.array([1000, 1000, 1000]), 1100)
    log.record(np.array([3]), np.array([1000]), 5000)  # a re-delivery after a crash
    s = freshness_summary(cfg, "items")
    assert s["n"] == 3 and s["p50_ms"] == 100 and s["max_ms"] == 100
    assert freshness_summary(cfg, "items", first_only=False)["max_ms"] == 4000
    assert freshness_summary(cfg, "behaviors")["n"] == 0


def test_flush_policy_by_rows_and_age() -> None:
    p = FlushPolicy(max_rows=3, max_age_s=0.05)
    assert not p.due()
    p.touch(2)
    assert not p.due()
    p.touch(1)
    assert p.due()
    p.reset()
    p.touch(0)
    assert not p.due()
    time.sleep(0.06)
    assert p.due()


def test_item_cache_fetches_once_and_rechecks_unknown_ids_later() -> None:
    calls: list[list[int]] = []
    known = {1: np.ones(2, np.float32)}

    def fetch(ids: list[int]) -> dict[int, np.ndarray]:
        calls.append(ids)
        return {i: known[i] for i in ids if i in known}

    cache = ItemCache(2, fetch, recheck_s=0.05)
    cache.ensure([1, 2])
    cache.ensure([1, 2])
    assert calls == [[1, 2]]
    assert 1 in cache and 2 not in cache
    known[2] = np.full(2, 2.0, np.float32)
    time.sleep(0.06)
    cache.ensure([1, 2])
    assert calls[-1] == [2]
    np.testing.assert_array_equal(cache.matrix[cache.rows([2, 1, 99])], [[2, 2], [1, 1], [0, 0]])
    for i in range(3, 3000):  # growth keeps earlier rows
        cache.put(i, np.full(2, i, np.float32))
    np.testing.assert_array_equal(cache.matrix[cache.rows([1, 2999])], [[1, 1], [2999, 2999]])


class _Rec:
    topic = "impressions"
    key = b"1"
    timestamp = 0

    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self.partition, self.offset, self.value = partition, offset, value


def _imp(u: int, i: int, c: int, ts: str) -> bytes:
    return f'{{"user_id":{u},"item_id":{i},"clicked":{c},"ts":"{ts}"}}'.encode()


def test_impression_log_is_deduplicated_after_redelivery(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    recs = [_Rec(0, 0, _imp(1, 5, 1, "2024-01-01T00:00:02Z")), _Rec(1, 0, _imp(2, 6, 0, "2024-01-01T00:00:01Z")),
            _Rec(0, 1, b"{bad"), _Rec(0, 2, _imp(1, 7, 0, "2024-01-01T00:00:03Z"))]
    log = ImpressionLogger(cfg, JobStats(job="impressions"))
    letters = log.process(recs)
    assert [lt.offset for lt in letters] == [1]
    log.flush()
    log.process([recs[0], recs[3]])  # re-delivered after a crash before the commit
    log.flush()
    df = read_impression_log(cfg)
    assert df[["user_id", "item_id", "clicked"]].values.tolist() == [[2, 6, 0], [1, 5, 1], [1, 7, 0]]
    assert df["ts"].iloc[0] == pd.Timestamp("2024-01-01T00:00:01Z")
