"""The signed merchant API: redemption notices, their reversals, and their status.

Every handler authenticates the request first (`merchants.signing`): nothing is read or stored
for a request that fails it. A body is decoded, and refused if invalid, before the request's nonce
is spent, so a refused notice can be corrected and signed again without a replay refusal. A new notice is acknowledged 202 `pending` once it has
committed; the same notice again is answered 200 with the stored notice and
`Idempotent-Replayed: true`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import Parameter

from kernel.contract import contract
from kernel.services import Services
from merchants import redemptions, registry, signing
from merchants.redemptions import Notice, PaymentNotice, ReversalNotice, Stored

MEDIA_TYPE = "application/json"
MerchantId = Parameter(pattern=registry.MERCHANT_ID_PATTERN.pattern, description="merchant id")
TxnId = Parameter(pattern=redemptions.TXN_ID_PATTERN, description="the merchant's transaction id")


class MerchantSelf(msgspec.Struct, frozen=True):
    id: str
    name: str
    category: str
    district: str
    status: str
    key_id: str


def _status_url(merchant_id: str, txn_id: str) -> str:
    return f"/v1/merchants/{merchant_id}/redemptions/{txn_id}"


def _answer(stored: Stored) -> Response[bytes]:
    notice = stored.notice
    headers = {"Location": _status_url(notice.merchant_id, notice.merchant_txn_id)}
    if stored.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(msgspec.json.encode(notice), status_code=200 if stored.replayed else 202,
                    media_type=MEDIA_TYPE, headers=headers)


@contract("malformed_json", "invalid_basket", "merchant_txn_id_reused", "unknown_payment_reference",
          "packet_not_live", "spending_closed", "occurred_in_future", "merchant_not_eligible",
          "amount_exceeds_balance", signed=True, body=PaymentNotice,
          answers=[(202, Notice, MEDIA_TYPE), (200, Notice, MEDIA_TYPE)])
@post("/v1/merchants/{merchant_id:str}/redemptions", tags=["merchant"], status_code=202,
      summary="Tell us a packet paid for a purchase (signed); 202 pending, reconciled later")
async def post_redemption(request: Request[Any, Any, Any], services: Services,
                          merchant_id: str = MerchantId) -> Response[bytes]:
    """Body `PaymentNotice`. 202 with the stored notice (`status: pending`); the same notice again
    200 with `Idempotent-Replayed: true`; the same `merchant_txn_id` with another payload 409."""
    nonce = await signing.check_signature(services, request, merchant_id)
    notice = redemptions.decode(await request.body(), PaymentNotice)
    assert isinstance(notice, PaymentNotice)
    await signing.use_nonce(services, merchant_id, nonce)
    return _answer(await redemptions.submit_payment(services.pool, merchant_id, notice))


@contract("malformed_json", "invalid_basket", "merchant_txn_id_reused", "payment_not_found", "not_a_payment",
          "payment_in_break", "reversal_exceeds_payment", signed=True, body=ReversalNotice,
          answers=[(202, Notice, MEDIA_TYPE), (200, Notice, MEDIA_TYPE)])
@post("/v1/merchants/{merchant_id:str}/redemptions/{txn_id:str}/reversals", tags=["merchant"], status_code=202,
      summary="Refund (part of) a payment notice (signed); the reversal has its own merchant_txn_id")
async def post_reversal(request: Request[Any, Any, Any], services: Services, merchant_id: str = MerchantId,
                        txn_id: str = TxnId) -> Response[bytes]:
    merchant, nonce = await signing.check_merchant(services, request, merchant_id)
    notice = redemptions.decode(await request.body(), ReversalNotice)
    assert isinstance(notice, ReversalNotice)
    await signing.use_nonce(services, merchant_id, nonce)
    return _answer(await redemptions.submit_reversal(services.pool, merchant, txn_id, notice))


@contract("notice_not_found", signed=True)
@get("/v1/merchants/{merchant_id:str}/redemptions/{txn_id:str}", tags=["merchant"],
     summary="A notice's status: pending, matched or break (signed)")
async def get_redemption(request: Request[Any, Any, Any], services: Services, merchant_id: str = MerchantId,
                         txn_id: str = TxnId) -> Notice:
    merchant = await signing.authenticate(services, request, merchant_id)
    return await redemptions.find(services.pool, merchant.id, txn_id)


@contract(signed=True)
@get("/v1/merchants/{merchant_id:str}", tags=["merchant"], summary="The signing merchant's own record (signed)")
async def get_self(request: Request[Any, Any, Any], services: Services, merchant_id: str = MerchantId) -> MerchantSelf:
    merchant = await signing.authenticate(services, request, merchant_id)
    return MerchantSelf(merchant.id, merchant.name, merchant.category, merchant.district, merchant.status,
                        merchant.key_id)


ROUTES = [post_redemption, post_reversal, get_redemption, get_self]
