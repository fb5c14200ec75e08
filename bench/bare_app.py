"""The bare contract: the least work each hot endpoint's contract needs, on the same stack.

`make bench` serves this app beside ours, by the same granian command line, and measures each of
our four hot endpoints against its handler here. Every handler does only what its contract cannot
do without, with the product's own libraries and keys: the identity token checked by the same
verifier and its verdict cached the same way, the one statement, the receipt signed with the
service key, the one Redis call (rate limit or nonce) the contract requires. Nothing here is
slowed on purpose; what it leaves out is what the product adds beyond the contract: idempotency
keys, metrics, logging, problem documents, the eligibility rules, the state checks and replays.
Each handler answers 401 for a bad token or signature and 409/404 when its one statement found
nothing, so a benchmark that sends wrong data sees it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from litestar import Litestar, Request, Response, get, post

from kernel import db
from kernel.errors import Unauthenticated
from kernel.identity import Citizen, TokenVerifier
from kernel.oidc import ProviderKeys
from kernel.ratelimit import Limit, RateLimiter
from kernel.redis_clients import request_client
from kernel.settings import Settings, load_settings
from lottery.group_commit import GroupCommitter
from lottery.registration import make_receipt
from merchants.signing import NONCE_TTL_S, b64url_decode, canonical_message
from stimulus.app import _id_tokens

JSON = "application/json"
_REGISTER = """INSERT INTO registrations (campaign_id, id_hmac, pseudonym, stratum, payload_hash)
    SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::bytea[])
    RETURNING ticket, registered_at"""
_RESULT = """SELECT r.ticket, w.tier, w.amount_fen FROM registrations r
    LEFT JOIN draw_winners w ON w.campaign_id = r.campaign_id AND w.ticket = r.ticket
    WHERE r.campaign_id = $1 AND r.id_hmac = $2 AND r.withdrawn_at IS NULL"""
_CLAIM = """UPDATE packets p SET state = 'issuing', wallet_bank = $3, wallet_id = $4, claimed_at = now(),
        updated_at = now()
    FROM registrations r WHERE r.campaign_id = $1 AND r.id_hmac = $2 AND r.withdrawn_at IS NULL
      AND p.campaign_id = r.campaign_id AND p.ticket = r.ticket AND p.state = 'allocated'
    RETURNING p.id"""
_OUTBOX = "INSERT INTO issuance_outbox (packet_id, campaign_id, bank_code, not_before) VALUES ($1, $2, $3, now())"
_NOTICE = """INSERT INTO redemption_notices (merchant_id, merchant_txn_id, kind, campaign_id, packet_id, bank_code,
        payment_reference, amount_fen, basket_fen, occurred_at, payload_hash)
    SELECT $1, $2, 'payment', p.campaign_id, p.id, p.wallet_bank, $3, $4, $5, $6, $7
    FROM packets p WHERE merchants_payment_reference(p.campaign_id, p.id) = $3"""


class Wallet(msgspec.Struct):
    bank_code: str
    wallet_id: str


class Claim(msgspec.Struct):
    wallet: Wallet


class Notice(msgspec.Struct):
    merchant_txn_id: str
    payment_reference: str
    amount_fen: int
    occurred_at: datetime
    basket_fen: int | None = None


class Bare:
    """What the handlers share: the pool, Redis, the verifier and the two small caches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The provider's keys, the ID-token check and its cache, built as our API builds them.
        self.provider_keys = ProviderKeys(settings.idp_discovery_url, settings.idp_issuer,
                                          refetch_floor_s=settings.idp_jwks_refetch_floor_s,
                                          max_age_s=settings.idp_jwks_max_age_s)
        self.verifier = TokenVerifier(_id_tokens(settings, self.provider_keys, settings.idp_audience),
                                      settings.pepper.reveal(), settings.idp_clock_skew_s)
        self.pseudonym_keys: dict[str, bytes] = {}
        self.merchant_keys: dict[str, Ed25519PublicKey] = {}

    async def start(self) -> None:
        s = self.settings
        assert s.database_url
        await self.provider_keys.start()
        self.pool = await db.create_pool(s.database_url, s.db_pool_min, s.db_pool_max, s.db_command_timeout_s,
                                         pooler=s.db_pooler)
        self.redis = request_client(s, 64)
        self.limiter = RateLimiter(self.redis)
        self.registrations: GroupCommitter[tuple[str, bytes, str, str, bytes], Any] = GroupCommitter(
            self._insert_registrations, max_batch=256, max_inflight=3)
        self.registrations.start()

    async def _insert_registrations(self, items: Sequence[tuple[str, bytes, str, str, bytes]]) -> list[Any]:
        rows = await self.pool.fetch(_REGISTER, *(list(column) for column in zip(*items, strict=True)))
        return list(rows)

    async def citizen(self, request: Request[Any, Any, Any]) -> Citizen:
        return await self.verifier.verify(request.headers.get("authorization", "")[7:])


