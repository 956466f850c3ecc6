"""Metrics, probes and JSON logs of the real jobs and service; the alert rules and dashboard against them.

The three streaming jobs run as processes (``python -m streaming.<job>``) against the session's Tansu
broker, Milvus Lite server and a Feast repo, each serving ``/metrics`` on a free port (recorded in
its stats file) and logging JSON. The ranking service runs in-process on a small synthetic world.
Every PromQL expression of ``infra/monitoring`` must name only metrics these scrapes show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.serving_world import build_world
from feature_repo.store import apply_repo
from infra import stack
from infra.config import MmadsConfig
from serving.app import create_app
from streaming.events import encode_value
from streaming.kafka_io import make_consumer, make_producer
from streaming.replay import publish
from streaming.stats import read_stats, wait_caught_up
from tests.promql import alert_expressions, dashboard_expressions, exported_names, unknown_names
from tests.support import http_get

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DIM = 16
N_ITEMS, N_BEHAVIORS, N_IMPRESSIONS = 60, 400, 300
LOG_KEYS = {"time", "level", "job", "pid", "message"}


class Job:
    """A streaming job process with its own log file."""

    def __init__(self, cfg_file: Path, module: str, log: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        child = {k: v for k, v in os.environ.items() if not k.startswith("MMADS_")}
        child.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **(env or {}))
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", module, "--config", str(cfg_file), *extra],
                                         stdout=out, stderr=subprocess.STDOUT, env=child, cwd=ROOT)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(60)


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def _value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in _samples(text) if n == name and labels.items() <= lab.items())


def _wait(cond: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cfg(stack_cfg: MmadsConfig, tmp_path_factory: pytest.TempPathFactory) -> MmadsConfig:
    tag = f"mon{os.getpid()}"
    out = stack_cfg.with_overrides(
        state_dir=tmp_path_factory.mktemp("monitoring"), model={"dim": DIM, "history_len": 10},
        streaming={"offline_flush_s": 0.5, "stats_interval_s": 0.5, "metrics_port": 0},
        milvus={"flush_interval_s": 0.5, "collection": f"items_{tag}"},
        kafka={"topics": {"items": f"items-{tag}", "behaviors": f"behaviors-{tag}", "impressions": f"impressions-{tag}",
                          "behavior_changelog": f"behaviors-{tag}.state"}, "group_prefix": f"mmads-{tag}"},
        logging={"format": "json"})
    stack.ensure_topics(out)
    apply_repo(out)
    return out


@pytest.fixture(scope="module")
def running_jobs(cfg: MmadsConfig) -> Iterator[dict[str, tuple[Job, int]]]:
    """The three jobs, caught up on good and bad events: ``job -> (process, metrics port)``."""
    from encoders import pretrained_encoder

    state = Path(cfg.state_dir)
    model = state / "model"
    pretrained_encoder(cfg, seed=0, use_images=False).save(model)
    cfg_file = state / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    # the impression logger's config says text; the environment override makes it JSON
    text_file = state / "cfg-text.yaml"
    text_file.write_text(yaml.safe_dump(cfg.with_overrides(logging={"format": "text"}).model_dump(mode="json")))
    jobs = {
        "items": Job(cfg_file, "streaming.item_indexer", state / "items.log", "--model", str(model)),
        "behaviors": Job(cfg_file, "streaming.behavior_job", state / "behaviors.log"),
        "impressions": Job(text_file, "streaming.impression_logger", state / "impressions.log",
                           env={"MMADS_LOGGING__FORMAT": "json"}),
    }
    try:
        t = cfg.kafka.topics
        t0 = pd.Timestamp("2024-01-01", tz="UTC")
        items = [encode_value({"item_id": i, "title": f"red wool scarf {i}", "category": f"c{i % 3}",
                               "image_uri": None, "created_at": (t0 + pd.Timedelta(seconds=i)).isoformat()})
                 for i in range(N_ITEMS)]
        bad = [b"{not json", encode_value({"item_id": 1})]
        keyed = [(str(i).encode(), v) for i, v in enumerate(items)] + [(b"x", v) for v in bad]
        sent_items = publish(cfg, t.items, keyed)
        wait_caught_up(cfg, {t.items: sent_items}, timeout_s=180)  # behaviors need their items indexed
        rng = np.random.default_rng(0)
        users, picked = rng.integers(0, 20, N_BEHAVIORS), rng.integers(0, N_ITEMS, N_BEHAVIORS)
        behaviors = [(str(u).encode(), encode_value({"user_id": int(u), "item_id": int(i), "action": "click",
                                                     "ts": (t0 + pd.Timedelta(minutes=5, seconds=k)).isoformat()}))
                     for k, (u, i) in enumerate(zip(users, picked, strict=True))]
        impressions = [encode_value({"user_id": k % 20, "item_id": k % N_ITEMS, "clicked": k % 2,
                                     "ts": (t0 + pd.Timedelta(minutes=9, seconds=k)).isoformat()})
                       for k in range(N_IMPRESSIONS)]
        sent = {t.items: sent_items,
                t.behaviors: publish(cfg, t.behaviors, behaviors),
                t.impressions: publish(cfg, t.impressions, [(b"1", v) for v in impressions] + [(b"1", b"")])}
        wait_caught_up(cfg, sent, timeout_s=120)
        ports: dict[str, int] = {}
        for doc in read_stats(cfg):
            if isinstance(doc.get("metrics_port"), int):
                ports[str(doc["job"])] = int(doc["metrics_port"])  # type: ignore[call-overload]
        assert set(ports) == set(jobs), ports
        yield {name: (job, ports[name]) for name, job in jobs.items()}
    finally:
        for job in jobs.values():
            if job.proc.poll() is None:
                job.proc.kill()


def test_jobs_serve_metrics_health_and_readiness(cfg: MmadsConfig, running_jobs: dict[str, tuple[Job, int]]) -> None:
    items_port = running_jobs["items"][1]
    for _, port in running_jobs.values():
        assert http_get(port, "/healthz")[0] == 200
        status, body = http_get(port, "/readyz")
        assert status == 200 and sum(json.loads(body)["assigned_partitions"].values()) == cfg.kafka.partitions
    text = http_get(items_port, "/metrics")[1]
    assert _value(text, "mmads_stream_events_total", job="items", outcome="written") == N_ITEMS
    assert _value(text, "mmads_stream_events_total", job="items", outcome="dead_lettered") == 2
    assert _value(text, "mmads_stream_dead_letters_total", job="items", reason="bad_json") == 1
    assert _value(text, "mmads_stream_dead_letters_total", job="items", reason="missing_field") == 1
    assert _value(text, "mmads_stream_freshness_seconds_count", job="items") >= N_ITEMS
    for phase in ("decode", "encode", "feast", "milvus", "commit"):
        assert _value(text, "mmads_stream_batch_seconds_count", job="items", phase=phase) > 0, phase
    assert time.time() - _value(text, "mmads_stream_last_commit_timestamp_seconds", job="items") < 300
    beh = http_get(running_jobs["behaviors"][1], "/metrics")[1]
    assert _value(beh, "mmads_stream_events_total", job="behaviors", outcome="written") == N_BEHAVIORS
    for phase in ("decode", "milvus", "feast", "commit"):
        assert _value(beh, "mmads_stream_batch_seconds_count", job="behaviors", phase=phase) > 0, phase
    imp = http_get(running_jobs["impressions"][1], "/metrics")[1]
    assert _value(imp, "mmads_stream_events_total", job="impressions", outcome="written") == N_IMPRESSIONS
    assert _value(imp, "mmads_stream_dead_letters_total", job="impressions", reason="empty") == 1
    assert _value(imp, "mmads_stream_freshness_seconds_count", job="impressions") == N_IMPRESSIONS


def test_lag_is_zero_per_partition_once_caught_up(cfg: MmadsConfig,
                                                 running_jobs: dict[str, tuple[Job, int]]) -> None:
    for job, (_, port) in running_jobs.items():
        def lags(port: int = port, job: str = job) -> list[float]:
            return [v for n, lab, v in _samples(http_get(port, "/metrics")[1])
                    if n == "mmads_stream_consumer_lag" and lab["job"] == job]

        # one sample per owned partition, all 0 after the next sampling (every stats_interval_s)
        _wait(lambda lags=lags: len(lags()) == cfg.kafka.partitions and not any(lags()), 15, f"{job} lag 0")


def test_tansu_end_offsets_under_read_and_the_gauge_does_not_rely_on_them(cfg: MmadsConfig) -> None:
    """What the lag gauge has to work with on Tansu: the end offset is the last batch's start + 1."""
    from kafka import TopicPartition

    topic = f"{cfg.kafka.topics.items}-endoffsets"
    stack.ensure_topics(cfg.with_overrides(kafka={"topics": {"items": topic}, "partitions": 1}))
    producer = make_producer(cfg, linger_ms=50)
    for _ in range(500):
        producer.send(topic, key=b"k", value=b"x" * 50, partition=0)
    producer.flush()
    producer.close()
    consumer = make_consumer(cfg, group=None)
    try:
        end = consumer.end_offsets([TopicPartition(topic, 0)])[TopicPartition(topic, 0)]
    finally:
        consumer.close()
    # 500 messages are there (offsets 0..499); a correct broker answers 500. If this starts failing,
    # Tansu was fixed: update docs/operations.md ("Consumer lag on Tansu").
    assert 1 <= end < 500


