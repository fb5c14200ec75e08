"""Every Redis client the product opens, built here from the settings: one server by URL, or the
primary that Redis Sentinel names.

With `REDIS_SENTINELS` a client asks the sentinels where the primary is when it opens a
connection, and asks again when a connection fails or the server it reached answers READONLY (it
was demoted): after a failover the clients find the new primary by themselves, and the code that
uses them holds a plain `redis.asyncio.Redis` either way. Two kinds of client:

* the API's (`request_client`): short timeouts, one attempt per command, a blocking pool, so a
  missing primary is a prompt 503 `dependency_unavailable` (kernel/outages.py), never a hung
  request;
* the workers' (`worker_client`): patient timeouts and redis-py's retries, since a worker waits
  out an outage rather than answering anyone.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from kernel.outages import REDIS_TIMEOUT_S
from kernel.settings import Settings

WORKER_SOCKET_TIMEOUT_S = 10.0
WORKER_CONNECT_TIMEOUT_S = 5.0
WORKER_HEALTH_CHECK_S = 15


class _SentinelBlockingPool(SentinelConnectionPool, redis_asyncio.BlockingConnectionPool):
    """Sentinel's choice of server with the blocking pool's waiting: at peak, more requests than
    connections wait their turn (briefly) instead of failing with "Too many connections"."""


def _password(settings: Settings) -> str | None:
    secret = settings.redis_password
    return secret.reveal().decode() if secret is not None else None


def _sentinel(settings: Settings, timeout_s: float, **connection: Any) -> Sentinel:
    sentinel_password = settings.redis_sentinel_password
    sentinel_options: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if sentinel_password is not None:
        sentinel_options["password"] = sentinel_password.reveal().decode()
    return Sentinel(list(settings.redis_sentinels), sentinel_kwargs=sentinel_options, **connection)


def _url_options(settings: Settings) -> dict[str, Any]:
    password = _password(settings)
    return {} if password is None else {"password": password}


def request_client(settings: Settings, max_connections: int) -> redis_asyncio.Redis:
    """The API's client: short timeouts everywhere, one attempt per command."""
    options: dict[str, Any] = {
        "socket_timeout": REDIS_TIMEOUT_S, "socket_connect_timeout": REDIS_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0), "decode_responses": False}
    if settings.redis_sentinels:
        sentinel = _sentinel(settings, REDIS_TIMEOUT_S, password=_password(settings), **options)
        client: redis_asyncio.Redis = sentinel.master_for(
            settings.redis_sentinel_master, redis_class=redis_asyncio.Redis,
            connection_pool_class=_SentinelBlockingPool, max_connections=max_connections,
            timeout=REDIS_TIMEOUT_S)
        return client
    assert settings.redis_url
    pool = redis_asyncio.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=max_connections, timeout=REDIS_TIMEOUT_S,
        **options, **_url_options(settings))
    return redis_asyncio.Redis.from_pool(pool)


def worker_client(settings: Settings) -> redis_asyncio.Redis:
    """A worker's client: it waits out a restart or a failover instead of failing the batch."""
    options: dict[str, Any] = {
        "socket_timeout": WORKER_SOCKET_TIMEOUT_S, "socket_connect_timeout": WORKER_CONNECT_TIMEOUT_S,
        "decode_responses": False, "health_check_interval": WORKER_HEALTH_CHECK_S}
    if settings.redis_sentinels:
        sentinel = _sentinel(settings, WORKER_CONNECT_TIMEOUT_S, password=_password(settings), **options)
        worker: redis_asyncio.Redis = sentinel.master_for(settings.redis_sentinel_master,
                                                          redis_class=redis_asyncio.Redis)
        return worker
    assert settings.redis_url
    return redis_asyncio.Redis.from_url(settings.redis_url, **options, **_url_options(settings))
