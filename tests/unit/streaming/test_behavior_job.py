import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_repo.history import history_snapshots
from feature_repo.schema import USER_SCHEMA
from infra.config import MmadsConfig, load_config
from infra.errors import StackError
from streaming.behavior_job import BehaviorJob
from streaming.behavior_state import ItemCache, decode_entry
from streaming.events import encode_value, iso_utc
from streaming.stats import JobStats

DIM = 4


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: int = 0


class Harness:
    """A BehaviorJob with an in-memory catalogue of item vectors and collecting writers."""

    def __init__(self, cfg: MmadsConfig, known: set[int]) -> None:
        rng = np.random.default_rng(0)
        self.vectors = {i: rng.normal(size=DIM).astype(np.float32) for i in range(100)}
        self.known = set(known)
        self.online: list[pa.Table] = []
        self.changelog: list[tuple[int, int, bytes]] = []
        self.fail_online = False
        cache = ItemCache(DIM, lambda ids: {i: self.vectors[i] for i in ids if i in self.known}, recheck_s=0.0)
        self.job = BehaviorJob(cfg, cache, self._write_users, self.changelog.extend, JobStats(job="behaviors"))

    def _write_users(self, rows: pa.Table) -> None:
        if self.fail_online:
            raise StackError("feature store down")
        self.online.append(rows)

    def latest_online(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for table in self.online:
            assert table.schema.equals(USER_SCHEMA)
            for uid, ids in zip(table["user_id"].to_pylist(), table["hist_item_ids"].to_pylist(), strict=True):
                out[int(uid)] = list(ids)
        return out


def _cfg(tmp_path: Path, **streaming: object) -> MmadsConfig:
    return load_config(env={}).with_overrides(
        state_dir=tmp_path, model={"dim": DIM, "history_len": 3},
        streaming={"retry_max_wait_s": 0.05, "offline_flush_s": 0.01, **streaming})


def _behaviors(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) * 1000, unit="ms")
    return pd.DataFrame({"user_id": rng.integers(0, 5, n), "item_id": rng.integers(0, 12, n),
                         "action": rng.choice(["click", "cart", "purchase"], n), "ts": ts})


def _records(df: pd.DataFrame, partitions: int = 2) -> list[Rec]:
    offsets = {p: 0 for p in range(partitions)}
    out = []
    for u, i, a, t in zip(df["user_id"], df["item_id"], df["action"], df["ts"], strict=True):
        p = int(u) % partitions
        value = encode_value({"user_id": int(u), "item_id": int(i), "action": str(a), "ts": iso_utc(t)})
        out.append(Rec("behaviors", p, offsets[p], str(int(u)).encode(), value))
        offsets[p] += 1
    return out


def _expected(df: pd.DataFrame, n: int) -> dict[int, list[int]]:
    snaps = history_snapshots(df, n)
    return {int(u): list(h) for u, h in zip(snaps["user_id"], snaps["hist_item_ids"], strict=True)}


def test_online_rows_equal_the_batch_step(tmp_path: Path) -> None:
    h = Harness(_cfg(tmp_path), known=set(range(100)))
    df = _behaviors(60)
    recs = _records(df)
    for s in range(0, len(recs), 17):
        assert h.job.process(recs[s:s + 17]) == []
    assert h.latest_online() == _expected(df, 3)
    batch = history_snapshots(df, 3)
    row = h.online[-1].to_pandas().iloc[0]
    assert list(row.index) == ["user_id", "hist_item_ids", "hist_ts", "last_event_ts", "event_timestamp"]  # lean
    last = batch[batch["user_id"] == row["user_id"]].iloc[-1]
    assert list(row["hist_ts"]) == list(last["hist_ts"])  # per-item times, the batch step's
    h.job.flush()
    snaps = pq.read_table(next((tmp_path / "feature_repo/offline/user_behavior").glob("part-*.parquet"))).to_pandas()
    assert len(snaps) == len(batch)
    assert sorted(map(tuple, snaps["hist_item_ids"])) == sorted(map(tuple, batch["hist_item_ids"]))
    assert sorted(map(tuple, snaps["hist_ts"])) == sorted(map(tuple, batch["hist_ts"]))
    assert set(snaps["event_timestamp"]) == set(batch["event_timestamp"])


def test_redelivered_events_are_skipped(tmp_path: Path) -> None:
    h = Harness(_cfg(tmp_path), known=set(range(100)))
    df = _behaviors(40)
    recs = _records(df)
    h.job.process(recs)
    before = h.latest_online()
    h.online.clear()
    h.job.process(recs[10:])  # a crash re-delivers a tail
    assert h.online == []
    assert h.latest_online() == {} and before == _expected(df, 3)


