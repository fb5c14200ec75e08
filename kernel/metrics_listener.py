"""The Prometheus endpoint on a port of its own, apart from the public API.

`/metrics` says how busy the service is, which routes fail and how the banks behave: nothing for
the internet. It is not served on the API's port at all; each node serves it on
`STIMULUS_METRICS_HOST:STIMULUS_METRICS_PORT`, which a deployment keeps off the public load
balancer and which Prometheus scrapes per pod without holding an operator token.

The API runs as several server processes, and each starts this listener: the first to bind the
port serves the multiprocess view of all of them (and of the workers sharing the metrics
directory); the others try again every few seconds, so the port comes back when its holder dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.exposition import ThreadingWSGIServer

from kernel.observability import metrics_payload

log = logging.getLogger("stimulus.metrics")

RETRY_BIND_S = 5.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the log."""


def _metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") not in ("/metrics", "/"):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: metrics are at /metrics\n"]
    payload, content_type = metrics_payload()
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(payload)))])
    return [payload]


class _Listener:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.server: ThreadingWSGIServer | None = None
        self.thread: threading.Thread | None = None

    def try_bind(self) -> bool:
        try:
            server = make_server(self.host, self.port, _metrics_app, ThreadingWSGIServer,
                                 handler_class=_QuietHandler)
        except OSError:
            return False  # another process of this node holds it
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        self.thread.start()
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return True

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@contextlib.asynccontextmanager
async def metrics_listener(host: str, port: int) -> AsyncIterator[None]:
    """Serve `/metrics` on host:port while the block runs (port 0: not at all)."""
    if port == 0:
        yield
        return
    listener = _Listener(host, port)

    async def keep_trying() -> None:
        while True:
            if await asyncio.to_thread(listener.try_bind):
                return
            await asyncio.sleep(RETRY_BIND_S)

    task = asyncio.create_task(keep_trying())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(listener.close)
