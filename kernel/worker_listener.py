"""Every worker's own small HTTP listener: `/health`, `/ready` and `/metrics`.

Workers run as replicas on hosts of their own, so an orchestrator needs to ask each one whether
it lives and whether it can work, and Prometheus scrapes each one: metrics written to a shared
directory on one host vanish when the workers are elsewhere. The listener serves this process's
own registry. It listens on `STIMULUS_METRICS_HOST:STIMULUS_WORKER_HTTP_PORT`; like the API's
metrics port, 0 (the default) means no listener, and the port is never the public API's.

* `/health`: 200 while the process runs (an orchestrator restarts a worker that stops answering);
* `/ready`: 200 when the database answers within two seconds, 503 otherwise;
* `/metrics`: this process's metrics, in Prometheus' text format.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import asyncpg
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST, ThreadingWSGIServer

from kernel.db import connect_options

log = logging.getLogger("stimulus.worker_listener")

READY_TIMEOUT_S = 2.0
ReadyCheck = Callable[[], bool]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would drown the log."""


def database_answers(dsn: str, pooler: str) -> ReadyCheck:
    """Ready: a fresh connection to the database answers `SELECT 1` in time."""
    async def ask() -> None:
        conn = await asyncpg.connect(dsn, timeout=READY_TIMEOUT_S, **connect_options(pooler))
        try:
            await conn.fetchval("SELECT 1", timeout=READY_TIMEOUT_S)
        finally:
            await conn.close()

    def check() -> bool:
        try:
            asyncio.run(asyncio.wait_for(ask(), READY_TIMEOUT_S * 2))
        except Exception as exc:  # any failure is "not ready", said in the log
            log.warning("not ready: the database does not answer: %s", exc)
            return False
        return True
    return check


def _app(role: str, ready: ReadyCheck) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == "/metrics":
            body, content_type, status = generate_latest(REGISTRY), CONTENT_TYPE_LATEST, "200 OK"
        elif path == "/health":
            body, content_type, status = f"ok: worker {role}\n".encode(), "text/plain", "200 OK"
        elif path == "/ready":
            fine = ready()
            body = f"{'ready' if fine else 'not ready'}: worker {role}\n".encode()
            content_type, status = "text/plain", "200 OK" if fine else "503 Service Unavailable"
        else:
            body, content_type, status = b"not found: /health, /ready, /metrics\n", "text/plain", "404 Not Found"
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]
    return app


class WorkerListener:
    def __init__(self, role: str, host: str, port: int, ready: ReadyCheck) -> None:
        self.server = make_server(host, port, _app(role, ready), ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name="worker-http", daemon=True)

    def start(self) -> WorkerListener:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start(role: str, host: str, port: int, ready: ReadyCheck) -> WorkerListener | None:
    """Serve the probes and metrics in a background thread for the life of the process (port 0: none)."""
    if port == 0:
        return None
    listener = WorkerListener(role, host, port, ready).start()
    log.info("worker %s: /health, /ready and /metrics on http://%s:%d", role, host, listener.port)
    return listener
