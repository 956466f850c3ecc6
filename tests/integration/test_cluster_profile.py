"""The main job in the ``cluster`` profile against client-server parts started apart from it.

The "cluster" here is what this machine can run: a Tansu broker and a Milvus Lite server started
as separate services (as an operator would run Kafka and Milvus), and a ``redis-server`` as the
Feast online store. ``mmads run --profile cluster`` must start none of them, only check them, run
each streaming job as two consumer processes in one group, and pass the same checks as the
embedded run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import stack
from infra.config import MmadsConfig
from infra.processes import free_port, list_records, port_open
from mmads.datagen import generate_dataset
from tests.integration.test_main_job import FAST, _check_report, _run
from tests.support import make_config

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.cluster]

CONSUMERS_PER_JOB = 2


@pytest.fixture
def services(tmp_path: Path) -> Iterator[MmadsConfig]:
    """Tansu and a Milvus Lite server, started by their own state dir (not the job's)."""
    ext = make_config(tmp_path / "services")
    stack.up(ext)
    try:
        yield ext
    finally:
        stack.down(ext)


def test_main_job_in_the_cluster_profile(tmp_path: Path, services: MmadsConfig, redis_conn: str):
    import os

    data = tmp_path / "data"
    generate_dataset(data, seed=4, scale=0.04, image_size=32, progress=False)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMADS_")}
    env.update(FAST)
    env.update({
        "MMADS_PROFILE": "cluster",
        "MMADS_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{services.kafka.port}",
        "MMADS_KAFKA__LEAVE_GROUP_ON_CLOSE": "false",  # the external broker here is Tansu too
        "MMADS_MILVUS__URI": f"http://127.0.0.1:{services.milvus.port}",
        "MMADS_FEAST__ONLINE_STORE": "redis",
        "MMADS_FEAST__REDIS_CONNECTION_STRING": redis_conn,
        "MMADS_STREAMING__PROCESSES": str(CONSUMERS_PER_JOB),
        "MMADS_SERVING__PORT": str(free_port()),
        "MMADS_STREAMING__METRICS_PORT": "0",
        "MMADS_STREAMING__METRICS_HOST": "127.0.0.1",  # the cluster profile would bind 0.0.0.0
    })
    res = _run(tmp_path, data, out, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = _check_report(out, data)
    assert report["stack"] == {
        "profile": "cluster", "kafka": f"127.0.0.1:{services.kafka.port}",
        "milvus": f"http://127.0.0.1:{services.milvus.port}", "online_store": "redis",
        "offline_store": services.feast.offline_store, "consumers_per_job": CONSUMERS_PER_JOB,
        "partitions": services.kafka.partitions,
    }

    # the job started no broker or Milvus of its own, and left the external ones running
    assert not list_records(out / "state")
    assert port_open("127.0.0.1", services.kafka.port) and port_open("127.0.0.1", services.milvus.port)

    # two consumers per job, each with its share of the partitions
    stats = [json.loads(p.read_text()) for p in (out / "state" / "streaming" / "stats").glob("*.json")]
    per_job = Counter(str(s["job"]) for s in stats)
    assert per_job == {job: CONSUMERS_PER_JOB for job in ("items", "behaviors", "impressions")}, per_job
    for s in stats:
        assert s["processed"] > 0 and s["committed"], s  # both consumers of a group got partitions and work
    for job in ("behaviors", "impressions"):  # keyed by user: every partition has data
        committed = [p for s in stats if s["job"] == job for p in s["committed"]]
        assert len(set(committed)) == services.kafka.partitions, (job, committed)
