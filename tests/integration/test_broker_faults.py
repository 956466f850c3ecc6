"""Broker faults against the real Tansu broker: kill -9 it, start it again, check what survived.

* memory storage: the restart loses every topic; ``stack up``, ``stack status`` and a running (and a
  newly started) streaming job each report it as possible data loss and fail, never silently;
* s3 storage (moto's local S3 server, which ``stack up`` starts): the restarted broker has every
  message and committed offset, and the jobs finish with exact Milvus and Feast contents.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import stack
from infra.broker_storage import moto_server_binary
from infra.config import MmadsConfig
from infra.errors import BrokerDataLossError, StackError
from infra.processes import free_port, pid_alive, port_open, read_record
from streaming.events import encode_value
from streaming.milvus_sink import MilvusSink
from streaming.replay import publish, replay
from streaming.stats import committed_counts, wait_caught_up
from tests.integration.test_streaming import (
    DIM,
    Job,
    _behaviors,
    _dataset,
    _expected_histories,
    _items,
    _online_histories,
    _online_items,
    _wait,
)
from tests.support import make_config

pytestmark = pytest.mark.integration
LOSS = "broker restarted with memory storage: possible data loss"


def _broker_port() -> int:
    """A free port below the ephemeral range.

    Between the kill and the restart, no outgoing connection or port-0 bind of another process
    can take it (a restart on a random ephemeral port once found it taken).
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, min(low, 32_000))
        if not port_open("127.0.0.1", port):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port below the ephemeral range")


def _kill_broker(cfg: MmadsConfig) -> int:
    rec = read_record(cfg.state_dir, stack.KAFKA)
    assert rec is not None and pid_alive(rec.pid)
    os.kill(rec.pid, signal.SIGKILL)
    # every thread gone (infra.processes.pid_alive): the restart finds the port free at once
    _wait(lambda: not pid_alive(rec.pid), 10, "the broker to die")
    return rec.pid


def _kafka_row(cfg: MmadsConfig) -> stack.PartStatus:
    return next(r for r in stack.status(cfg) if r.part == "kafka")


