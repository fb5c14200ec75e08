"""Operator and auditor bearer tokens.

Tokens are random, shown once at creation, and stored only as SHA-256. Each carries a name, so
maker-checker steps can require two different operators and the audit log says who did what.
Each expires (12 hours unless asked otherwise) and can be revoked. Every request looks its token
up in PostgreSQL, with no cache in front: operator calls are few, and a revocation or an expiry
then holds on every API node from the next request on.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import asyncpg
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from kernel import audit_log
from kernel.errors import Forbidden, Unauthenticated

TOKEN_PREFIX = "stm_"
ROLES = ("operator", "auditor")
DEFAULT_TTL = timedelta(hours=12)
MAX_TTL = timedelta(days=30)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.name}"


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class TokenRecord:
    """What is kept of a token: never the token itself."""

    id: int
    name: str
    role: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "active"


async def create_token(conn: asyncpg.Connection, name: str, role: str,
                       ttl: timedelta = DEFAULT_TTL) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if not timedelta(seconds=1) <= ttl <= MAX_TTL:
        raise ValueError(f"a token lives between 1 s and {MAX_TTL.days} days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO admin_tokens (token_hash, name, role, expires_at)"
        " VALUES ($1, $2, $3, now() + $4::interval)",
        _hash(token), name, role, ttl,
    )
    return token


async def list_tokens(conn: asyncpg.Connection, include_inactive: bool = False) -> list[TokenRecord]:
    rows = await conn.fetch(
        "SELECT id, name, role, created_at, expires_at, revoked_at, revoked_by FROM admin_tokens"
        " WHERE $1 OR (revoked_at IS NULL AND expires_at > now()) ORDER BY id",
        include_inactive,
    )
    return [TokenRecord(**dict(row)) for row in rows]


async def revoke_tokens(conn: asyncpg.Connection, *, actor: str, ids: list[int] | None = None,
                        name: str | None = None) -> list[TokenRecord]:
    """Revoke the active tokens with these ids, or every active token of `name`; audited."""
    async with conn.transaction():
        rows = await conn.fetch(
            "UPDATE admin_tokens SET revoked_at = now(), revoked_by = $3"
            " WHERE revoked_at IS NULL AND (id = ANY($1::bigint[]) OR name = $2)"
            " RETURNING id, name, role, created_at, expires_at, revoked_at, revoked_by",
            ids or [], name, actor,
        )
        revoked = [TokenRecord(**dict(row)) for row in rows]
        for record in revoked:
            await audit_log.append(conn, actor=actor, action="admin_token.revoke",
                                   subject=f"admin_token:{record.id}",
                                   details={"name": record.name, "role": record.role})
    return revoked


ROLES_OPT = "roles"
PRINCIPAL_STATE = "principal"


def bearer_token(request: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("use 'Authorization: Bearer <token>'", code="bad_authorization_header")
    return value.strip()


async def principal_from_token(pool: asyncpg.Pool, token: str | None) -> Principal:
    if token is None:
        raise Unauthenticated("an operator or auditor token is required")
    row = await pool.fetchrow(
        "SELECT name, role, revoked_at IS NOT NULL AS revoked, expires_at <= now() AS expired"
        " FROM admin_tokens WHERE token_hash = $1",
        _hash(token),
    )
    if row is None:
        raise Unauthenticated("the token is not valid", code="invalid_admin_token")
    if row["revoked"]:
        raise Unauthenticated("the token was revoked", code="admin_token_revoked")
    if row["expired"]:
        raise Unauthenticated("the token expired; ask for a new one", code="admin_token_expired")
    return Principal(row["name"], row["role"])


def require_role(principal: Principal, *roles: str) -> Principal:
    if principal.role not in roles:
        raise Forbidden(f"this needs the {' or '.join(roles)} role", code="role_required")
    return principal


@cache
def _takes_principal(fn: Any) -> bool:
    return "principal" in inspect.signature(fn).parameters


async def authorize_staff(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Who is calling and whether they may, before the request's parameters and body are read:
    a caller without the right token learns 401 or 403, never what their input lacks.

    Runs (`stimulus.app.check_entry`) for every handler that takes a `principal`; the roles come from
    the handler's `opt["roles"]` when it has them (the handler's own `require_role` otherwise).
    """
    if not _takes_principal(handler.fn):
        return
    principal = await connection.app.state.services.principal(bearer_token(connection))
    roles = handler.opt.get(ROLES_OPT)
    if roles:
        require_role(principal, *roles)
    connection.state[PRINCIPAL_STATE] = principal
