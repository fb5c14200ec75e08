"""Structured JSON logs, request ids and Prometheus metrics.

One raw ASGI middleware stamps every request with an id (taken from a sane `X-Request-ID` or
made new), times it per route template, and returns the id in the response. Under several server
processes the metrics use prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

REQUESTS = Counter("stimulus_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "stimulus_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Metric children kept per process: the routes times their methods and statuses, well under this;
# a client sending made-up methods cannot grow the map past it.
KEPT_SERIES = 1024
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncio", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def metrics_payload() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def _valid_request_id(raw: bytes) -> bool:
    return 0 < len(raw) <= 64 and all(c.isalnum() or c in "-_." for c in raw.decode("latin-1"))


class RequestContextMiddleware:
    """Request id, access metrics, and the id echoed in `X-Request-ID`.

    Every request passes here, so it keeps to the least: the route's metric children are looked up
    once per method, route and status and kept (prometheus_client's `labels()` takes a lock and
    builds its key on every call), and a new request id is 64 bits from the `random` module's
    generator rather than a system call: Python reseeds that one (and only that one) in every
    forked process, so server processes forked from one parent still draw different ids.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._latency: dict[tuple[str, str], Any] = {}
        self._requests: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _valid_request_id(value):
                request_id = value.decode()
                break
        if not request_id:
            request_id = f"{random.getrandbits(64):016x}"
        scope.setdefault("state", {})["request_id"] = request_id  # type: ignore[typeddict-unknown-key]
        started = time.perf_counter()
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]  # type: ignore[typeddict-unknown-key]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._observe(str(scope.get("method", "")), scope.get("path_template") or "unmatched", status,
                          time.perf_counter() - started)

    def _observe(self, method: str, route: str, status: int, seconds: float) -> None:
        latency = self._latency.get((method, route))
        if latency is None:
            if len(self._latency) >= KEPT_SERIES:
                self._latency.clear()
            latency = self._latency[(method, route)] = LATENCY.labels(method, route)
        latency.observe(seconds)
        requests = self._requests.get((method, route, status))
        if requests is None:
            if len(self._requests) >= KEPT_SERIES:
                self._requests.clear()
            requests = self._requests[(method, route, status)] = REQUESTS.labels(method, route, str(status))
        requests.inc()
