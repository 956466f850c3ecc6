"""Prometheus metrics, liveness and readiness of the streaming jobs (one registry and one port per process).

A job process serves, on ``streaming.metrics_port`` (+ its process index; 0 = a free port the job
records in its stats file) at ``streaming.metrics_host`` (default 127.0.0.1; 0.0.0.0 in the cluster
profile):

* ``GET /metrics`` - the Prometheus text format:

  * ``mmads_stream_events_total{job, topic, outcome}`` - messages ``written`` to the sinks,
    ``dead_lettered``, and ``retried`` (once per retry after a sink failure: the messages of a batch
    processed again, or, for a failed durable flush, the messages consumed since the last commit);
  * ``mmads_stream_dead_letters_total{job, reason}`` - dead letters by reason class
    (:func:`streaming.dlq.reason_class`: ``bad_json``, ``missing_field``, ``bad_time``, ...);
  * ``mmads_stream_consumer_lag{job, topic, partition}`` - messages behind, per owned partition:
    ``max(broker end offset, next offset consumed) - committed`` (the consumer's position until this
    process has committed), sampled every
    ``streaming.stats_interval_s`` (on Tansu the end offset is low: see docs/operations.md);
  * ``mmads_stream_freshness_seconds{job}`` - histogram, Kafka message time -> written to every sink;
  * ``mmads_stream_batch_seconds{job, phase}`` - histogram of the phases of a micro-batch:
    ``decode``, ``encode``, ``milvus``, ``feast``, and ``commit`` (the durable flush + offset commit);
  * ``mmads_stream_last_commit_timestamp_seconds{job}`` - Unix time of the last offset commit;
  * ``mmads_stream_assigned_partitions{job}`` - partitions this process owns.

* ``GET /healthz`` - 200 while every job loop of the process has turned within
  :data:`LIVENESS_TIMEOUT_S` (a loop waiting out a sink failure counts as turning), else 503.
* ``GET /readyz`` - 200 once every job of the process owns at least one partition, else 503. A
  replica beyond the topic's partition count is a standby and stays unready.

Nothing listens or connects at import time; :func:`start_job` starts the server with the first job
of a process and :meth:`JobMetrics.close` of the last one stops it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from infra.errors import StackError
from streaming.dlq import REASON_CLASSES

logger = logging.getLogger(__name__)

PHASES = ("decode", "encode", "milvus", "feast", "commit")
OUTCOMES = ("written", "dead_lettered", "retried")
LIVENESS_TIMEOUT_S = 60.0
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_TIMEOUT_MS = 1000


class StreamMetrics:
    """The metric families of the streaming jobs, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter("mmads_stream_events", "Messages by outcome (written, dead_lettered, retried).",
                              ["job", "topic", "outcome"], registry=r)
        self.dead_letters = Counter("mmads_stream_dead_letters", "Dead letters by reason class.",
                                    ["job", "reason"], registry=r)
        self.freshness = Histogram("mmads_stream_freshness_seconds", "Kafka message time -> written to every sink.",
                                   ["job"], buckets=FRESHNESS_BUCKETS, registry=r)
        self.batch = Histogram("mmads_stream_batch_seconds", "Time per micro-batch phase.", ["job", "phase"],
                               buckets=BATCH_BUCKETS, registry=r)
        self.last_commit = Gauge("mmads_stream_last_commit_timestamp_seconds", "Unix time of the last offset commit.",
                                 ["job"], registry=r)
        self.assigned = Gauge("mmads_stream_assigned_partitions", "Partitions owned by this process.", ["job"],
                              registry=r)
        self.lag: dict[tuple[str, str, int], float] = {}
        self._lag_lock = threading.Lock()
        r.register(_LagCollector(self))

    def set_lag(self, job: str, values: Mapping[tuple[str, int], float]) -> None:
        """Replace ``job``'s lag samples (partitions not in ``values`` disappear from the export)."""
        with self._lag_lock:
            self.lag = {k: v for k, v in self.lag.items() if k[0] != job}
            self.lag.update({(job, t, p): v for (t, p), v in values.items()})

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LagCollector(Collector):
    """Exports the lag samples; a collector because revoked partitions must vanish from the export.

    (Removing a labelled Gauge's series is not supported once Feast has switched prometheus_client
    into multi-process mode, see serving/metrics.py.)
    """

    def __init__(self, metrics: StreamMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("mmads_stream_consumer_lag", "Messages behind per owned partition: "
                                   "max(end offset, next consumed) - committed.",
                                   labels=["job", "topic", "partition"])
        with self.metrics._lag_lock:
            samples = sorted(self.metrics.lag.items())
        for (job, topic, part), value in samples:
            family.add_metric([job, topic, str(part)], value)
        yield family


_current = threading.local()


@contextmanager
def timed(phase: str, n: int | None = None) -> Iterator[None]:
    """Time a phase of the batch being handled in this thread (``mmads_stream_batch_seconds``).

    Outside a job loop (``mmads stream reindex``, unit tests) nothing is recorded, nor is a phase
    over ``n == 0`` messages (the loop's idle ticks would crowd the histogram with empty batches).
    """
    job: JobMetrics | None = getattr(_current, "job", None)
    if job is None or n == 0:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        job.observe_phase(phase, time.perf_counter() - started)


def observe_freshness(job: str, seconds: np.ndarray) -> None:
    """Record freshness samples (message time -> written) of ``job`` in this process's histogram."""
    observe_many(_hub().metrics.freshness.labels(job=job), np.maximum(np.asarray(seconds, dtype=np.float64), 0.0))


def observe_many(hist: Any, values: np.ndarray) -> None:
    """``hist.observe(v)`` for every ``v`` in ``values``, as one increment per bucket.

    A batch of 2,000 freshness samples took 2,000 ``observe`` calls, each a lock and a bucket scan
    (4 µs an event, a tenth of the behavior job's per-event budget). Counting them per bucket
    with ``searchsorted`` stores the same bucket counts and sum (a unit test compares them with
    ``observe`` one by one). A histogram child without the bucket attributes of prometheus-client
    0.20-0.24 falls back to ``observe``.
    """
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v in values:
            hist.observe(float(v))
        return
    if len(values) == 0:
        return
    hist._raise_if_not_observable()  # noqa: SLF001 - what observe() checks first
    index = np.searchsorted(np.asarray(bounds, dtype=np.float64), values, side="left")
    counts = np.bincount(index, minlength=len(bounds))[:len(bounds)]  # NaN: in no bucket, as observe() has it
    total.inc(float(values.sum()))
    for i in np.flatnonzero(counts):
        buckets[int(i)].inc(int(counts[i]))


class JobMetrics:
    """One job loop's view of the process metrics, and its liveness and readiness.

    Args:
        hub: the process's metrics and server.
        job: the job name.
        topic: the input topic.
    """

    def __init__(self, hub: _Hub, job: str, topic: str) -> None:
        self.hub = hub
        self.job = job
        self.topic = topic
        m = hub.metrics
        self._events = {o: m.events.labels(job=job, topic=topic, outcome=o) for o in OUTCOMES}
        self._reasons = {r: m.dead_letters.labels(job=job, reason=r) for r in REASON_CLASSES}
        self._phases = {p: m.batch.labels(job=job, phase=p) for p in PHASES}
        m.freshness.labels(job=job)
        m.assigned.labels(job=job).set(0)
        self.assigned = 0
        self.beat = time.monotonic()
        self._counted = {"written": 0, "dead_lettered": 0}

    def activate(self) -> None:
        """From now on :func:`timed` in the calling thread records to this job (until :meth:`close`)."""
        _current.job = self

    def heartbeat(self) -> None:
        """The loop turned (liveness)."""
        self.beat = time.monotonic()

    def observe_phase(self, phase: str, seconds: float) -> None:
        """Record one phase duration."""
        hist = self._phases.get(phase) or self.hub.metrics.batch.labels(job=self.job, phase=phase)
        hist.observe(seconds)

    def sync_counts(self, written: int, dead_lettered: int) -> None:
        """Bring the outcome counters up to the job's running totals (the :class:`JobStats` fields)."""
        for outcome, total in (("written", written), ("dead_lettered", dead_lettered)):
            if total > self._counted[outcome]:
                self._events[outcome].inc(total - self._counted[outcome])
                self._counted[outcome] = total

    def retried(self, messages: int) -> None:
        """``messages`` are processed again after a sink failure."""
        if messages > 0:
            self._events["retried"].inc(messages)

    def dead_letter(self, reason_class: str) -> None:
        """Count one dead letter of a reason class."""
        counter = self._reasons.get(reason_class) or self.hub.metrics.dead_letters.labels(job=self.job,
                                                                                         reason=reason_class)
        counter.inc()

    def committed(self) -> None:
        """An offset commit succeeded now."""
        self.hub.metrics.last_commit.labels(job=self.job).set(time.time())

    def set_assigned(self, n: int) -> None:
        """Record that the process owns ``n`` partitions of the topic now (readiness)."""
        self.assigned = n
        self.hub.metrics.assigned.labels(job=self.job).set(n)

    def sample_lag(self, consumer: Any, committed: Mapping[tuple[str, int], int],
                   consumed: Mapping[tuple[str, int], int]) -> None:
        """Ask the broker for the end offsets of the owned partitions and export the lag.

        Args:
            consumer: the job's ``KafkaConsumer`` (call from the loop's thread only: it is not thread-safe).
            committed: ``(topic, partition) -> offset`` this process committed.
            consumed: ``(topic, partition) -> next offset`` this process has consumed.
        """
        from kafka.errors import KafkaError

        try:
            tps = list(consumer.assignment())
            ends = consumer.end_offsets(tps, timeout_ms=LAG_TIMEOUT_MS) if tps else {}
            lag: dict[tuple[str, int], float] = {}
            for tp in tps:
                key = (tp.topic, tp.partition)
                done = committed.get(key)
                if done is None:
                    # Nothing committed by this process yet: where it is reading (the group's offset
                    # at assignment, or the reset). Not consumer.committed(): a coordinator request
                    # on every sample slowed the loop enough under load to stall rebalances on Tansu.
                    done = consumer.position(tp, timeout_ms=LAG_TIMEOUT_MS)
                    if done is None:
                        continue
                # Tansu reports the last batch's start + 1 as the end: what was consumed is a floor
                end = max(int(ends.get(tp) or 0), consumed.get(key, 0))
                lag[key] = float(max(end - int(done), 0))
        except KafkaError as exc:
            logger.debug("lag not sampled: %s", exc)
            return
        self.hub.metrics.set_lag(self.job, lag)

    def close(self) -> None:
        """The job loop ended: drop its lag samples, and stop the server after the process's last job."""
        if getattr(_current, "job", None) is self:
            _current.job = None
        self.hub.metrics.set_lag(self.job, {})
        self.set_assigned(0)
        self.hub.leave(self)


class _Hub:
    """The process's one registry, its job loops and its HTTP server."""

    def __init__(self) -> None:
        self.metrics = StreamMetrics()
        self.jobs: list[JobMetrics] = []
        self.server: MetricsServer | None = None
        self.lock = threading.Lock()

    def health(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        with self.lock:
            ages = {j.job: round(now - j.beat, 1) for j in self.jobs}
        alive = bool(ages) and all(a <= LIVENESS_TIMEOUT_S for a in ages.values())
        return alive, {"status": "ok" if alive else "stalled", "loop_age_s": ages}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        with self.lock:
            owned = {j.job: j.assigned for j in self.jobs}
        ready = bool(owned) and all(n > 0 for n in owned.values())
        return ready, {"status": "ready" if ready else "waiting for partitions", "assigned_partitions": owned}

    def leave(self, job: JobMetrics) -> None:
        with self.lock:
            if job in self.jobs:
                self.jobs.remove(job)
            server = self.server if not self.jobs else None
            if server is not None:
                self.server = None
        if server is not None:
            server.close()


_HUB: _Hub | None = None
_HUB_LOCK = threading.Lock()


def _hub() -> _Hub:
    global _HUB
    with _HUB_LOCK:
        if _HUB is None:
            _HUB = _Hub()
        return _HUB


def process_metrics() -> StreamMetrics:
    """The streaming metrics of the calling process (created on first use)."""
    return _hub().metrics


def start_job(job: str, topic: str, bind: tuple[str, int] | None) -> tuple[JobMetrics, int | None]:
    """Register a job loop; the first one of the process starts the HTTP server on ``bind``.

    Args:
        job: the job name.
        topic: its input topic.
        bind: ``(host, port)`` (port 0: a free one), or None for no server.

    Returns:
        The job's metrics handle and the port the process serves on (None: no server).

    Raises:
        StackError: the port cannot be bound (in use, or not allowed).
    """
    hub = _hub()
    handle = JobMetrics(hub, job, topic)
    with hub.lock:
        hub.jobs.append(handle)
        if hub.server is None and bind is not None:
            try:
                hub.server = MetricsServer(hub, *bind)
            except OSError as exc:
                hub.jobs.remove(handle)
                raise StackError(f"{job} job: cannot serve metrics on {bind[0]}:{bind[1]} ({exc.strerror or exc}); "
                                 "set streaming.metrics_port (0 = any free port, null = no endpoint)") from None
            logger.info("metrics, health and readiness on http://%s:%d/metrics", bind[0], hub.server.port,
                        extra={"metrics_port": hub.server.port})
        port = hub.server.port if hub.server is not None else None
    return handle, port


class _Handler(BaseHTTPRequestHandler):
    hub: _Hub

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, ctype = self.hub.metrics.render()
            self._send(200, body, ctype)
        elif path in ("/healthz", "/readyz"):
            ok, doc = self.hub.health() if path == "/healthz" else self.hub.readiness()
            self._send(200 if ok else 503, json.dumps(doc).encode(), "application/json")
        else:
            self._send(404, b'{"detail": "not found: /metrics, /healthz, /readyz"}', "application/json")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        """Scrapes and probes are not logged (one every few seconds)."""


class MetricsServer:
    """A tiny threaded HTTP server for ``/metrics``, ``/healthz`` and ``/readyz`` (a daemon thread).

    Args:
        hub: what it serves.
        host: the bind address.
        port: the port (0: a free one; :attr:`port` tells which).

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(self, hub: _Hub, host: str, port: int) -> None:
        handler = type("MetricsHandler", (_Handler,), {"hub": hub})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mmads-metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
