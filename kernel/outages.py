"""What the API does when PostgreSQL or Redis is down or hung: it answers `503
dependency_unavailable` with `Retry-After` within a second or two, and recovers by itself.

Redis was called with a 10 s socket timeout and redis-py's default retries, so a stopped Redis
process (SIGSTOP: the kernel still accepts the connection, nothing answers) held each request
10 s and then answered 500; a hung PostgreSQL held it for the 30 s statement timeout. Here every
Redis call the API makes (rate limits, idempotency keys, merchant nonces) has a short timeout and no
retry, database work in a request (waiting for a connection and using it) has a deadline,
`STIMULUS_DB_REQUEST_TIMEOUT_S` (kernel/db.py `BoundedPool`), and the errors of an unreachable
server are one problem, not a 500. Nothing needs resetting
when the server returns: redis-py and asyncpg open fresh connections on the next call (the
clients themselves are built in kernel/redis_clients.py).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import asyncpg
import redis.exceptions
from litestar import Request, Response

from kernel.problems import problem, request_id_of, unhandled_handler

log = logging.getLogger("stimulus.outages")

# A Redis command of ours takes well under a millisecond; half a second means the server is gone.
REDIS_TIMEOUT_S = 0.5
RETRY_AFTER_S = 2

# What an unreachable, restarting or hung server raises at the caller.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # refused, reset, or loading the data set (BusyLoadingError)
    redis.exceptions.TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08: connection failure
    asyncpg.exceptions.ConnectionDoesNotExistError,  # the connection closed mid-query
    asyncpg.exceptions.CannotConnectNowError,  # starting up or shutting down
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.InternalClientError,  # a pooled connection left mid-operation when its server went away
    OSError,  # opening a connection: refused, reset, timed out, no socket file (see is_outage)
)


def is_outage(exc: BaseException) -> bool:
    """An OSError is an outage only when it is about reaching a server, not, say, a file."""
    if not isinstance(exc, OSError):
        return True
    return isinstance(exc, ConnectionError | TimeoutError | socket.gaierror) or (
        # a unix socket whose server is gone (PostgreSQL restarting) is a missing file
        isinstance(exc, FileNotFoundError) and exc.filename is None)


def outage_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if not is_outage(exc):
        return unhandled_handler(request, exc)
    request_id = request_id_of(request)
    log.warning("dependency unavailable: %r", exc, extra={"request_id": request_id, "path": request.url.path})
    return problem(503, "dependency_unavailable", "A service we depend on is unavailable",
                   "PostgreSQL or Redis did not answer in time; retry after Retry-After (a retry of "
                   "an unsafe call with the same Idempotency-Key, or a registration, takes effect once)",
                   request_id, headers={"Retry-After": str(RETRY_AFTER_S)}, retry_after_s=RETRY_AFTER_S)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    error: outage_handler for error in OUTAGE_ERRORS if issubclass(error, Exception)}
