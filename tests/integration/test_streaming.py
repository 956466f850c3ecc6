"""Streaming jobs against the real Tansu broker, Milvus Lite server and Feast (SQLite online store).

Jobs run as subprocesses (``python -m streaming.<job>``) so they can be killed with SIGKILL. Every
test gets its own topics, consumer groups, Milvus collection and entity-id range, sharing one
applied Feast repo (apply is slow) and the session's broker and Milvus server.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from feature_repo.history import history_snapshots
from feature_repo.store import apply_repo, open_store, read_offline
from infra import stack
from infra.config import MmadsConfig
from infra.dataset import Dataset
from infra.errors import StackError
from infra.processes import free_port, port_open
from streaming.dlq import parse_dead_letter
from streaming.events import dataset_events, encode_value, iso_utc
from streaming.impression_logger import read_impression_log, run_impressions
from streaming.kafka_io import make_consumer
from streaming.milvus_sink import MilvusSink
from streaming.replay import publish, replay
from streaming.stats import committed_counts, freshness_summary, read_stats, wait_caught_up
from tests.support import http_get

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DIM = 16
ROOT = Path(__file__).resolve().parents[2]
_tags = itertools.count()


@pytest.fixture(scope="module")
def base_cfg(stack_cfg: MmadsConfig, tmp_path_factory: pytest.TempPathFactory) -> MmadsConfig:
    cfg = stack_cfg.with_overrides(
        state_dir=tmp_path_factory.mktemp("streaming"), model={"dim": DIM, "history_len": 10},
        streaming={"offline_flush_s": 0.5, "stats_interval_s": 0.5, "retry_max_wait_s": 1.0,
                   "behavior_batch_size": 200, "max_backoff_s": 1.0},
        milvus={"flush_interval_s": 0.5})
    apply_repo(cfg)
    return cfg


@pytest.fixture(scope="module")
def model_dir(base_cfg: MmadsConfig) -> Path:
    from encoders import pretrained_encoder

    out = Path(base_cfg.state_dir) / "model"
    pretrained_encoder(base_cfg, seed=0, use_images=False).save(out)
    return out


def _isolated(base: MmadsConfig, **overrides: object) -> tuple[MmadsConfig, int]:
    """A config with its own topics, groups and collection; returns it and an id offset."""
    n = next(_tags)
    tag = f"t{n}{os.getpid()}"
    t = {"items": f"items-{tag}", "behaviors": f"behaviors-{tag}", "impressions": f"impressions-{tag}",
         "behavior_changelog": f"behaviors-{tag}.state"}
    changes: dict[str, object] = {"kafka": {"topics": t, "group_prefix": f"mmads-{tag}"},
                                  "milvus": {"collection": f"items_{tag}"}}
    for key, value in overrides.items():
        merged = dict(changes.get(key, {}))  # type: ignore[call-overload]
        merged.update(value)  # type: ignore[call-overload]
        changes[key] = merged
    cfg = base.with_overrides(**changes)
    stack.ensure_topics(cfg)
    return cfg, (n + 1) * 100_000


class Job:
    """A streaming job in its own process."""

    def __init__(self, cfg: MmadsConfig, module: str, *extra: str) -> None:
        path = Path(cfg.state_dir) / f"cfg-{cfg.kafka.group_prefix}.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MMADS_")}
        env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        self.log = Path(cfg.state_dir) / f"{cfg.kafka.group_prefix}-{module}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", module, "--config", str(path), *extra],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def stats(self, cfg: MmadsConfig) -> dict[str, object]:
        found = [d for d in read_stats(cfg) if d.get("pid") == self.proc.pid]
        return found[0] if found else {}


def _wait(cond: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def jobs() -> Iterator[list[Job]]:
    started: list[Job] = []
    yield started
    for job in started:
        if job.proc.poll() is None:
            job.kill()


def _items(n: int, first_id: int) -> pd.DataFrame:
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s")
    words = ["red", "wool", "scarf", "blue", "cotton", "shirt", "green", "silk"]
    return pd.DataFrame({"item_id": np.arange(first_id, first_id + n, dtype=np.int64),
                         "title": [f"{words[i % 8]} {words[(i * 3) % 8]} {i}" for i in range(n)],
                         "category": [f"c{i % 4}" for i in range(n)], "image_path": [None] * n,
                         "created_at": ts})


def _dataset(root: Path, items: pd.DataFrame | None = None, behaviors: pd.DataFrame | None = None,
             impressions: pd.DataFrame | None = None) -> Dataset:
    empty = pd.DataFrame()
    return Dataset(root=root, items=items if items is not None else empty,
                   behaviors=behaviors if behaviors is not None else empty,
                   impressions=impressions if impressions is not None else empty, queries=empty)


def _behaviors(n: int, users: int, items: np.ndarray, first_user: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2024-02-01", tz="UTC") + pd.to_timedelta(np.arange(n) * 10, unit="ms")
    return pd.DataFrame({"user_id": first_user + rng.integers(0, users, n), "item_id": rng.choice(items, n),
                         "action": rng.choice(["click", "cart", "purchase"], n), "ts": ts})


def _index_directly(cfg: MmadsConfig, item_ids: np.ndarray, seed: int) -> None:
    vecs = np.random.default_rng(seed).normal(size=(len(item_ids), DIM)).astype(np.float32)
    sink = MilvusSink(cfg, DIM)
    sink.ensure_collection()
    sink.upsert(item_ids, vecs, ["c"] * len(item_ids), np.zeros(len(item_ids), np.int64), "test")
    sink.close()


def _online_items(cfg: MmadsConfig, ids: np.ndarray) -> dict[int, object]:
    res = open_store(cfg).get_online_features(
        features=["item_embeddings:emb"], entity_rows=[{"item_id": int(i)} for i in ids]).to_dict()
    return dict(zip(res["item_id"], res["emb"], strict=True))


def _online_histories(cfg: MmadsConfig, users: list[int]) -> dict[int, list[int]]:
    res = open_store(cfg).get_online_features(
        features=["user_behavior:hist_item_ids"], entity_rows=[{"user_id": u} for u in users]).to_dict()
    return {int(u): list(h or []) for u, h in zip(res["user_id"], res["hist_item_ids"], strict=True)}


def _expected_histories(df: pd.DataFrame, n: int) -> dict[int, list[int]]:
    snaps = history_snapshots(df, n)
    return {int(u): list(h) for u, h in zip(snaps["user_id"], snaps["hist_item_ids"], strict=True)}


def _dead_letters(cfg: MmadsConfig, topic: str, expected: int, timeout_s: float = 20) -> list[dict[str, object]]:
    consumer = make_consumer(cfg, [f"{topic}.dlq"], group=None)
    out: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=200).values():
                out.extend(parse_dead_letter(r.value) for r in recs)
    finally:
        consumer.close()
    return out


def _bad_items(first_id: int) -> list[bytes]:
    good = {"item_id": first_id, "title": "t", "category": "c", "image_uri": None,
            "created_at": "2024-01-01T00:00:00Z"}
    return [b"{not json", encode_value({k: v for k, v in good.items() if k != "title"}),
            encode_value({**good, "item_id": 1.5}), encode_value({**good, "created_at": "1600-01-01T00:00:00Z"})]


def test_indexer_writes_milvus_feast_and_dead_letters(base_cfg: MmadsConfig, model_dir: Path,
                                                       jobs: list[Job]) -> None:
    cfg, first = _isolated(base_cfg)
    items = _items(150, first)
    sent = replay(_dataset(cfg.state_dir, items=items), cfg, "items", progress=False)
    bad = _bad_items(first) * 5
    sent += publish(cfg, cfg.kafka.topics.items, [(b"k", v) for v in bad])
    jobs.append(Job(cfg, "streaming.item_indexer", "--model", str(model_dir), "--max-idle-s", "30"))
    wait_caught_up(cfg, {cfg.kafka.topics.items: sent}, timeout_s=90)
    sink = MilvusSink(cfg, DIM)
    assert sink.count() == 150
    rows = sink.client.get(cfg.milvus.collection, ids=[first, first + 149], output_fields=["model_version"])
    from encoders import ItemEncoder

    assert {r["model_version"] for r in rows} == {ItemEncoder.load(model_dir).version}
    online = _online_items(cfg, items["item_id"].to_numpy())
    assert all(v is not None and len(v) == DIM for v in online.values())  # type: ignore[arg-type]
    letters = _dead_letters(cfg, cfg.kafka.topics.items, len(bad))
    assert len(letters) == len(bad)
    reasons = " | ".join(str(d["error"]) for d in letters)
    for why in ("bad JSON", "missing field 'title'", "field 'item_id'", "outside what nanosecond time holds"):
        assert why in reasons
    assert {d["original_bytes"] for d in letters} == set(bad)
    assert freshness_summary(cfg, "items")["n"] >= 150
    assert jobs[0].stop() == 0


def test_indexer_killed_mid_stream_loses_and_duplicates_nothing(base_cfg: MmadsConfig, model_dir: Path,
                                                                jobs: list[Job]) -> None:
    cfg, first = _isolated(base_cfg, streaming={"offline_flush_s": 2.0, "batch_size": 16})
    items = _items(400, first)
    sent = replay(_dataset(cfg.state_dir, items=items), cfg, "items", progress=False)
    jobs.append(Job(cfg, "streaming.item_indexer", "--model", str(model_dir)))
    _wait(lambda: int(jobs[0].stats(cfg).get("written", 0)) >= 100, 90, "the indexer to write 100 items")
    committed_before = committed_counts(cfg).get(cfg.kafka.topics.items, 0)
    jobs[0].kill()  # most likely between Milvus writes and the next commit (commits are 2 s apart)
    committed_at_kill = committed_counts(cfg).get(cfg.kafka.topics.items, 0)
    assert committed_before <= committed_at_kill < sent
    sink = MilvusSink(cfg, DIM)
    assert sink.count() >= committed_at_kill  # offsets were committed only after their writes
    jobs.append(Job(cfg, "streaming.item_indexer", "--model", str(model_dir)))
    wait_caught_up(cfg, {cfg.kafka.topics.items: sent}, timeout_s=90)
    assert sink.count() == 400
    got = sink.client.query(cfg.milvus.collection, filter="item_id >= 0", output_fields=["item_id"], limit=1000)
    assert sorted(r["item_id"] for r in got) == items["item_id"].tolist()
    online = _online_items(cfg, items["item_id"].to_numpy())
    assert all(v is not None for v in online.values())
    _wait(lambda: int(jobs[1].stats(cfg).get("written", 0)) >= sent - committed_at_kill, 10, "restart stats")
    # The restarted indexer resumed at the killed one's last commit: it re-did (idempotently) what
    # that one had written since, and nothing before it.
    assert int(jobs[1].stats(cfg)["written"]) == sent - committed_at_kill  # type: ignore[call-overload]
    assert jobs[1].stop() == 0


def test_a_collection_created_meanwhile_by_another_process_is_used(base_cfg: MmadsConfig) -> None:
    # two indexers started together both find the collection missing; the later create must not kill one
    cfg, first = _isolated(base_cfg)
    late = MilvusSink(cfg, DIM)
    other = MilvusSink(cfg, DIM)
    answers = iter([False])  # late's first look: missing; then the other process creates it
    real_call = late._call

    def racing(what: str, fn: Any) -> Any:
        if what == "has_collection":
            stale = next(answers, None)
            if stale is not None:
                other.ensure_collection()
                return stale
        return real_call(what, fn)

    late._call = racing  # type: ignore[method-assign]
    late.ensure_collection()  # its create fails ("already exists"); it goes on with the other's collection
    late.upsert(np.array([first]), np.ones((1, DIM), np.float32), ["c"], np.zeros(1, np.int64), "test")
    assert late.get_vectors([first]).keys() == {first}
    with pytest.raises(StackError, match="dim"):  # and it is checked like any existing collection
        MilvusSink(cfg, DIM + 1).ensure_collection()
    late.close()
    other.close()


def test_two_indexers_in_one_group_split_the_partitions(base_cfg: MmadsConfig, model_dir: Path,
                                                       jobs: list[Job]) -> None:
    # the throughput deployment on this machine: a process per core in one consumer group
    cfg, first = _isolated(base_cfg)
    items = _items(300, first)
    for _ in range(2):
        jobs.append(Job(cfg, "streaming.item_indexer", "--model", str(model_dir)))
    _wait(lambda: all(j.stats(cfg).get("assigned") for j in jobs), 120, "both indexers to own partitions")
    sent = replay(_dataset(cfg.state_dir, items=items), cfg, "items", progress=False)
    wait_caught_up(cfg, {cfg.kafka.topics.items: sent}, timeout_s=120)
    sink = MilvusSink(cfg, DIM)
    got = sink.client.query(cfg.milvus.collection, filter="item_id >= 0", output_fields=["item_id"], limit=1000)
    assert sorted(r["item_id"] for r in got) == items["item_id"].tolist()  # each item once
    online = _online_items(cfg, items["item_id"].to_numpy())
    assert all(v is not None for v in online.values())
    _wait(lambda: sum(int(j.stats(cfg).get("written", 0)) for j in jobs) >= 300, 10, "both indexers' stats")
    written = [int(j.stats(cfg).get("written", 0)) for j in jobs]  # type: ignore[call-overload]
    assert min(written) > 0, f"one indexer wrote nothing: {written}"  # the partitions were split
    assert [j.stop() for j in jobs] == [0, 0]


def test_behavior_job_killed_mid_stream_rebuilds_exact_histories(base_cfg: MmadsConfig, jobs: list[Job]) -> None:
    # commits 20 s apart: on a quiet machine the job applies all 3,000 events within seconds, and the
    # kill must land before the commit that covers them
    cfg, first = _isolated(base_cfg, streaming={"offline_flush_s": 20.0})
    item_ids = np.arange(first, first + 100, dtype=np.int64)
    _index_directly(cfg, item_ids, seed=1)
    beh = _behaviors(3000, users=40, items=item_ids, first_user=first, seed=2)
    sent = replay(_dataset(cfg.state_dir, behaviors=beh), cfg, "behaviors", progress=False)
    jobs.append(Job(cfg, "streaming.behavior_job"))
    _wait(lambda: int(jobs[0].stats(cfg).get("written", 0)) >= 800, 90, "the behavior job to apply 800 events")
    jobs[0].kill()
    assert committed_counts(cfg).get(cfg.kafka.topics.behaviors, 0) < sent
    jobs.append(Job(cfg, "streaming.behavior_job"))
    wait_caught_up(cfg, {cfg.kafka.topics.behaviors: sent}, timeout_s=90)
    expected = _expected_histories(beh, cfg.model.history_len)
    assert _online_histories(cfg, sorted(expected)) == expected
    offline = read_offline(cfg, "user_behavior")
    offline = offline[offline["user_id"].isin(list(expected))]
    got = {(int(u), tuple(h), t) for u, h, t in zip(offline["user_id"], offline["hist_item_ids"],
                                                     offline["event_timestamp"], strict=True)}
    snaps = history_snapshots(beh, cfg.model.history_len)
    want = {(int(u), tuple(h), t) for u, h, t in zip(snaps["user_id"], snaps["hist_item_ids"],
                                                      snaps["event_timestamp"], strict=True)}
    assert got == want
    assert jobs[1].stop() == 0


def test_behavior_jobs_rebalanced_mid_stream_commit_and_keep_exact_histories(base_cfg: MmadsConfig,
                                                                             jobs: list[Job]) -> None:
    # No periodic commit: a job commits only when partitions are revoked (from kafka-python's IO
    # thread, in the rebalance listener) and when it stops. A second job joins while events flow (the
    # first one's partitions are revoked mid-batch), then the first one leaves (while they flow on a
    # machine that starts a job within the 30 s of the replay).
    cfg, first = _isolated(base_cfg, streaming={"offline_flush_s": 600.0, "offline_flush_rows": 10**9})
    item_ids = np.arange(first, first + 100, dtype=np.int64)
    _index_directly(cfg, item_ids, seed=3)
    beh = _behaviors(9000, users=60, items=item_ids, first_user=first, seed=4)
    producer = threading.Thread(target=replay, args=(_dataset(cfg.state_dir, behaviors=beh), cfg, "behaviors"),
                                kwargs={"rate": 300.0, "progress": False})
    a = Job(cfg, "streaming.behavior_job")
    jobs.append(a)
    _wait(lambda: a.stats(cfg).get("assigned"), 90, "the first behavior job to own the partitions")
    producer.start()
    try:
        b = Job(cfg, "streaming.behavior_job")
        jobs.append(b)
        _wait(lambda: a.stats(cfg).get("assigned") and b.stats(cfg).get("assigned"), 120,
              "both jobs to own partitions")
        assert int(a.stats(cfg)["commits"]) > 0  # type: ignore[call-overload]  # at its revocation
        _wait(lambda: int(b.stats(cfg).get("written", 0)) > 0, 60, "the second job to apply events")
        assert a.stop() == 0
        _wait(lambda: len(b.stats(cfg).get("assigned", [])) == 4, 60,  # type: ignore[arg-type]
              "the second job to own every partition")
        assert int(b.stats(cfg)["commits"]) > 0  # type: ignore[call-overload]  # at its own revocation
    finally:
        producer.join()
    processed = [-1]

    def settled() -> bool:
        now, processed[0] = processed[0], int(b.stats(cfg).get("processed", 0))  # type: ignore[call-overload]
        return now == processed[0]

    _wait(lambda: settled() or time.sleep(2.0), 60, "the second job to process everything")
    assert b.stop() == 0
    assert committed_counts(cfg).get(cfg.kafka.topics.behaviors, 0) == len(beh)
    for job in jobs:
        log = job.log.read_text()
        assert "Traceback" not in log and "rebalance listener" not in log, log[-3000:]
    expected = _expected_histories(beh, cfg.model.history_len)
    assert _online_histories(cfg, sorted(expected)) == expected
    offline = read_offline(cfg, "user_behavior")
    offline = offline[offline["user_id"].isin(list(expected))]
    got = sorted((int(u), tuple(h), t) for u, h, t in zip(offline["user_id"], offline["hist_item_ids"],
                                                         offline["event_timestamp"], strict=True))
    snaps = history_snapshots(beh, cfg.model.history_len)
    want = sorted((int(u), tuple(h), t) for u, h, t in zip(snaps["user_id"], snaps["hist_item_ids"],
                                                          snaps["event_timestamp"], strict=True))
    assert got == want  # each snapshot once: nothing lost, nothing written twice


def test_a_group_whose_members_stop_together_takes_new_members(base_cfg: MmadsConfig) -> None:
    # Tansu 0.6.0 wedged a group whose second member sent LeaveGroup while the rebalance the first
    # one's LeaveGroup started was in progress: a new member then waited for partitions forever
    # (90 s in each of 3 trials with a 2.5 s gap, and with none). Consumers on the embedded broker
    # leave by session timeout instead.
    cfg, _ = _isolated(base_cfg)
    topic, group = cfg.kafka.topics.items, f"{cfg.kafka.group_prefix}-together"
    publish(cfg, topic, [(str(i).encode(), b"{}") for i in range(400)])
    stop = [threading.Event(), threading.Event()]
    owned = [threading.Event(), threading.Event()]
    errors: list[BaseException] = []

    def member(k: int) -> None:
        try:
            consumer = make_consumer(cfg, [topic], group=group, client_id=f"member-{k}")
            while not stop[k].is_set():
                if consumer.poll(timeout_ms=100):
                    consumer.commit()
                if consumer.assignment():
                    owned[k].set()
            consumer.close(autocommit=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=member, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    _wait(lambda: all(o.is_set() for o in owned) or errors, 60, "both members to own partitions")
    for s in stop:
        s.set()
    for t in threads:
        t.join(30)
    assert not errors
    newcomer = make_consumer(cfg, [topic], group=group, client_id="newcomer")
    try:
        deadline = time.monotonic() + 40  # the stopped members' session timeout, then one join
        while not newcomer.assignment() and time.monotonic() < deadline:
            newcomer.poll(timeout_ms=200)
        assert len(newcomer.assignment()) == cfg.kafka.partitions
    finally:
        newcomer.close()


def test_malformed_behaviors_are_dead_lettered_and_the_job_keeps_going(base_cfg: MmadsConfig,
                                                                       jobs: list[Job]) -> None:
    # The scale: 10,000 good events among which 1,000 bad ones are mixed.
    cfg, first = _isolated(base_cfg)
    item_ids = np.arange(first, first + 50, dtype=np.int64)
    _index_directly(cfg, item_ids, seed=3)
    good = _behaviors(10_000, users=150, items=item_ids, first_user=first, seed=4)
    ok = {"user_id": first, "item_id": int(item_ids[0]), "action": "click", "ts": iso_utc(good["ts"].iloc[0])}
    kinds = {
        "bad JSON": [b'{"user_id": ' + str(i).encode() for i in range(250)],
        "missing field": [encode_value({k: v for k, v in ok.items() if k != "action"}) for _ in range(250)],
        "field 'item_id'": [encode_value({**ok, "item_id": i + 0.5}) for i in range(250)],
        "unknown item": [encode_value({**ok, "user_id": first + 5000 + i, "item_id": first + 99_000})
                         for i in range(125)],
        "outside what nanosecond time holds": [encode_value({**ok, "ts": "2999-01-01T00:00:00Z"})
                                               for _ in range(125)],
    }
    bad = [v for vs in kinds.values() for v in vs]
    rng = np.random.default_rng(5)
    good_values = [v for _, _, v in dataset_events(_dataset(cfg.state_dir, behaviors=good), "behaviors")]
    slots = np.sort(rng.choice(len(good_values) + len(bad), len(bad), replace=False))
    merged: list[bytes] = []
    gi = bi = 0
    for pos in range(len(good_values) + len(bad)):
        if bi < len(slots) and slots[bi] == pos:
            merged.append(bad[bi])
            bi += 1
        else:
            merged.append(good_values[gi])
            gi += 1
    good_keys = {v: str(json.loads(v)["user_id"]).encode() for v in good_values}
    sent = publish(cfg, cfg.kafka.topics.behaviors, [(good_keys.get(v, b"bad"), v) for v in merged])
    jobs.append(Job(cfg, "streaming.behavior_job"))
    wait_caught_up(cfg, {cfg.kafka.topics.behaviors: sent}, timeout_s=90)
    assert jobs[0].proc.poll() is None  # never stopped
    letters = _dead_letters(cfg, cfg.kafka.topics.behaviors, len(bad))
    assert len(letters) == len(bad)
    for why, values in kinds.items():
        assert sum(why in str(d["error"]) for d in letters) == len(values), why
    expected = _expected_histories(good, cfg.model.history_len)
    assert _online_histories(cfg, sorted(expected)) == expected
    assert jobs[0].stop() == 0


def test_indexer_survives_a_milvus_outage(base_cfg: MmadsConfig, model_dir: Path, jobs: list[Job],
                                          tmp_path: Path) -> None:
    port = free_port()
    cfg, first = _isolated(base_cfg, milvus={"port": port}, streaming={"offline_flush_s": 0.5})
    data = tmp_path / "milvus"
    data.mkdir()
    milvus_cmd = [str(Path(sys.executable).parent / "milvus-lite"), "server", "--data-dir", str(data),
                  "--host", "127.0.0.1", "--port", str(port)]

    def start_milvus() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(milvus_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: port_open("127.0.0.1", port), 60, "Milvus to listen")
        return proc

    milvus = start_milvus()
    try:
        items = _items(300, first)
        jobs.append(Job(cfg, "streaming.item_indexer", "--model", str(model_dir)))
        producer = threading.Thread(target=replay, args=(_dataset(cfg.state_dir, items=items), cfg, "items"),
                                    kwargs={"rate": 30.0, "progress": False})
        producer.start()
        _wait(lambda: int(jobs[0].stats(cfg).get("written", 0)) >= 60, 90, "60 items written")
        milvus.send_signal(signal.SIGKILL)
        milvus.wait(10)
        time.sleep(1.0)
        committed_down = committed_counts(cfg).get(cfg.kafka.topics.items, 0)
        time.sleep(4.0)
        assert committed_counts(cfg).get(cfg.kafka.topics.items, 0) == committed_down
        metrics_port = int(jobs[0].stats(cfg)["metrics_port"])  # type: ignore[call-overload]
        assert http_get(metrics_port, "/healthz")[0] == 200  # retrying with backoff is alive: no restart
        milvus = start_milvus()
        # Everything committed before or during the outage is in the restarted Milvus.
        sink = MilvusSink(cfg, DIM)
        _wait(lambda: sink.count() >= committed_down, 10, "committed rows in Milvus")
        producer.join()
        wait_caught_up(cfg, {cfg.kafka.topics.items: 300}, timeout_s=90)
        assert sink.count() == 300
        assert int(jobs[0].stats(cfg)["retries"]) > 0  # type: ignore[call-overload]
        status, text = http_get(metrics_port, "/metrics")
        assert status == 200
        assert re.search(r'mmads_stream_events_total\{job="items",outcome="retried",topic="[^"]+"\} [1-9]', text)
        assert jobs[0].stop() == 0
    finally:
        milvus.send_signal(signal.SIGTERM)
        milvus.wait(30)


def test_impression_logger_writes_the_label_log_once(base_cfg: MmadsConfig) -> None:
    cfg, first = _isolated(base_cfg)
    ts = pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(np.arange(500), unit="s")
    imp = pd.DataFrame({"user_id": first + np.arange(500) % 17, "item_id": first + np.arange(500) % 23,
                        "clicked": (np.arange(500) % 3 == 0).astype(np.int8), "ts": ts})
    sent = replay(_dataset(cfg.state_dir, impressions=imp), cfg, "impressions", progress=False)
    sent += publish(cfg, cfg.kafka.topics.impressions, [(b"1", b"{}")])
    stop = threading.Event()
    thread = threading.Thread(target=run_impressions, args=(cfg,), kwargs={"stop_event": stop})
    thread.start()
    try:
        wait_caught_up(cfg, {cfg.kafka.topics.impressions: sent}, timeout_s=60)
    finally:
        stop.set()
        thread.join(30)
    log = read_impression_log(cfg)
    log = log[(log["user_id"] >= first) & (log["user_id"] < first + 100_000)]
    assert len(log) == 500
    pd.testing.assert_frame_equal(
        log[["user_id", "item_id", "clicked"]].reset_index(drop=True),
        imp[["user_id", "item_id", "clicked"]].reset_index(drop=True), check_dtype=False)
    assert (log["ts"].dt.as_unit("ns").to_numpy() == imp["ts"].dt.as_unit("ns").to_numpy()).all()


def _librdkafka_send(cfg: MmadsConfig, topic: str, pairs: list[tuple[bytes, bytes]]) -> int:
    """Publish with confluent-kafka (librdkafka), a client mmads does not use itself."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    # murmur2_random: the Java (and kafka-python) partitioner, so a key lands where kafka-python puts it
    producer = confluent_kafka.Producer({"bootstrap.servers": cfg.kafka.servers, "client.id": "foreign",
                                         "linger.ms": 5, "acks": 1, "partitioner": "murmur2_random"})
    errors: list[str] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value in pairs:
        producer.produce(topic, key=key, value=value, on_delivery=report)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    return len(pairs)


