"""`Idempotency-Key` for unsafe citizen and merchant calls (IETF httpapi idempotency draft).

The first response for a key is stored and replayed for the same key and payload; the same key
with another payload is 422; a retry while the first is still running is 409. Records live 24 h,
longer than any client retries. Keys are scoped by caller so two callers cannot collide.

`answer_once` is the whole of it for a handler: it runs the handler's action at most once per key
and answers with what the action answered, or with the stored answer to replay.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response
from redis.asyncio import Redis

from kernel.errors import Conflict, DomainError, InvalidInput, Unprocessable
from kernel.outages import OUTAGE_ERRORS, is_outage

KEY_TTL_S = 24 * 3600
IN_PROGRESS_TTL_S = 60
MAX_KEY_LENGTH = 255
HEADER = "idempotency-key"
REPLAYED = {"Idempotent-Replayed": "true"}


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    headers: dict[str, str]


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


class IdempotencyStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @staticmethod
    def _redis_key(scope: str, key: str) -> str:
        return f"idem:{scope}:{hashlib.sha256(key.encode()).hexdigest()}"

    async def begin(self, scope: str, key: str, print_: str) -> StoredResponse | None:
        """Claim the key, or return the stored response to replay; raises 409/422 as the draft says."""
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise InvalidInput("Idempotency-Key must be 1-255 printable characters",
                               code="invalid_idempotency_key")
        rkey = self._redis_key(scope, key)
        marker = json.dumps({"fp": print_, "state": "running"})
        if await self._redis.set(rkey, marker, nx=True, ex=IN_PROGRESS_TTL_S):
            return None
        raw = await self._redis.get(rkey)
        if raw is None:
            # Expired between the two calls: the first attempt gave up, so this one may proceed.
            if await self._redis.set(rkey, marker, nx=True, ex=IN_PROGRESS_TTL_S):
                return None
            raise Conflict("a request with this Idempotency-Key is in progress",
                           code="idempotency_key_in_use")
        record = json.loads(raw)
        if record["fp"] != print_:
            raise Unprocessable("this Idempotency-Key was used with another payload",
                                code="idempotency_key_reused")
        if record["state"] == "running":
            raise Conflict("a request with this Idempotency-Key is in progress",
                           code="idempotency_key_in_use")
        return StoredResponse(record["status"], record["body"].encode(), record.get("headers", {}))

    async def complete(self, scope: str, key: str, print_: str, response: StoredResponse) -> None:
        record = {"fp": print_, "state": "done", "status": response.status,
                  "body": response.body.decode(), "headers": response.headers}
        await self._redis.set(self._redis_key(scope, key), json.dumps(record), ex=KEY_TTL_S)

    async def release(self, scope: str, key: str) -> None:
        """Forget a claimed key whose request failed before it changed anything."""
        await self._redis.delete(self._redis_key(scope, key))


async def _forget(store: IdempotencyStore, scope: str, key: str) -> None:
    """Free the key if Redis answers; if it is the outage, the key lapses after IN_PROGRESS_TTL_S."""
    with contextlib.suppress(*OUTAGE_ERRORS):
        await store.release(scope, key)


async def answer_once(store: IdempotencyStore, request: Request[Any, Any, Any], scope: str, media_type: str,
                      act: Callable[[], Awaitable[StoredResponse]]) -> Response[bytes]:
    """`act`'s answer; with an `Idempotency-Key`, `act` runs once for the key and a retry with the
    same key and payload gets the stored answer, marked `Idempotent-Replayed`. A refusal
    (a `DomainError`) changed nothing, so it frees the key for a corrected retry. So does an
    outage (503: PostgreSQL or Redis gone or past the request's deadline), whose effect is unknown:
    the retry that Retry-After invites would otherwise be refused as in progress for
    IN_PROGRESS_TTL_S. `act` must therefore be safe to run again (registration and claims are:
    one registration per person, one binding per packet)."""
    key = request.headers.get(HEADER)
    if key is None:
        answer = await act()
        return Response(answer.body, status_code=answer.status, media_type=media_type, headers=answer.headers)
    print_ = fingerprint(request.method, request.url.path, await request.body())
    stored = await store.begin(scope, key, print_)
    if stored is not None:
        return Response(stored.body, status_code=stored.status, media_type=media_type,
                        headers={**stored.headers, **REPLAYED})
    try:
        answer = await act()
    except Exception as exc:
        if isinstance(exc, DomainError) or (isinstance(exc, OUTAGE_ERRORS) and is_outage(exc)):
            await _forget(store, scope, key)
        raise
    await store.complete(scope, key, print_, answer)
    return Response(answer.body, status_code=answer.status, media_type=media_type, headers=answer.headers)