def test_alerts_and_dashboard_name_only_exported_metrics(cfg: MmadsConfig, running_jobs: dict[str, tuple[Job, int]],
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    exported: set[str] = set()
    for _, port in running_jobs.values():
        exported |= exported_names(http_get(port, "/metrics")[1])
    serving_cfg = cfg.with_overrides(milvus={"collection": f"{cfg.milvus.collection}_world"})
    world = build_world(serving_cfg, tmp_path_factory.mktemp("run"), n_items=30, n_users=4, seed=1, apply=False)
    with TestClient(create_app(world.run_dir, serving_cfg)) as client:
        cands = world.items["item_id"].tolist()[:5]
        assert client.post("/rank", json={"user_id": 1, "candidate_item_ids": cands}).status_code == 200
        assert client.post("/recommend", json={"user_id": 1, "k": 3}).status_code == 200
        assert client.post("/rank", json={"user_id": 1, "candidate_item_ids": []}).status_code == 422
        exported |= exported_names(client.get("/metrics").text)
    assert "mmads_serving_request_seconds_bucket" in exported and "mmads_stream_consumer_lag" in exported
    assert unknown_names(alert_expressions(), exported) == {}
    assert unknown_names(dashboard_expressions(), exported) == {}


def test_job_logs_are_json_lines_without_library_chatter(running_jobs: dict[str, tuple[Job, int]]) -> None:
    for name, (job, _) in running_jobs.items():
        lines = [line for line in job.log.read_text().splitlines() if line.strip()]
        docs = []
        for line in lines:
            try:
                docs.append(json.loads(line))
            except ValueError:
                pytest.fail(f"{name}: not a JSON line: {line[:200]}")
        assert docs, name
        for doc in docs:
            assert LOG_KEYS <= set(doc), doc
            assert doc["job"] == name and doc["pid"] == job.proc.pid
            if doc["level"] in ("DEBUG", "INFO"):
                assert not doc["logger"].startswith(("kafka", "faiss", "feast", "py.warnings")), doc
        assert any(d["logger"] == "streaming.loop" and d["level"] == "INFO" for d in docs), name
        starts = [d for d in docs if "metrics_port" in d]
        assert starts and starts[0]["metrics_port"] == running_jobs[name][1]
    dead = [d for d in (json.loads(x) for x in running_jobs["items"][0].log.read_text().splitlines() if x.strip())
            if d["message"].startswith("dead-letter")]
    assert len(dead) == 2 and {d["level"] for d in dead} == {"WARNING"}
    for job, _ in running_jobs.values():
        assert job.stop() == 0
