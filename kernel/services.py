"""The long-lived objects a running API process holds, handed to handlers by dependency injection.

Only what every domain's handlers share; a domain's own objects (the lottery's registration
writer, say) are typed fields of that domain's services, handed out by its own dependency."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
from litestar import Request
from redis.asyncio import Redis

from kernel.auth import (
    PRINCIPAL_STATE,
    TOKEN_PREFIX,
    Principal,
    bearer_token,
    principal_from_token,
)
from kernel.errors import Unauthenticated
from kernel.forwarded import trusted_proxies
from kernel.idempotency import IdempotencyStore
from kernel.identity import Citizen, TokenVerifier
from kernel.nonces import Nonces
from kernel.operator_signin import OperatorSignIn
from kernel.ratelimit import RateLimiter
from kernel.settings import Settings


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    redis: Redis
    verifier: TokenVerifier
    limiter: RateLimiter
    idempotency: IdempotencyStore
    operator_signin: OperatorSignIn | None = None
    # Built from `redis`, not passed in: the signed merchant API spends its nonces here.
    nonces: Nonces = field(init=False)

    def __post_init__(self) -> None:
        self.nonces = Nonces(self.redis)

    @property
    def bulk_pool(self) -> Any:
        """For the few calls that import or aggregate a whole file or campaign (operator uploads,
        reports, counts) and for a published file's first copy onto this node: the pool's
        connections under the statement timeout, not the request deadline."""
        return self.pool.unhurried(self.settings.db_command_timeout_s)

    async def principal(self, token: str | None) -> Principal:
        """The operator or auditor a bearer token names: an `stm_` token, or where operators sign
        in through the identity provider, its ID token."""
        if token is not None and self.operator_signin is not None and not token.startswith(TOKEN_PREFIX):
            return await self.operator_signin.principal(token)
        return await principal_from_token(self.pool, token)


async def get_principal(request: Request[Any, Any, Any], services: Services) -> Principal:
    known = request.state.get(PRINCIPAL_STATE)  # the entry check (auth.authorize_staff) looked it up
    if isinstance(known, Principal):
        return known
    return await services.principal(bearer_token(request))


async def get_citizen(request: Request[Any, Any, Any], services: Services) -> Citizen:
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("an identity token is required", code="identity_token_required")
    return await services.verifier.verify(token)


def client_address(request: Request[Any, Any, Any], settings: Settings) -> str:
    """The client's address: the socket peer, or what a trusted proxy says it forwarded for."""
    client = request.scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not settings.trusted_proxies:
        return peer
    return trusted_proxies(settings.trusted_proxies).client(
        peer, request.headers.getall("forwarded", []), request.headers.getall("x-forwarded-for", []))
