"""OpenID Connect ID tokens from the city's identity provider: its published keys and their verification.

`ProviderKeys` follows the provider's discovery document to its JWKS: fetched at start-up (so the
first request does not pay), again every `max_age_s` in the background, and again when a token
names a key id we do not hold (a rotation), at most once per `refetch_floor_s` however many such
tokens arrive, so a flood of made-up key ids costs one fetch, not one per request. Fetches are
asynchronous with short timeouts and never block the event loop.

`IdTokenVerifier` has joserfc check one token's signature with the key its `kid` names, with the
algorithm on an allow-list (never `none` or HMAC: a public key used as an HMAC secret would let
anyone sign) and bound to the key's type; then it checks `iss`, `aud`, `exp`, `nbf` and `iat`
with a clock skew, and a maximum lifetime (`exp - iat`), so a token minted to live for ever is
refused.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import time
from collections.abc import Callable, Collection
from typing import Any, TypeGuard

import httpx
from joserfc.errors import (
    BadSignatureError,
    JoseError,
    KeyParameterError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key
from joserfc.jws import JWSRegistry, deserialize_compact

from kernel.errors import Unauthenticated

log = logging.getLogger("stimulus.oidc")

ASYMMETRIC_ALGORITHMS = frozenset({"EdDSA", "Ed25519", "ES256", "ES384", "ES512",
                                   "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
MAX_TOKEN_BYTES = 8192
MAX_DOCUMENT_BYTES = 256 * 1024
FETCH_TIMEOUT_S = 3.0

PublicKey = OKPKey | ECKey | RSAKey


def allowed_algorithms(names: Collection[str]) -> tuple[str, ...]:
    """The algorithms to accept; `none`, HMAC and anything unknown are refused, even if asked for."""
    refused = sorted(n for n in names if n not in ASYMMETRIC_ALGORITHMS)
    if refused:
        raise ValueError(f"identity-token algorithms must be asymmetric signatures "
                         f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}); refused: {', '.join(refused)}")
    if not names:
        raise ValueError("at least one identity-token algorithm is needed")
    return tuple(names)


def jws_registry(algorithms: Collection[str]) -> JWSRegistry:
    """joserfc's registry for `algorithms`, lenient on headers it does not know (providers add some)."""
    registry = JWSRegistry(algorithms=list(algorithms), strict_check_header=False)
    # RFC 9864 renames the Ed25519 signature "Ed25519" and joserfc warns on every "EdDSA" use;
    # the city's providers still sign as "EdDSA": a quiet copy of the same algorithm.
    eddsa = copy.copy(registry.algorithms["EdDSA"])
    eddsa.security_warning = None
    registry.algorithms = {**registry.algorithms, "EdDSA": eddsa}
    return registry


class UnknownSigningKey(Unauthenticated):
    code = "token_unknown_key"
    title = "The token's signing key is not published by the identity provider"


