"""An HTTP protocol whose graceful shutdown serves the request a client has already sent.

uvicorn's own shutdown closes at once every connection that has no request in progress. A
connection the worker accepted in its last loop iteration, whose request bytes are already in the
socket buffer but not yet parsed, is then closed unanswered: the client sees "server disconnected
without sending a response". During a rolling worker restart under load (``serve --workers N``,
``POST /admin/reload``) that happens to a request now and then, although another worker was ready
to take it.

:class:`DrainingHttpToolsProtocol` gives such a connection ``DRAIN_S`` to deliver a request. A
request that arrives is served with ``connection: close``; a connection still idle after the grace
is closed as before. A request already in progress finishes, as with uvicorn's protocol. uvicorn's
server waits for every connection to close (up to ``timeout_graceful_shutdown``), so the grace
needs no other hook. :func:`http_protocol` names the class for ``uvicorn.run(http=...)`` (a
string, so spawned workers import it), or ``"auto"`` where httptools is not installed.
"""

from __future__ import annotations

import asyncio
from typing import Any

DRAIN_S = 1.0  # a client sends its request right after connecting; one loop iteration would do

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is installed with uvicorn[standard]
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


def http_protocol() -> str:
    """The ``http`` argument for uvicorn: the draining protocol, or ``"auto"`` without httptools."""
    return "auto" if HttpToolsProtocol is None else f"{__name__}:DrainingHttpToolsProtocol"


if HttpToolsProtocol is not None:

    class DrainingHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """uvicorn's httptools protocol, with a grace for requests already sent at shutdown."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._draining = False
            self._drain_timer: asyncio.TimerHandle | None = None

        def shutdown(self) -> None:
            """Finish the request in progress, or wait ``DRAIN_S`` for one already on its way."""
            self._draining = True
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False  # the response in progress closes the connection
                return
            self._drain_timer = self.loop.call_later(DRAIN_S, self._close_if_idle)

        def on_headers_complete(self) -> None:
            """Start the request; while draining it is the connection's last."""
            super().on_headers_complete()
            if self._draining and self.cycle is not None:
                self.cycle.keep_alive = False

        def connection_lost(self, exc: Exception | None) -> None:
            """Forget the grace timer along with the connection."""
            if self._drain_timer is not None:
                self._drain_timer.cancel()
            super().connection_lost(exc)

        def _close_if_idle(self) -> None:
            self._drain_timer = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()
