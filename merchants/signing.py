"""The merchant request signature: the canonical string, signing (client side) and checking it.

Every merchant request carries `X-Merchant-Id`, `X-Timestamp` (unix seconds), `X-Nonce` (16-64
url-safe characters) and `X-Signature`: base64url (no padding) Ed25519 over

    stimulus-merchant-v1 \\n METHOD \\n PATH?QUERY \\n TIMESTAMP \\n NONCE \\n hex(SHA-256(body))

The check refuses, each with its own code and without changing anything: missing or malformed
headers, a timestamp more than 300 s from our clock either way, an unknown merchant, a bad
signature, a suspended merchant, and a nonce the merchant already used. The nonce is recorded in
Redis (`SET NX`, concurrent requests' SETs in one pipeline: kernel/nonces.py) only once the
signature holds, so nobody else can burn a merchant's nonces, and kept for twice the skew window:
a timestamp accepted now is refused once the nonce is forgotten.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from litestar import Request

from kernel.errors import Forbidden, Unauthenticated
from kernel.services import Services
from kernel.signing import SigningKey
from merchants import registry

SCHEME = "stimulus-merchant-v1"
MAX_SKEW_S = 300
# A nonce must outlive every timestamp that could still be accepted with it: +-MAX_SKEW_S.
NONCE_TTL_S = 2 * MAX_SKEW_S + 60
NONCE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
TIMESTAMP_PATTERN = re.compile(r"^[0-9]{1,12}$")
SIGNATURE_LENGTH = 64
HEADER_MERCHANT, HEADER_TIMESTAMP = "x-merchant-id", "x-timestamp"
HEADER_NONCE, HEADER_SIGNATURE = "x-nonce", "x-signature"


def canonical_message(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The exact bytes a merchant signs; `path` includes the query string (`/a?b=1`) if any."""
    return "\n".join((SCHEME, method.upper(), path, timestamp, nonce,
                      hashlib.sha256(body).hexdigest())).encode()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_nonce() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def signed_headers(key: SigningKey, merchant_id: str, method: str, path: str, body: bytes,
                   *, timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """The four headers that authenticate one request."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or new_nonce()
    signature = key.sign(canonical_message(method, path, stamp, nonce, body))
    return {"X-Merchant-Id": merchant_id, "X-Timestamp": stamp, "X-Nonce": nonce,
            "X-Signature": b64url(signature)}


def signed_path(request: Request[Any, Any, Any]) -> str:
    """The path as it came on the request line, with the query string: what the client signed."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    query = request.scope.get("query_string") or b""
    path = raw.decode("latin-1")
    return f"{path}?{query.decode('latin-1')}" if query else path


@dataclass(frozen=True)
class Presented:
    merchant_id: str
    timestamp: str
    nonce: str
    signature: bytes


def _presented(request: Request[Any, Any, Any]) -> Presented:
    headers = request.headers
    values = [headers.get(h) for h in (HEADER_MERCHANT, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)]
    merchant_id, timestamp, nonce, signature = values
    if merchant_id is None or timestamp is None or nonce is None or signature is None:
        raise Unauthenticated("merchant requests carry X-Merchant-Id, X-Timestamp, X-Nonce and "
                              "X-Signature", code="signature_missing")
    if not TIMESTAMP_PATTERN.match(timestamp):
        raise Unauthenticated("X-Timestamp is unix seconds", code="bad_timestamp")
    if not NONCE_PATTERN.match(nonce):
        raise Unauthenticated("X-Nonce is 16-64 characters of A-Z a-z 0-9 _ -", code="bad_nonce")
    try:
        raw = b64url_decode(signature)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != SIGNATURE_LENGTH:
        raise Unauthenticated("X-Signature is a base64url Ed25519 signature", code="bad_signature")
    return Presented(merchant_id, timestamp, nonce, raw)


# Merchant keys are never changed in place (a new key is a new merchant), so each process keeps
# the public keys it has looked up and spends no database round trip on them again; loaded, since
# loading a key decompresses a curve point, and a city has more merchants than a small LRU holds.
MAX_CACHED_KEYS = 100_000
_keys: dict[str, Ed25519PublicKey] = {}


async def _check(services: Services, request: Request[Any, Any, Any], merchant_id: str,
                 public_key: Ed25519PublicKey | None) -> tuple[Presented, registry.Merchant | None]:
    """Headers, clock, key and signature; the merchant row when it had to be read."""
    presented = _presented(request)
    if presented.merchant_id != merchant_id:
        raise Forbidden("X-Merchant-Id does not match the merchant in the path", code="merchant_mismatch")
    skew_s = int(presented.timestamp) - int(time.time())
    if abs(skew_s) > MAX_SKEW_S:
        raise Unauthenticated(f"X-Timestamp is {skew_s} s from the server's clock (limit {MAX_SKEW_S} s)",
                              code="stale_timestamp")
    merchant = None
    if public_key is None:
        merchant = await registry.find(services.pool, merchant_id)
        if merchant is None:
            raise Unauthenticated("no such merchant", code="unknown_merchant")
        public_key = Ed25519PublicKey.from_public_bytes(merchant.public_key)
        if len(_keys) >= MAX_CACHED_KEYS:
            _keys.clear()
        _keys[merchant_id] = public_key
    body = await request.body()
    message = canonical_message(request.method, signed_path(request), presented.timestamp,
                                presented.nonce, body)
    try:
        public_key.verify(presented.signature, message)
    except InvalidSignature:
        raise Unauthenticated("the signature does not verify with the merchant's key",
                              code="bad_signature") from None
    return presented, merchant


async def use_nonce(services: Services, merchant_id: str, nonce: str) -> None:
    if not await services.nonces.first_use(f"mnonce:{merchant_id}:{nonce}", NONCE_TTL_S):
        raise Unauthenticated("this nonce was already used: a replayed request", code="nonce_reused")


async def check_merchant(services: Services, request: Request[Any, Any, Any],
                         merchant_id: str) -> tuple[registry.Merchant, str]:
    """The active merchant that signed this request, and its nonce, not yet spent."""
    presented, merchant = await _check(services, request, merchant_id, None)
    assert merchant is not None
    if merchant.status != registry.ACTIVE:
        raise Forbidden("the merchant is suspended", code="merchant_suspended")
    return merchant, presented.nonce


async def check_signature(services: Services, request: Request[Any, Any, Any], merchant_id: str) -> str:
    """Like `check_merchant`, with the key from this process's cache and without the merchant's
    status: for a handler whose own database call refuses an unknown or suspended merchant in
    the transaction that acts (the payment notice). Returns the nonce, not yet spent."""
    presented, merchant = await _check(services, request, merchant_id, _keys.get(merchant_id))
    if merchant is not None and merchant.status != registry.ACTIVE:
        raise Forbidden("the merchant is suspended", code="merchant_suspended")
    return presented.nonce


async def authenticate(services: Services, request: Request[Any, Any, Any],
                       merchant_id: str) -> registry.Merchant:
    """The merchant that signed this request for `/v1/merchants/{merchant_id}/...`, or a refusal;
    the nonce is spent. A handler that reads a body decodes it between `check_merchant` and
    `use_nonce` instead, so a body refused as invalid leaves the nonce unspent."""
    merchant, nonce = await check_merchant(services, request, merchant_id)
    await use_nonce(services, merchant_id, nonce)
    return merchant