def test_librdkafka_producer_events_are_processed_like_kafka_python(base_cfg: MmadsConfig, model_dir: Path,
                                                                   jobs: list[Job], tmp_path: Path) -> None:
    """Items, behaviors and impressions from confluent-kafka and kafka-python, mixed: all processed alike.

    The events use what docs/events.md allows a foreign producer: string ids, 1990s times with a
    UTC offset, side-feature fields on items.
    """
    from infra.ids import id_to_int64

    cfg, first = _isolated(base_cfg)
    # its own state dir: the impression log dedupes by (partition, offset), which other tests' topics share
    cfg = cfg.with_overrides(state_dir=tmp_path / "state")
    apply_repo(cfg)
    n_items, n_events = 40, 400
    rng = np.random.default_rng(11)
    skus = [f"sku-{first}-{i}" for i in range(n_items)]
    t0 = pd.Timestamp("1996-05-01T10:00:00+02:00")
    items = [{"item_id": s, "title": f"striped linen shirt {i}", "category": f"c{i % 3}", "image_uri": None,
              "created_at": (t0 + pd.Timedelta(seconds=i)).isoformat(), "price": float(i), "brand": "acme"}
             for i, s in enumerate(skus)]
    users = [f"u-{first}-{u}" for u in rng.integers(0, 25, n_events)]
    picked = [skus[i] for i in rng.integers(0, n_items, n_events)]
    times = [(t0 + pd.Timedelta(minutes=5, seconds=i)).isoformat() for i in range(n_events)]
    behaviors = [{"user_id": u, "item_id": s, "action": "click", "ts": t} for u, s, t in zip(users, picked, times,
                                                                                            strict=True)]
    impressions = [{"user_id": u, "item_id": s, "clicked": i % 2, "ts": t}
                   for i, (u, s, t) in enumerate(zip(users, picked, times, strict=True))]
    t = cfg.kafka.topics
    sent: dict[str, int] = {}
    for topic, docs, key in ((t.items, items, "item_id"), (t.behaviors, behaviors, "user_id"),
                             (t.impressions, impressions, "user_id")):
        pairs = [(str(d[key]).encode(), encode_value(d)) for d in docs]
        # half the entities from each client; one entity's events all from one client, in time order
        mine = [int(p[0].rsplit(b"-", 1)[1]) % 2 == 0 for p in pairs]
        sent[topic] = _librdkafka_send(cfg, topic, [p for p, m in zip(pairs, mine, strict=True) if m])
        sent[topic] += publish(cfg, topic, [p for p, m in zip(pairs, mine, strict=True) if not m])  # kafka-python
        if topic == t.items:  # items first, as a real catalogue precedes its events
            jobs.append(Job(cfg, "streaming.item_indexer", "--model", str(model_dir)))
            wait_caught_up(cfg, {t.items: sent[t.items]}, timeout_s=120)
    jobs.append(Job(cfg, "streaming.behavior_job"))
    jobs.append(Job(cfg, "streaming.impression_logger"))
    wait_caught_up(cfg, sent, timeout_s=120)
    assert sum(int(j.stats(cfg).get("dead_lettered", 0)) for j in jobs) == 0  # type: ignore[call-overload]
    ids = [id_to_int64(s) for s in skus]
    sink = MilvusSink(cfg, DIM)
    assert sink.count() == n_items
    assert sink.get_keys(ids) == dict(zip(ids, skus, strict=True))  # the spellings, both clients' items
    assert all(v is not None for v in _online_items(cfg, np.array(ids)).values())
    frame = pd.DataFrame({"user_id": [id_to_int64(u) for u in users], "item_id": [id_to_int64(s) for s in picked],
                          "action": "click", "ts": pd.to_datetime(times, utc=True)})
    expected = _expected_histories(frame, cfg.model.history_len)
    _wait(lambda: _online_histories(cfg, sorted(expected)) == expected, 30, "the histories online")
    _wait(lambda: read_impression_log(cfg)["user_id"].isin(set(frame["user_id"])).sum() == n_events, 30,
          "the impression log")
    log = read_impression_log(cfg)
    log = log[log["user_id"].isin(set(frame["user_id"]))].sort_values("ts", kind="stable")
    assert log["item_id"].tolist() == frame["item_id"].tolist()
    assert log["ts"].dt.year.unique().tolist() == [1996]
    for job in jobs:
        assert job.stop() == 0