class ProviderKeys:
    """The provider's public keys by `kid`, from its discovery document and JWKS."""

    def __init__(self, discovery_url: str, issuer: str, *, refetch_floor_s: float = 30.0,
                 max_age_s: float = 300.0, timeout_s: float = FETCH_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.discovery_url = discovery_url
        self.issuer = issuer
        self.refetch_floor_s = refetch_floor_s
        self.max_age_s = max_age_s
        self.keys: dict[str, PublicKey] = {}
        # Bumped when a key disappears from the JWKS: verdicts cached under it must go too.
        self.withdrawals = 0
        self.fetches = 0
        self._timeout_s = timeout_s
        self._clock = clock
        self._last_attempt = -float("inf")
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fetch the keys once (a provider that is down is logged, not fatal) and keep them fresh."""
        self._client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        async with self._lock:
            await self._fetch_logged()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="jwks-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def refetch_for_unknown_kid(self) -> bool:
        """Fetch again unless a fetch was tried within the floor; True when a fetch ran."""
        if self._clock() - self._last_attempt < self.refetch_floor_s:
            return False
        async with self._lock:
            # Whoever waited on the lock behind a fetch uses that fetch's keys.
            if self._clock() - self._last_attempt < self.refetch_floor_s:
                return True
            return await self._fetch_logged()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.max_age_s)
            async with self._lock:
                await self._fetch_logged()

    async def _fetch_logged(self) -> bool:
        self._last_attempt = self._clock()
        try:
            await self._fetch()
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            log.warning("identity provider keys not refreshed from %s: %s: %s",
                        self.discovery_url, type(exc).__name__, exc)
            return False
        return True

    async def _get_json(self, url: str) -> dict[str, Any]:
        assert self._client is not None, "ProviderKeys.start() first"
        response = await self._client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url} answered {len(response.content)} bytes")
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError(f"{url} did not answer a JSON object")
        return document

    async def _fetch(self) -> None:
        discovery = await self._get_json(self.discovery_url)
        if discovery.get("issuer") != self.issuer:
            raise ValueError(f"the discovery document names issuer {discovery.get('issuer')!r}, "
                             f"not {self.issuer!r}")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ValueError("the discovery document has no jwks_uri")
        self.fetches += 1
        jwks = await self._get_json(jwks_uri)
        keys: dict[str, PublicKey] = {}
        for item in jwks.get("keys", []):
            if not isinstance(item, dict) or item.get("use", "sig") != "sig" or not item.get("kid"):
                continue
            if item.get("kty") not in ("OKP", "EC", "RSA") or "d" in item:
                continue  # a shared secret or a private key has no place in a JWKS
            try:
                keys[str(item["kid"])] = import_key(item)  # type: ignore[assignment]
            except (JoseError, ValueError, TypeError) as exc:
                log.warning("skipping JWKS key %r: %s", item.get("kid"), exc)
        if not keys:
            raise ValueError("the JWKS has no usable signing key")
        if set(self.keys) - set(keys):
            self.withdrawals += 1
        self.keys = keys


class IdTokenVerifier:
    """Verifies ID tokens for one audience; raises `Unauthenticated` with a stable code."""

    def __init__(self, keys: ProviderKeys, *, audience: str, algorithms: Collection[str],
                 clock_skew_s: int, max_lifetime_s: int) -> None:
        self.keys = keys
        self._registry = jws_registry(allowed_algorithms(algorithms))
        self._issuer = keys.issuer
        self._audience = audience
        self._skew_s = clock_skew_s
        self._max_lifetime_s = max_lifetime_s

    def _key_for(self, obj: Any) -> PublicKey:
        key = self.keys.keys.get(obj.headers().get("kid"))
        if key is None:
            raise UnknownSigningKey
        return key

    def claims(self, token: str, now: float) -> dict[str, Any]:
        """The verified claims of `token` at `now` (Unix seconds); raises UnknownSigningKey for a
        `kid` not (yet) held."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("the identity token is too long", code="token_malformed")
        try:
            claims = json.loads(deserialize_compact(token, self._key_for, registry=self._registry).payload)
        except BadSignatureError as exc:
            raise Unauthenticated("the identity token's signature is invalid",
                                  code="token_signature_invalid") from exc
        except (UnsupportedAlgorithmError, KeyParameterError) as exc:
            raise Unauthenticated(f"the token's algorithm is not accepted: {exc.description}",
                                  code="token_algorithm") from exc
        except (JoseError, ValueError, TypeError) as exc:
            raise Unauthenticated("the identity token cannot be decoded", code="token_malformed") from exc
        if not isinstance(claims, dict):
            raise Unauthenticated("the identity token carries no claims", code="token_malformed")
        self._check_claims(claims, now)
        return claims

    def _check_claims(self, claims: dict[str, Any], now: float) -> None:
        # The registered claims' rules (RFC 7519 section 4.1, OIDC Core 3.1.3.7) are few and run
        # on every uncached request: checked here in one pass, ~1 us, where joserfc's generic
        # claims registry costs ~6 us.
        if claims.get("iss") != self._issuer:
            raise Unauthenticated("the token was issued by someone else", code="token_issuer")
        audience = claims.get("aud")
        if audience != self._audience and not (isinstance(audience, list) and self._audience in audience):
            raise Unauthenticated("the token is meant for another service", code="token_audience")
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", 0)
        if not (_numeric_date(exp) and _numeric_date(iat) and _numeric_date(nbf)):
            raise Unauthenticated("the token lacks a numeric exp and iat", code="token_malformed")
        if not isinstance(claims.get("sub"), str):
            raise Unauthenticated("the token lacks its subject", code="token_malformed")
        if exp + self._skew_s <= now:
            raise Unauthenticated("the identity token has expired", code="token_expired")
        if max(nbf, iat) - self._skew_s > now:
            raise Unauthenticated("the identity token is not valid yet", code="token_not_yet_valid")
        if exp - iat > self._max_lifetime_s or exp - now > self._max_lifetime_s + self._skew_s:
            raise Unauthenticated(f"the token lives longer than {self._max_lifetime_s} s",
                                  code="token_lifetime")


def _numeric_date(value: object) -> TypeGuard[int | float]:
    # NaN compares false with everything, so an `exp` of NaN would never expire; a bool is an int.
    return type(value) is int or (type(value) is float and math.isfinite(value))
