"""The streaming jobs' metrics endpoint, dead-letter reason classes and the monitoring files' PromQL.

The HTTP server here is the real one on a free loopback port; the loop is exercised against the
real broker in tests/integration/test_monitoring.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from infra.config import load_config
from infra.errors import StackError
from streaming.dlq import REASON_CLASSES, reason_class
from streaming.metrics import LIVENESS_TIMEOUT_S, process_metrics, start_job, timed
from tests.promql import alert_expressions, dashboard_expressions, exported_names, metric_names, unknown_names
from tests.support import http_get


def test_endpoints_follow_the_job_loop() -> None:
    job, port = start_job("unit-items", "items-unit", ("127.0.0.1", 0))
    assert port is not None
    try:
        assert http_get(port, "/readyz")[0] == 503  # no partitions yet
        assert http_get(port, "/healthz")[0] == 200
        job.set_assigned(2)
        status, body = http_get(port, "/readyz")
        assert status == 200 and json.loads(body)["assigned_partitions"]["unit-items"] == 2
        job.beat -= LIVENESS_TIMEOUT_S + 1  # a loop that has not turned for too long
        assert http_get(port, "/healthz")[0] == 503
        job.heartbeat()
        job.activate()
        with timed("decode"):
            pass
        with timed("decode", 0):  # an idle tick: not recorded
            pass
        job.sync_counts(written=5, dead_lettered=1)
        job.sync_counts(written=7, dead_lettered=1)  # running totals: only the difference counts
        job.dead_letter("bad_json")
        job.retried(3)
        job.committed()
        process_metrics().set_lag("unit-items", {("items-unit", 0): 4.0})
        status, text = http_get(port, "/metrics")
        assert status == 200
        assert 'mmads_stream_events_total{job="unit-items",outcome="written",topic="items-unit"} 7.0' in text
        assert 'mmads_stream_events_total{job="unit-items",outcome="retried",topic="items-unit"} 3.0' in text
        assert 'mmads_stream_dead_letters_total{job="unit-items",reason="bad_json"} 1.0' in text
        assert 'mmads_stream_dead_letters_total{job="unit-items",reason="missing_field"} 0.0' in text
        assert 'mmads_stream_batch_seconds_count{job="unit-items",phase="decode"} 1.0' in text
        assert 'mmads_stream_consumer_lag{job="unit-items",partition="0",topic="items-unit"} 4.0' in text
        assert http_get(port, "/nope")[0] == 404
    finally:
        job.close()
    # the last job of the process stopped the server and dropped its lag samples
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert 'job="unit-items",partition' not in process_metrics().render()[0].decode()


def test_a_port_in_use_is_a_one_line_error() -> None:
    first, port = start_job("unit-a", "a", ("127.0.0.1", 0))
    try:
        assert port is not None
        # a second process's server on the same port (the hub is per process: make a fresh one)
        from streaming import metrics

        saved = metrics._HUB
        metrics._HUB = None
        try:
            with pytest.raises(StackError, match=rf"cannot serve metrics on 127.0.0.1:{port}"):
                start_job("unit-b", "b", ("127.0.0.1", port))
        finally:
            metrics._HUB = saved
    finally:
        first.close()


def test_freshness_outside_a_job_loop_records_nothing_for_timed_phases() -> None:
    before = process_metrics().render()[0].decode().count('phase="encode"')
    with timed("encode"):  # no job loop in this thread
        pass
    assert process_metrics().render()[0].decode().count('phase="encode"') == before


@pytest.mark.parametrize(("error", "kind"), [
    ("empty message value", "empty"),
    ("bad JSON: EOF while parsing at line 1 column 12", "bad_json"),
    ("value is not a JSON object", "bad_json"),
    ("missing field 'title'; missing field 'category'", "missing_field"),
    ("field 'ts' = '1601-01-01T00:00:00Z': timestamp 1601-01-01T00:00:00+00:00 is outside what nanosecond time "
     "holds (1677-09-21 to 2262-04-11)", "bad_time"),
    ("field 'created_at' = '2024-01-01T00:00:00': Input should have timezone info", "bad_time"),
    ("field 'title' = 'timestamp of the year': Input should be a valid string", "bad_field"),
    ("field 'item_id' = 7.5: invalid id 7.5: an id is an integer or a string, not float", "bad_field"),
    ("unknown item 123456: not indexed after 30s", "unknown_item"),
    ("retry buffer full (10000 events waiting for unknown items)", "retry_buffer_full"),
    ("something new", "other"),
])
def test_reason_classes_are_short_and_bounded(error: str, kind: str) -> None:
    assert reason_class(error) == kind
    assert kind in REASON_CLASSES


def test_metrics_bind_follows_the_profile() -> None:
    cfg = load_config(env={})
    assert cfg.streaming.metrics_bind(cfg.profile) == ("127.0.0.1", 9400)
    assert cfg.streaming.metrics_bind("cluster") == ("0.0.0.0", 9400)
    off = cfg.with_overrides(streaming={"metrics_port": None})
    assert off.streaming.metrics_bind("embedded") is None
    env = load_config(env={"MMADS_STREAMING__METRICS_PORT": "0", "MMADS_STREAMING__METRICS_HOST": "10.0.0.5"})
    assert env.streaming.metrics_bind("cluster") == ("10.0.0.5", 0)


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (job) (rate(mmads_stream_events_total{outcome="dead_lettered"}[10m])) / clamp_min(sum by (job) '
     '(rate(mmads_stream_events_total[10m])), 1e-9) > 0.01', {"mmads_stream_events_total"}),
    ('histogram_quantile(0.99, sum by (job, le) (rate(mmads_stream_freshness_seconds_bucket{job=~"$job"}[5m]))) > 1',
     {"mmads_stream_freshness_seconds_bucket"}),
    ("(time() - max by (job) (mmads_stream_last_commit_timestamp_seconds) > 300) and on (job) "
     "(sum by (job) (mmads_stream_consumer_lag) > 0)",
     {"mmads_stream_last_commit_timestamp_seconds", "mmads_stream_consumer_lag"}),
    ("label_values(mmads_stream_events_total, job)", {"mmads_stream_events_total"}),
    ("up == 0 unless mmad_typo", {"up", "mmad_typo"}),
])
def test_metric_names_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_monitoring_files_parse_and_name_the_required_signals() -> None:
    alerts = alert_expressions()
    panels = dashboard_expressions()
    used = set().union(*(metric_names(e) for e in [*alerts.values(), *panels.values()]))
    for name in ("mmads_stream_consumer_lag", "mmads_stream_events_total", "mmads_stream_freshness_seconds_bucket",
                 "mmads_serving_request_seconds_bucket", "mmads_serving_requests_total"):
        assert any(name in metric_names(e) for e in alerts.values()), name
    assert "mmads_stream_batch_seconds_bucket" in used and "mmads_stream_dead_letters_total" in used
    # the check has teeth: a name missing from an exposition is reported
    exposition = "# TYPE mmads_stream_events counter\nmmads_stream_events_total{job=\"items\"} 1.0\n"
    assert exported_names(exposition) == {"mmads_stream_events_total"}
    assert "MmadsStreamFreshnessP99High" in unknown_names(alerts, exported_names(exposition))


def test_freshness_samples_feed_the_histogram() -> None:
    from streaming.metrics import observe_freshness

    observe_freshness("unit-fresh", np.array([0.004, 0.3, 2.0]))
    text = process_metrics().render()[0].decode()
    assert 'mmads_stream_freshness_seconds_count{job="unit-fresh"} 3.0' in text
    assert 'mmads_stream_freshness_seconds_bucket{job="unit-fresh",le="0.5"} 2.0' in text


def test_observe_many_stores_what_observe_one_by_one_stores() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from streaming.metrics import observe_many

    values = np.array([0.0, 0.005, 0.0050001, 0.1, 0.25, 0.7, 1.0, 2.5, 30.0, 1e9, np.nan])
    expositions = []
    for batched in (False, True):
        registry = CollectorRegistry()
        # one name each: under Feast's PROMETHEUS_MULTIPROC_DIR, same-named values share one mmap file
        name = "t_batched_seconds" if batched else "t_seconds"
        hist = Histogram(name, "t", ["job"], registry=registry).labels(job="j")
        if batched:
            observe_many(hist, values[:4])
            observe_many(hist, values[4:])
            observe_many(hist, values[:0])
        else:
            for v in values:
                hist.observe(float(v))
        lines = generate_latest(registry).decode().splitlines()
        expositions.append("\n".join(ln.replace(name, "t_seconds") for ln in lines if "_created" not in ln))
    assert 't_seconds_count{job="j"} 10.0' in expositions[0]  # the NaN sample is in no bucket
    assert expositions[1] == expositions[0]