def test_indexer_writes_the_side_features_its_events_carry(base_cfg: MmadsConfig, model_dir: Path,
                                                           jobs: list[Job]) -> None:
    """Item side features sent as extra event fields reach Feast's item_side view, online and offline."""
    side = [{"name": "brand", "kind": "categorical", "source": "items"},
            {"name": "price", "kind": "numeric", "source": "items"},
            {"name": "shop_id", "kind": "categorical", "source": "items"}]
    cfg, first = _isolated(base_cfg, data={"side_features": side})
    apply_repo(cfg)  # adds the item_side view next to the module's views
    items = _items(40, first)
    items["brand"] = [f"b{i % 3}" for i in range(40)]
    items["price"] = np.where(np.arange(40) % 7 == 0, np.nan, np.arange(40) * 2.5)
    sent = replay(_dataset(cfg.state_dir, items=items), cfg, "items", progress=False)  # no shop_id in any event
    jobs.append(Job(cfg, "streaming.item_indexer", "--model", str(model_dir), "--max-idle-s", "30"))
    wait_caught_up(cfg, {cfg.kafka.topics.items: sent}, timeout_s=90)
    assert jobs[0].stop() == 0
    ids = items["item_id"].to_numpy()
    res = open_store(cfg).get_online_features(
        features=["item_side:brand", "item_side:price", "item_side:shop_id"],
        entity_rows=[{"item_id": int(i)} for i in ids]).to_dict()
    assert res["brand"] == items["brand"].tolist()
    expected_price = [None if np.isnan(p) else p for p in items["price"]]
    assert res["price"] == expected_price
    assert res["shop_id"] == [None] * len(ids)
    offline = read_offline(cfg, "item_side")
    offline = offline[offline["item_id"].isin(ids)].drop_duplicates("item_id").set_index("item_id").loc[ids]
    assert offline["brand"].tolist() == items["brand"].tolist()
    np.testing.assert_array_equal(offline["price"].to_numpy(), items["price"].to_numpy())
    assert (pd.to_datetime(offline["event_timestamp"], utc=True).to_numpy() == items["created_at"].to_numpy()).all()
