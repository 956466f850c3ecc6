"""The embedded stack against the real parts, driven through the CLI as a user would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infra.config import MmadsConfig
from infra.processes import free_port, pid_alive, read_record
from tests.support import make_config

pytestmark = pytest.mark.integration


def _env(cfg: MmadsConfig) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMADS_")}
    env.update({
        "MMADS_STATE_DIR": str(cfg.state_dir),
        "MMADS_KAFKA__PORT": str(cfg.kafka.port),
        "MMADS_MILVUS__PORT": str(cfg.milvus.port),
    })
    return env


def _mmads(cfg: MmadsConfig, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmads", *args], env=_env(cfg), capture_output=True,
                          text=True, timeout=timeout)


def _kafka_roundtrip(cfg: MmadsConfig) -> list[bytes]:
    from kafka import KafkaConsumer, KafkaProducer

    topic = cfg.kafka.topics.items
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.servers, linger_ms=5)
    for i in range(20):
        producer.send(topic, key=str(i).encode(), value=json.dumps({"n": i}).encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=cfg.kafka.servers, group_id="t-" + uuid.uuid4().hex[:6],
                             auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=10,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000, consumer_timeout_ms=8000)
    got = [m.value for m in consumer]
    consumer.close()
    return got


def _milvus_roundtrip(cfg: MmadsConfig) -> list[int]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=cfg.milvus.address)
    client.create_collection("probe", dimension=8, metric_type="COSINE")
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 8)).astype("float32")
    client.insert("probe", [{"id": i, "vector": v.tolist()} for i, v in enumerate(vecs)])
    client.flush("probe")
    hits = client.search("probe", data=[vecs[7].tolist()], limit=3, output_fields=["id"])
    client.close()
    return [int(h["id"]) for h in hits[0]]


def _feast_roundtrip(cfg: MmadsConfig) -> list[str | None]:
    from feature_repo.store import open_store

    store = open_store(cfg)
    now = pd.Timestamp.now(tz="UTC")
    df = pd.DataFrame({
        "item_id": [11, 12], "emb": [np.ones(cfg.model.dim, "float32").tolist()] * 2,
        "category": ["shoes", "bags"], "created_at": [now, now], "event_timestamp": [now, now],
        "created_ts": [now, now],  # Feast's own write wants the sources' created_timestamp_column
    })
    store.write_to_online_store("item_embeddings", df)
    out = store.get_online_features(features=["item_embeddings:category"],
                                    entity_rows=[{"item_id": 11}, {"item_id": 12}, {"item_id": 13}]).to_dict()
    return list(out["category"])


def test_stack_up_status_roundtrips_down(tmp_path: Path):
    cfg = make_config(tmp_path / "state")
    up = _mmads(cfg, "stack", "up")
    assert up.returncode == 0, up.stderr
    try:
        pids = {n: read_record(cfg.state_dir, n).pid for n in ("tansu", "milvus")}  # type: ignore[union-attr]
        again = _mmads(cfg, "stack", "up")
        assert again.returncode == 0, again.stderr
        assert {n: read_record(cfg.state_dir, n).pid for n in pids} == pids  # type: ignore[union-attr]
        status = _mmads(cfg, "stack", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        for part in ("kafka", "milvus", "feast"):
            assert part in status.stdout
        assert "NO" not in status.stdout
        assert len(_kafka_roundtrip(cfg)) == 20
        assert _milvus_roundtrip(cfg)[0] == 7
        assert _feast_roundtrip(cfg) == ["shoes", "bags", None]
    finally:
        down = _mmads(cfg, "stack", "down")
    assert down.returncode == 0, down.stderr
    time.sleep(0.2)
    assert not any(pid_alive(p) for p in pids.values())
    assert not (cfg.state_dir / "run" / "tansu.json").exists()
    status = _mmads(cfg, "stack", "status")
    assert status.returncode == 1


def test_port_in_use_is_one_line(tmp_path: Path):
    cfg = make_config(tmp_path / "state")
    with socket.socket() as s:
        s.bind((cfg.kafka.host, cfg.kafka.port))
        s.listen()
        res = _mmads(cfg, "stack", "up")
    _mmads(cfg, "stack", "down")
    assert res.returncode == 1
    assert "in use" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_stale_pid_record_is_cleaned(tmp_path: Path):
    from infra import stack

    cfg = make_config(tmp_path / "state")
    run = cfg.state_dir / "run"
    run.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / "tansu.json").write_text(json.dumps({
        "name": "tansu", "pid": dead.pid, "argv": ["tansu"], "role": "service", "log": "x",
        "host": "127.0.0.1", "port": free_port(), "started_at": 0.0}))
    try:
        stack.up(cfg)
        rec = read_record(cfg.state_dir, "tansu")
        assert rec is not None and rec.pid != dead.pid and pid_alive(rec.pid)
    finally:
        stack.down(cfg)


def test_external_endpoint_that_does_not_answer(tmp_path: Path):
    cfg = make_config(tmp_path / "state")
    env = _env(cfg) | {"MMADS_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    res = subprocess.run([sys.executable, "-m", "mmads", "stack", "up"], env=env, capture_output=True,
                         text=True, timeout=120)
    _mmads(cfg, "stack", "down")
    assert res.returncode == 1
    assert "kafka" in res.stderr and "does not answer" in res.stderr
    assert read_record(cfg.state_dir, "tansu") is None  # nothing started for an external broker