def test_changelog_restores_state_and_skips_applied_offsets(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    h = Harness(cfg, known=set(range(100)))
    df = _behaviors(50)
    recs = _records(df)
    h.job.process(recs[:30])
    h.job.flush()
    restored: dict[int, dict] = {}
    for part, _uid, value in h.changelog:
        uid, entry = decode_entry(value, 3)
        restored.setdefault(part, {})[uid] = entry
    first = history_snapshots(df.iloc[:30], 3).drop_duplicates("user_id", keep="last").set_index("user_id")
    for users in restored.values():  # the changelog keeps the per-item times too
        for uid, entry in users.items():
            assert list(entry.state.item_ts) == list(first.loc[uid, "hist_ts"])
    h2 = Harness(cfg, known=set(range(100)))
    h2.job.users.update(restored)
    h2.job.process(recs[20:])  # re-delivery from an older committed offset
    h.job.process(recs[30:])
    assert h2.latest_online() == {u: v for u, v in h.latest_online().items() if u in h2.latest_online()}
    merged = {**_expected(df.iloc[:30], 3), **h2.latest_online()}
    assert merged == _expected(df, 3)


def test_unknown_item_waits_keeps_user_order_and_holds_commit(tmp_path: Path) -> None:
    h = Harness(_cfg(tmp_path, retry_max_wait_s=60.0), known={1, 2, 3})
    t = pd.Timestamp("2024-01-01", tz="UTC")
    df = pd.DataFrame({"user_id": [0, 0, 0, 1], "item_id": [1, 50, 2, 3], "action": ["click"] * 4,
                       "ts": [t, t + pd.Timedelta(1, "s"), t + pd.Timedelta(2, "s"), t]})
    recs = _records(df, partitions=1)
    h.job.process(recs)
    assert h.latest_online() == {0: [1], 1: [3]}
    assert h.job.held_offsets() == {("behaviors", 0): 1}
    assert h.job.has_pending()
    h.known.add(50)
    h.job.process([])
    assert h.latest_online()[0] == [2, 50, 1]
    assert h.job.held_offsets() == {}


def test_unknown_item_is_dead_lettered_after_the_wait(tmp_path: Path) -> None:
    h = Harness(_cfg(tmp_path, retry_max_wait_s=0.001), known={1})
    t = pd.Timestamp("2024-01-01", tz="UTC")
    df = pd.DataFrame({"user_id": [0, 0], "item_id": [77, 1], "action": ["click", "click"],
                       "ts": [t, t + pd.Timedelta(1, "s")]})
    recs = _records(df, partitions=1)
    letters = h.job.process(recs)
    time.sleep(0.01)
    letters += h.job.process([])
    assert [lt.offset for lt in letters] == [0]
    assert "unknown item 77" in letters[0].error
    assert h.latest_online() == {0: [1]}
    assert not h.job.has_pending()


def test_retry_buffer_is_bounded(tmp_path: Path) -> None:
    h = Harness(_cfg(tmp_path, retry_max_wait_s=60.0, retry_buffer_size=3), known=set())
    t = pd.Timestamp("2024-01-01", tz="UTC")
    df = pd.DataFrame({"user_id": [0, 1, 2, 3, 4], "item_id": [90] * 5, "action": ["click"] * 5,
                       "ts": [t] * 5})
    letters = h.job.process(_records(df, partitions=1))
    assert [lt.offset for lt in letters] == [0, 1]
    assert all("retry buffer full" in lt.error for lt in letters)
    assert h.job.held_offsets() == {("behaviors", 0): 2}


def test_malformed_events_are_dead_lettered_and_good_ones_applied(tmp_path: Path) -> None:
    h = Harness(_cfg(tmp_path), known=set(range(100)))
    df = _behaviors(10)
    recs = _records(df, partitions=1)
    mistyped = {"user_id": 1.5, "item_id": 2, "action": "click", "ts": "2024-01-01T00:00:00Z"}  # not an id
    values = [b"{oops", json.dumps({"user_id": 1}).encode(), json.dumps(mistyped).encode()]
    bad = [Rec("behaviors", 0, 100 + i, b"x", v) for i, v in enumerate(values)]
    letters = h.job.process(recs[:5] + bad + recs[5:])
    assert sorted(lt.offset for lt in letters) == [100, 101, 102]
    assert h.latest_online() == _expected(df, 3)


def test_failed_online_write_changes_nothing_and_retry_succeeds(tmp_path: Path) -> None:
    h = Harness(_cfg(tmp_path), known=set(range(100)))
    df = _behaviors(20)
    recs = _records(df)
    h.fail_online = True
    with pytest.raises(StackError):
        h.job.process(recs)
    assert h.job.users == {} and h.job.changed == {}
    h.fail_online = False
    h.job.process(recs)
    assert h.latest_online() == _expected(df, 3)


@pytest.mark.parametrize("ts", ["1677-09-21T00:12:43.145225Z", "1969-12-31T23:59:59.999999Z", "1970-01-01T00:00:00Z",
                                "2024-02-29T23:59:59.5+05:30", "2024-05-01T12:00:00.123456-08:00",
                                "2262-04-11T23:47:16.854775Z"])
def test_epoch_us_of_parsed_event_times_is_to_us(ts: str) -> None:
    """The job's field arithmetic gives the batch path's epoch microseconds for every parsed time."""
    from feature_repo.history import to_us
    from streaming.behavior_job import epoch_us
    from streaming.events import parse_event

    ev = parse_event("behaviors", encode_value({"user_id": 1, "item_id": 2, "action": "click", "ts": ts}))
    assert epoch_us(ev.ts) == to_us(pd.Timestamp(ts))  # type: ignore[union-attr]
