"""Prometheus metrics of the ranking service (one registry per app, so apps never share counters).

Exposed at ``GET /metrics`` in the Prometheus text format:

* ``mmads_serving_requests_total{endpoint, status}`` - requests answered;
* ``mmads_serving_request_seconds{endpoint}`` - latency histogram;
* ``mmads_serving_errors_total{endpoint, kind}`` - 4xx/5xx answers by error class;
* ``mmads_serving_feature_fetch_seconds`` - the Feast online read (user + candidate rows + SimTier);
* ``mmads_serving_ann_seconds`` - the Milvus search of ``/recommend`` and ``/similar``;
* ``mmads_serving_model_seconds`` - building inputs and scoring;
* ``mmads_serving_candidates`` - candidates scored per request;
* ``mmads_serving_reloads_total{result}`` and ``mmads_serving_model_info{model_version, run_dir}``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
KNOWN_ENDPOINTS = ("/rank", "/recommend", "/similar", "/healthz", "/metrics", "/admin/reload")


class ServiceMetrics:
    """The service's counters and histograms in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("mmads_serving_requests", "Requests answered.", ["endpoint", "status"], registry=r)
        self.latency = Histogram("mmads_serving_request_seconds", "Request latency.", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("mmads_serving_errors", "Error answers by kind.", ["endpoint", "kind"], registry=r)
        self.feature_fetch = Histogram("mmads_serving_feature_fetch_seconds", "Feast online read + SimTier.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.ann = Histogram("mmads_serving_ann_seconds", "Milvus ANN search.", buckets=LATENCY_BUCKETS, registry=r)
        self.model = Histogram("mmads_serving_model_seconds", "Input building + scoring.",
                               buckets=LATENCY_BUCKETS, registry=r)
        self.candidates = Histogram("mmads_serving_candidates", "Candidates scored per request.",
                                    buckets=(1, 10, 50, 100, 200, 500, 1000, 2000), registry=r)
        self.reloads = Counter("mmads_serving_reloads", "Model reloads by result.", ["result"], registry=r)
        self._model: tuple[str, str] | None = None
        r.register(_ModelInfoCollector(self))

    def set_model(self, model_version: str, run_dir: str) -> None:
        """Record the model now served (only the current one is exported)."""
        self._model = (model_version, run_dir)

    @property
    def served_model(self) -> tuple[str, str] | None:
        """``(model_version, run_dir)`` of the model being served, if any."""
        return self._model

    def error(self, endpoint: str, kind: str) -> None:
        """Count one error answer."""
        self.errors.labels(endpoint=endpoint, kind=kind).inc()

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _ModelInfoCollector(Collector):
    """Exports ``mmads_serving_model_info{model_version, run_dir} 1`` for the current model only.

    A collector rather than a labelled Gauge: removing a Gauge's old label set is not supported when
    Feast switches prometheus_client into multi-process mode (it sets PROMETHEUS_MULTIPROC_DIR).
    """

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("mmads_serving_model_info", "The model being served (value 1).",
                                   labels=["model_version", "run_dir"])
        served = self.metrics.served_model
        if served is not None:
            family.add_metric(list(served), 1.0)
        yield family


def endpoint_label(path: str) -> str:
    """A bounded label for a request path (``/similar/123`` -> ``/similar``; unknown -> ``other``)."""
    for known in KNOWN_ENDPOINTS:
        if path == known or path.startswith(known + "/"):
            return known
    return "other"


_WORKER_HEADER = (b"x-mmads-worker", str(os.getpid()).encode())


class MetricsMiddleware:
    """Pure ASGI middleware counting every HTTP request and timing it (cheaper than BaseHTTPMiddleware).

    Every response carries ``x-mmads-worker: <pid>`` (which worker process answered).

    Args:
        app: the wrapped ASGI app.
        metrics: where to count.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, then record its status and latency."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []), _WORKER_HEADER]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            label = endpoint_label(str(scope.get("path", "")))
            self.metrics.requests.labels(endpoint=label, status=str(status)).inc()
            self.metrics.latency.labels(endpoint=label).observe(time.perf_counter() - start)
