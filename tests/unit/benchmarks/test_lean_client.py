"""The benchmarks' load-generator connection against a real local HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.bench_serving import LeanClient, closed_loop


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the answer says close
    connections: set[int] = set()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["content-length"]))
        _Handler.connections.add(self.client_address[1])
        status = 200 if body == b'{"ok": true}' else 422
        close = self.path == "/close"
        self.send_response(status)
        self.send_header("content-length", "2")
        if close:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(b"{}")
        if close:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.connections = set()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_keeps_one_connection_and_reports_statuses(server: str):
    c = LeanClient(f"{server}/rank")
    assert [c.post(b'{"ok": true}') for _ in range(5)] == [200] * 5
    assert c.post(b"{}") == 422
    c.close()
    assert len(_Handler.connections) == 1  # every request went over one keep-alive connection


def test_reopens_a_connection_the_server_closed(server: str):
    c = LeanClient(f"{server}/close")
    assert [c.post(b'{"ok": true}') for _ in range(3)] == [200] * 3
    c.close()
    assert len(_Handler.connections) == 3


def test_a_dead_server_is_status_zero_not_an_exception():
    assert LeanClient("http://127.0.0.1:9/rank").post(b"{}") == 0


def test_closed_loop_counts_successes_and_failures(server: str):
    ok = closed_loop(f"{server}/rank", [b'{"ok": true}'], 2, count=20, warmup=1)
    assert len(ok.latencies) == 40 and ok.errors == 0 and ok.rps > 0
    bad = closed_loop(f"{server}/rank", [b"{}"], 1, count=5, warmup=0)
    assert bad.latencies == [] and bad.errors == 5
    with pytest.raises(ValueError, match="count or a duration"):
        closed_loop(f"{server}/rank", [b"{}"], 1)
