"""Abuse limits: atomic token buckets in Redis, several keys checked in one round trip.

The script refills each bucket from the time elapsed, and takes a token from every bucket only
when all of them have one, so a refused request costs nothing. It answers how long to wait.

A script may touch only keys of one hash slot on Redis Cluster (else CROSSSLOT), and a request's
buckets (its person, its address) are shared with other requests in every combination, so all
buckets carry one hash tag, `{rl}`: the limiter lives on one shard, a few cheap commands per
request, well within what one Redis node serves.

A round trip through redis-py costs the API process more CPU than the script costs Redis, so the
checks of concurrent requests in one process share round trips (kernel/coalesce.py): whatever is
queued goes as one pipeline, EVALSHA per check, no transaction: each check stays its own atomic
script.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from kernel.coalesce import Coalescer
from kernel.errors import RateLimited

BUCKET_TAG = "{rl}"
MAX_BATCH = 256  # checks per pipeline

# KEYS: bucket keys. ARGV: now_ms, then per key: capacity, refill_per_ms * 1e6 (integer).
_TOKEN_BUCKET_LUA = """
redis.replicate_commands()
local now = tonumber(ARGV[1])
local wait = 0
local state = {}
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1]) / 1000000
  local b = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(b[1])
  local ts = tonumber(b[2])
  if tokens == nil then tokens = capacity; ts = now end
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  state[i] = tokens
  if tokens < 1 then
    local need = math.ceil((1 - tokens) / rate)
    if need > wait then wait = need end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1]) / 1000000
  redis.call('HSET', key, 't', state[i] - 1, 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(capacity / rate) + 1000)
end
return 0
"""


@dataclass(frozen=True)
class Limit:
    key: str
    per_minute: int
    burst: int

    @property
    def refill_per_ms_micro(self) -> int:
        return max(1, round(self.per_minute / 60_000 * 1_000_000))


def bucket_key(limit: Limit) -> str:
    return f"rl:{BUCKET_TAG}:{limit.key}"


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(_TOKEN_BUCKET_LUA)
        self._checks: Coalescer[tuple[list[str], list[int]], Any] = Coalescer(
            self._evaluate, max_batch=MAX_BATCH, name="rate-limit-flush")

    async def check(self, limits: Sequence[Limit], now_ms: int) -> None:
        """Take one token from each bucket or raise RateLimited with Retry-After."""
        limits = [limit for limit in limits if limit.per_minute > 0]
        if not limits:
            return
        args: list[int] = [now_ms]
        for limit in limits:
            args += [limit.burst, limit.refill_per_ms_micro]
        wait_ms = int(await self._checks.submit(([bucket_key(limit) for limit in limits], args)))
        if wait_ms > 0:
            retry_after_s = max(1, -(-wait_ms // 1000))
            raise RateLimited(
                f"too many requests; retry after {retry_after_s} s",
                headers={"Retry-After": str(retry_after_s)},
                retry_after_s=retry_after_s,
            )

    async def _evaluate(self, checks: list[tuple[list[str], list[int]]]) -> list[Any]:
        results = await self._pipeline(checks)
        if any(isinstance(r, NoScriptError) for r in results):  # Redis restarted: load it, send again
            await self._redis.script_load(_TOKEN_BUCKET_LUA)
            results = await self._pipeline(checks)
        return results

    async def _pipeline(self, checks: list[tuple[list[str], list[int]]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for keys, args in checks:
            pipe.evalsha(self._script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))