BARE: Bare


@post("/v1/campaigns/{campaign_id:str}/registrations", status_code=201)
async def register(request: Request[Any, Any, Any], campaign_id: str) -> Response[bytes]:
    citizen = await BARE.citizen(request)
    limit = BARE.settings.rate_limit_identity_per_min
    await BARE.limiter.check([Limit("id:" + citizen.id_hmac.hex()[:32], limit, max(1, limit // 6))],
                             int(time.time() * 1000))
    body = await request.body()
    key = BARE.pseudonym_keys.get(campaign_id)
    if key is None:
        key = BARE.pseudonym_keys[campaign_id] = bytes(await BARE.pool.fetchval(
            "SELECT pseudonym_key FROM campaigns WHERE id = $1", campaign_id))
    pseudonym = hmac.new(key, citizen.id_hmac, hashlib.sha256).hexdigest()[:32]
    row = await BARE.registrations.submit(
        (campaign_id, citizen.id_hmac, pseudonym, citizen.district, hashlib.sha256(body).digest()))
    receipt = make_receipt(BARE.settings.service_key, campaign_id, row["ticket"], pseudonym, citizen.district,
                           row["registered_at"])
    return Response(msgspec.json.encode(receipt), status_code=201, media_type=JSON)


@get("/v1/campaigns/{campaign_id:str}/result")
async def result(request: Request[Any, Any, Any], campaign_id: str) -> Response[bytes]:
    citizen = await BARE.citizen(request)
    row = await BARE.pool.fetchrow(_RESULT, campaign_id, citizen.id_hmac)
    if row is None:
        return Response(b"{}", status_code=404, media_type=JSON)
    return Response(msgspec.json.encode({"ticket": row["ticket"], "won": row["tier"] is not None,
                                         "tier": row["tier"], "amount_fen": row["amount_fen"]}), media_type=JSON)


@post("/v1/campaigns/{campaign_id:str}/claim", status_code=202)
async def claim(request: Request[Any, Any, Any], campaign_id: str) -> Response[bytes]:
    citizen = await BARE.citizen(request)
    wallet = msgspec.json.decode(await request.body(), type=Claim).wallet
    async with BARE.pool.acquire() as conn, conn.transaction():
        packet_id = await conn.fetchval(_CLAIM, campaign_id, citizen.id_hmac, wallet.bank_code, wallet.wallet_id)
        if packet_id is None:
            return Response(b"{}", status_code=409, media_type=JSON)
        await conn.execute(_OUTBOX, packet_id, campaign_id, wallet.bank_code)
    return Response(msgspec.json.encode({"packet_id": packet_id, "state": "issuing"}), status_code=202,
                    media_type=JSON)


@post("/v1/merchants/{merchant_id:str}/redemptions", status_code=202)
async def notice(request: Request[Any, Any, Any], merchant_id: str) -> Response[bytes]:
    headers, body = request.headers, await request.body()
    key = BARE.merchant_keys.get(merchant_id)
    if key is None:
        raw = await BARE.pool.fetchval("SELECT public_key FROM merchants WHERE id = $1", merchant_id)
        key = BARE.merchant_keys[merchant_id] = Ed25519PublicKey.from_public_bytes(bytes(raw))
    nonce = headers["x-nonce"]
    try:
        key.verify(b64url_decode(headers["x-signature"]), canonical_message(
            "POST", request.scope["raw_path"].decode("latin-1"), headers["x-timestamp"], nonce, body))
    except InvalidSignature:
        return Response(b"{}", status_code=401, media_type=JSON)
    if not await BARE.redis.set(f"mnonce:{merchant_id}:{nonce}", b"1", nx=True, ex=NONCE_TTL_S):
        return Response(b"{}", status_code=401, media_type=JSON)
    item = msgspec.json.decode(body, type=Notice)
    await BARE.pool.execute(_NOTICE, merchant_id, item.merchant_txn_id, item.payment_reference, item.amount_fen,
                            item.basket_fen, item.occurred_at, hashlib.sha256(body).digest())
    return Response(b'{"status":"pending"}', status_code=202, media_type=JSON)


@get("/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


def _unauthenticated(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return Response(b"{}", status_code=401, media_type=JSON)


def create_app() -> Litestar:
    """Entry point for granian --factory, with the environment the product's API gets."""
    global BARE
    BARE = Bare(load_settings())

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await BARE.start()
        try:
            yield
        finally:
            await BARE.registrations.stop()
            await BARE.pool.close()
            await BARE.redis.aclose()
            await BARE.provider_keys.close()

    return Litestar([register, result, claim, notice, ready], lifespan=[lifespan],
                    exception_handlers={Unauthenticated: _unauthenticated}, openapi_config=None)
