"""Citizen identity tokens: Ed25519-signed JWTs (alg EdDSA) from the city's identity provider.

Verification costs ~190 us, so verdicts are cached in a bounded LRU keyed by the token's hash until
the token expires. The sandbox identity provider (only when sandbox mode is on) issues tokens for
synthetic citizens with the same format, for the demo, tests and load tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import Any

from stimulus import resident_id
from stimulus.errors import Unauthenticated
from stimulus.signing import SigningKey, verify_signature

CACHE_MAX_ENTRIES = 200_000
CLOCK_SKEW_S = 60
MAX_TOKEN_BYTES = 4096


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Citizen:
    """What a verified token says about its holder. `id_hmac` replaces the ID number."""

    id_hmac: bytes
    birth_date: date
    phone_hmac: bytes
    phone_is_mainland: bool
    district: str
    city: str
    social_insurance_city: str | None
    expires_at: int
    token_id: str


def _mainland_mobile(phone: str) -> bool:
    digits = phone.replace(" ", "").replace("-", "").removeprefix("+86")
    return len(digits) == 11 and digits.isdigit() and digits[0] == "1" and digits[1] in "3456789"


class TokenVerifier:
    def __init__(self, public_keys: dict[str, bytes], issuer: str, audience: str,
                 pepper: bytes, cache_max: int = CACHE_MAX_ENTRIES) -> None:
        self._keys = dict(public_keys)
        self._issuer = issuer
        self._audience = audience
        self._pepper = pepper
        self._cache: OrderedDict[bytes, Citizen] = OrderedDict()
        self._cache_max = cache_max

    def verify(self, token: str, now: float | None = None) -> Citizen:
        now = time.time() if now is None else now
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if cached.expires_at + CLOCK_SKEW_S < now:
                del self._cache[digest]
                raise Unauthenticated("the identity token has expired", code="token_expired")
            self._cache.move_to_end(digest)
            return cached
        citizen = self._verify_uncached(token, now)
        self._cache[digest] = citizen
        if len(self._cache) > self._cache_max:
            self._cache.popitem(last=False)
        return citizen

    def _verify_uncached(self, token: str, now: float) -> Citizen:
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("the identity token is too long", code="token_malformed")
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthenticated("the identity token is not a JWT", code="token_malformed")
        try:
            header = json.loads(_unb64url(parts[0]))
            claims = json.loads(_unb64url(parts[1]))
            signature = _unb64url(parts[2])
        except (ValueError, UnicodeDecodeError) as exc:
            raise Unauthenticated("the identity token cannot be decoded", code="token_malformed") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise Unauthenticated("the identity token is not a JWT", code="token_malformed")
        if header.get("alg") != "EdDSA":
            raise Unauthenticated("only EdDSA identity tokens are accepted", code="token_algorithm")
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise Unauthenticated("the token's signing key is not trusted", code="token_unknown_key")
        if not verify_signature(key, signature, f"{parts[0]}.{parts[1]}".encode()):
            raise Unauthenticated("the identity token's signature is invalid", code="token_signature_invalid")
        return self._citizen_from_claims(claims, now)

    def _citizen_from_claims(self, claims: dict[str, Any], now: float) -> Citizen:
        if claims.get("iss") != self._issuer:
            raise Unauthenticated("the token was issued by someone else", code="token_issuer")
        if claims.get("aud") != self._audience:
            raise Unauthenticated("the token is meant for another service", code="token_audience")
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
        if not isinstance(exp, int) or not isinstance(nbf, int):
            raise Unauthenticated("the token lacks exp/iat", code="token_malformed")
        if exp + CLOCK_SKEW_S < now:
            raise Unauthenticated("the identity token has expired", code="token_expired")
        if nbf - CLOCK_SKEW_S > now:
            raise Unauthenticated("the identity token is not valid yet", code="token_not_yet_valid")
        try:
            normalized = resident_id.normalize(str(claims.get("sub", "")))
        except resident_id.InvalidResidentId as exc:
            raise Unauthenticated(f"the token's resident ID is invalid: {exc}", code="invalid_resident_id") from exc
        phone = str(claims.get("phone", ""))
        district = claims.get("district")
        city = claims.get("city")
        if not isinstance(district, str) or not district or not isinstance(city, str):
            raise Unauthenticated("the token lacks district/city claims", code="token_claims_missing")
        si_city = claims.get("si_city")
        return Citizen(
            id_hmac=resident_id.keyed_hash(self._pepper, normalized),
            birth_date=resident_id.birth_date(normalized),
            phone_hmac=resident_id.keyed_hash(self._pepper, "phone:" + phone),
            phone_is_mainland=_mainland_mobile(phone),
            district=district,
            city=city,
            social_insurance_city=si_city if isinstance(si_city, str) else None,
            expires_at=exp,
            token_id=str(claims.get("jti", "")),
        )


def issue_token(key: SigningKey, *, subject: str, phone: str, district: str, city: str,
                social_insurance_city: str | None, issuer: str, audience: str,
                ttl_s: int = 3600, now: int | None = None, token_id: str = "") -> str:
    """Sign a token as the (sandbox) identity provider does."""
    now = int(time.time()) if now is None else now
    header = {"alg": "EdDSA", "typ": "JWT", "kid": key.key_id}
    claims: dict[str, Any] = {"iss": issuer, "aud": audience, "sub": subject, "phone": phone,
                              "district": district, "city": city, "iat": now, "exp": now + ttl_s}
    if social_insurance_city is not None:
        claims["si_city"] = social_insurance_city
    if token_id:
        claims["jti"] = token_id
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    return signing_input + "." + _b64url(key.sign(signing_input.encode()))
