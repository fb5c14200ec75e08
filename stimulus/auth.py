"""Operator and auditor bearer tokens.

Tokens are random, shown once at creation, and stored only as SHA-256. Each carries a name, so
maker-checker steps can require two different operators and the audit log says who did what.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any

import asyncpg
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from stimulus.errors import Forbidden, Unauthenticated

TOKEN_PREFIX = "stm_"
ROLES = ("operator", "auditor")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.name}"


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_token(conn: asyncpg.Connection, name: str, role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO admin_tokens (token_hash, name, role) VALUES ($1, $2, $3)",
        _hash(token), name, role,
    )
    return token


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
        "SELECT name, role FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        _hash(token),
    )
    if row is None:
        raise Unauthenticated("the token is not valid", code="invalid_admin_token")
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

    Runs as an app-wide guard for every handler that takes a `principal`; the roles come from
    the handler's `opt["roles"]` when it has them (the handler's own `require_role` otherwise).
    """
    if not _takes_principal(handler.fn):
        return
    principal = await principal_from_token(connection.app.state.services.pool, bearer_token(connection))
    roles = handler.opt.get(ROLES_OPT)
    if roles:
        require_role(principal, *roles)
    connection.state[PRINCIPAL_STATE] = principal
