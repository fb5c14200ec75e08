"""Operators and auditors signing in with the city's OpenID Connect provider instead of an `stm_` token.

Where `STIMULUS_OPERATOR_OIDC_AUDIENCE` is set, an ID token issued for that audience by the same
provider the citizens' tokens come from is accepted on the admin API. The role is what the
configured claim names (`operator` or `auditor`; a list of roles may hold both, and then the
operator role wins); the name the audit log records comes from another claim (by default
`preferred_username`), or the subject when that is absent.
"""

from __future__ import annotations

import time
from typing import Any

from kernel.auth import Principal
from kernel.errors import Forbidden, Unauthenticated
from kernel.oidc import IdTokenVerifier, UnknownSigningKey

MAX_NAME_CHARS = 200
ROLES_STRONGEST_FIRST = ("operator", "auditor")


class OperatorSignIn:
    def __init__(self, tokens: IdTokenVerifier, role_claim: str, name_claim: str) -> None:
        self._tokens = tokens
        self._role_claim = role_claim
        self._name_claim = name_claim

    async def principal(self, token: str) -> Principal:
        try:
            claims = self._tokens.claims(token, time.time())
        except UnknownSigningKey:
            if not await self._tokens.keys.refetch_for_unknown_kid():
                raise
            claims = self._tokens.claims(token, time.time())
        return Principal(self._name(claims), self._role(claims))

    def _role(self, claims: dict[str, Any]) -> str:
        value = claims.get(self._role_claim)
        named = {value} if isinstance(value, str) else set(value) if isinstance(value, list) else set()
        for role in ROLES_STRONGEST_FIRST:
            if role in named:
                return role
        raise Forbidden(f"the identity token's {self._role_claim!r} claim names no stimulus role",
                        code="role_required")

    def _name(self, claims: dict[str, Any]) -> str:
        name = claims.get(self._name_claim) or claims.get("sub")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS \
                or not name.isprintable():
            raise Unauthenticated(f"the identity token has no usable {self._name_claim!r}",
                                  code="token_claims_missing")
        return name
