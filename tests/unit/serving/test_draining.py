"""The draining protocol answers a request sent on a connection accepted before shutdown began."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from serving.draining import DRAIN_S, http_protocol

pytestmark = pytest.mark.skipif(http_protocol() == "auto", reason="httptools is not installed")


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def _server() -> Iterator[tuple[uvicorn.Server, int, threading.Thread]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(_app, http=http_protocol(), lifespan="off", log_level="warning",
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield server, port, thread
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def _connected(server: uvicorn.Server, port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    deadline = time.monotonic() + 5
    while not server.server_state.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.server_state.connections, "the server never accepted the connection"
    return client


def _read_all(client: socket.socket) -> bytes:
    chunks = []
    while chunk := client.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_request_sent_after_shutdown_began_is_answered_and_closes():
    with _server() as (server, port, thread):
        client = _connected(server, port)
        server.should_exit = True
        time.sleep(0.3)  # the main loop has seen should_exit and called shutdown() on the connection
        assert thread.is_alive()  # still draining
        client.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        response = _read_all(client).decode()
        client.close()
    assert response.startswith("HTTP/1.1 200"), response
    assert "connection: close" in response.lower() and response.endswith("ok")


def test_idle_connection_is_closed_after_the_grace():
    with _server() as (server, port, thread):
        client = _connected(server, port)
        started = time.monotonic()
        server.should_exit = True
        assert _read_all(client) == b""  # closed unanswered: it never sent anything
        waited = time.monotonic() - started
        thread.join(10)
        assert not thread.is_alive()
        client.close()
    assert DRAIN_S * 0.9 <= waited < DRAIN_S + 5