def _status_cli(cfg: MmadsConfig) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMADS_")}
    env.update(MMADS_STATE_DIR=str(cfg.state_dir), MMADS_KAFKA__PORT=str(cfg.kafka.port),
               MMADS_MILVUS__PORT=str(cfg.milvus.port), MMADS_KAFKA__STORAGE=cfg.kafka.storage,
               MMADS_KAFKA__S3__PORT=str(cfg.kafka.s3.port))
    return subprocess.run([sys.executable, "-m", "mmads", "stack", "status"], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def memory_stack(tmp_path: Path) -> Iterator[MmadsConfig]:
    cfg = make_config(tmp_path / "state", kafka={"port": _broker_port(), "partitions": 4},
                      streaming={"stats_interval_s": 0.5})
    stack.up(cfg)
    try:
        yield cfg
    finally:
        stack.down(cfg, grace_s=2.0)


def _impressions(n: int) -> list[tuple[bytes, bytes]]:
    return [(str(i % 7).encode(), encode_value({"user_id": i % 7, "item_id": i, "clicked": i % 2,
                                                 "ts": f"2024-03-01T00:00:{i % 60:02d}Z"})) for i in range(n)]


def test_memory_broker_restart_is_reported_as_possible_data_loss(memory_stack: MmadsConfig) -> None:
    cfg = memory_stack
    topic = cfg.kafka.topics.impressions
    sent = publish(cfg, topic, _impressions(40))
    job = Job(cfg, "streaming.impression_logger")
    try:
        wait_caught_up(cfg, {topic: sent}, timeout_s=60)
        assert _kafka_row(cfg).healthy
        pid = _kill_broker(cfg)
        row = _kafka_row(cfg)  # status names the process that is gone
        assert not row.healthy and f"(pid {pid}, started " in row.detail and "is gone" in row.detail
        with pytest.raises(BrokerDataLossError, match=f"{LOSS}: topics (recreated|gone): .*{topic}"):
            stack.up(cfg)  # a new broker, empty topics: up says so and fails
        assert job.proc.wait(60) == 1  # the running job stops with an error, not silently
    finally:
        if job.proc.poll() is None:
            job.kill()
    log = job.log.read_text()
    assert "ERROR" in log and LOSS in log, log[-2000:]
    assert committed_counts(cfg)[topic] == sent  # nothing committed into the new, empty topic
    row = _kafka_row(cfg)
    assert not row.healthy and LOSS in row.detail
    status = _status_cli(cfg)
    assert status.returncode == 1 and LOSS in status.stdout, status.stdout + status.stderr
    late = Job(cfg, "streaming.impression_logger")  # a job started after the restart refuses too
    assert late.proc.wait(60) == 1
    assert LOSS in late.log.read_text()
    stack.down(cfg, grace_s=2.0)  # down and up start clean: nothing to report
    stack.up(cfg)
    assert _kafka_row(cfg).healthy


def test_topic_ids_are_kept_across_a_second_up(memory_stack: MmadsConfig) -> None:
    from infra import topic_ids

    before = topic_ids.load_recorded(memory_stack)
    assert set(before) == set(stack.topic_names(memory_stack))
    stack.up(memory_stack)  # a live broker: nothing restarted, nothing reported
    assert topic_ids.load_recorded(memory_stack) == before
    assert stack.topic_changes(memory_stack) == []


def _up_again(cfg: MmadsConfig) -> None:
    """``stack.up`` after the kill; its Milvus probe (5 s) has timed out under the jobs' load, so try 3 times."""
    for attempt in range(3):
        try:
            stack.up(cfg)
            return
        except StackError as exc:
            if not str(exc).startswith("milvus") or attempt == 2:
                raise


def _s3_config(state: Path) -> MmadsConfig:
    return make_config(
        state, kafka={"port": _broker_port(), "partitions": 4, "storage": "s3", "s3": {"port": free_port()}},
        model={"dim": DIM, "history_len": 10},
        streaming={"offline_flush_s": 30.0, "stats_interval_s": 0.5, "retry_max_wait_s": 1.0,
                   "behavior_batch_size": 200, "max_backoff_s": 1.0},
        milvus={"port": free_port(), "flush_interval_s": 0.5})


@pytest.mark.slow
def test_s3_broker_killed_mid_replay_loses_and_doubles_nothing(tmp_path: Path) -> None:
    try:
        moto_server_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    from encoders import pretrained_encoder
    from mmads.commands.stack import stack_up

    cfg = _s3_config(tmp_path / "state")
    stack_up(cfg)
    jobs: list[Job] = []
    try:
        model = tmp_path / "model"
        pretrained_encoder(cfg, seed=0, use_images=False).save(model)
        items = _items(120, 1_000)
        first, later = items.iloc[:80], items.iloc[80:]
        beh = _behaviors(3000, users=60, items=first["item_id"].to_numpy(), first_user=5_000, seed=2)
        t = cfg.kafka.topics
        sent = {t.items: replay(_dataset(tmp_path, items=first), cfg, "items", progress=False)}
        jobs.append(Job(cfg, "streaming.item_indexer", "--model", str(model)))
        wait_caught_up(cfg, {t.items: sent[t.items]}, timeout_s=120)
        jobs.append(Job(cfg, "streaming.behavior_job"))
        sent[t.behaviors] = replay(_dataset(tmp_path, behaviors=beh.iloc[:2000]), cfg, "behaviors", progress=False)
        _wait(lambda: int(jobs[1].stats(cfg).get("written", 0)) >= 300, 90, "the behavior job to apply 300 events")
        committed = committed_counts(cfg).get(t.behaviors, 0)
        _kill_broker(cfg)  # the behavior job commits every 30 s: most of what it read is uncommitted
        assert committed < sent[t.behaviors]
        _up_again(cfg)  # the same topics (ids) from the bucket: no data loss to report
        sent[t.items] += replay(_dataset(tmp_path, items=later), cfg, "items", progress=False)
        sent[t.behaviors] += replay(_dataset(tmp_path, behaviors=beh.iloc[2000:]), cfg, "behaviors",
                                    progress=False)
        wait_caught_up(cfg, sent, timeout_s=180)
        assert [j.proc.poll() for j in jobs] == [None, None]  # neither job saw a loss
        sink = MilvusSink(cfg, DIM)
        got = sink.client.query(cfg.milvus.collection, filter="item_id >= 0", output_fields=["item_id"], limit=1000)
        assert sorted(r["item_id"] for r in got) == items["item_id"].tolist()  # every item once
        assert all(v is not None for v in _online_items(cfg, items["item_id"].to_numpy()).values())
        expected = _expected_histories(beh, cfg.model.history_len)
        assert len(expected) == beh["user_id"].nunique()
        # every user's exact last-10 history: a lost event or one applied twice would change it
        assert _online_histories(cfg, sorted(expected)) == expected
        assert [j.stop() for j in jobs] == [0, 0]
    finally:
        for j in jobs:
            if j.proc.poll() is None:
                j.kill()
        stack.down(cfg, grace_s=2.0)
    # stack down stopped the local S3 server too, which keeps its objects in memory: the topics went with it
    assert not (cfg.state_dir / "kafka" / "topic_ids.json").exists()



@pytest.mark.slow
@pytest.mark.cluster
def test_external_bucket_keeps_topics_and_offsets_across_stack_down(tmp_path: Path) -> None:
    """An operator's bucket (MinIO, AWS): ``TEST_S3_ENDPOINT``, ``TEST_S3_BUCKET`` (default ``tansu``,
    must exist), credentials in ``MMADS_S3_ACCESS_KEY_ID`` / ``MMADS_S3_SECRET_ACCESS_KEY``."""
    from kafka.structs import OffsetAndMetadata, TopicPartition

    from streaming.kafka_io import make_consumer

    endpoint = os.environ.get("TEST_S3_ENDPOINT")
    if not endpoint:
        pytest.skip("TEST_S3_ENDPOINT names no S3 bucket (MinIO, AWS) to run against")
    cfg = make_config(tmp_path / "state", kafka={
        "port": _broker_port(), "partitions": 2, "storage": "s3",
        "s3": {"endpoint": endpoint, "bucket": os.environ.get("TEST_S3_BUCKET", "tansu")},
        "topics": {"items": f"items-{os.getpid()}-{random.randrange(10**6)}"}})
    topic = cfg.kafka.topics.items
    stack.up(cfg)
    try:
        sent = publish(cfg, topic, [(str(i).encode(), b"x") for i in range(100)])
        consumer = make_consumer(cfg, group="ext")
        parts = [TopicPartition(topic, p) for p in range(2)]
        consumer.assign(parts)
        got = []
        _wait(lambda: got.extend(r for rs in consumer.poll(200).values() for r in rs) or len(got) >= sent, 30,
              "the messages")
        consumer.commit({tp: OffsetAndMetadata(consumer.position(tp), "", -1) for tp in parts})
        consumer.close()
        stack.down(cfg, grace_s=2.0)
        stack.up(cfg)  # a new broker on the same bucket: same topic ids, nothing to report
        consumer = make_consumer(cfg, group="ext")
        consumer.assign(parts)
        assert sum(consumer.committed(tp) or 0 for tp in parts) == sent
        consumer.close()
        fresh = make_consumer(cfg, group=None)
        fresh.assign(parts)
        again: list[object] = []
        _wait(lambda: again.extend(r for rs in fresh.poll(200).values() for r in rs) or len(again) >= sent, 30,
              "the messages again")
        fresh.close()
    finally:
        stack.down(cfg, grace_s=2.0)
