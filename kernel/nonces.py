"""Nonces spent once: `SET key NX EX ttl` in Redis, the SETs of concurrent requests in one pipeline.

A signed request's nonce is spent by one SET NX; whoever sets the key first owns it, and a second
request with the same nonce finds it set. Each request would pay a redis-py round trip for that
one command, so the nonces of concurrent requests in a process go together (kernel/coalesce.py),
as the rate-limit checks do: one pipeline, no transaction, each SET still atomic on its own. A
command Redis refuses (READONLY after a failover, say) fails only its own request, and a failed
connection fails the batch's requests with its error, as each request's own SET would have.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from kernel.coalesce import Coalescer

MAX_BATCH = 256  # SETs per pipeline


class Nonces:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._sets: Coalescer[tuple[str, int], Any] = Coalescer(self._send, max_batch=MAX_BATCH, name="nonce-flush")

    async def first_use(self, key: str, ttl_s: int) -> bool:
        """Record `key` for `ttl_s` seconds; False when it was already recorded."""
        return bool(await self._sets.submit((key, ttl_s)))

    async def _send(self, keys: list[tuple[str, int]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for key, ttl_s in keys:
            pipe.set(key, b"1", nx=True, ex=ttl_s)
        return list(await pipe.execute(raise_on_error=False))
