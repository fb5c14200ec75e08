"""Signed notices with unusual bodies: refused as 4xx problems before the request's nonce is spent,
and with nothing stored."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as redis_asyncio

from merchants.signing import new_nonce
from tests.merchants.conftest import RegisteredMerchant

REFERENCE = "pkt-" + "0" * 32


def _notice(occurred_at: str, txn: str = "t-1") -> dict[str, Any]:
    return {"merchant_txn_id": txn, "payment_reference": REFERENCE, "amount_fen": 100, "occurred_at": occurred_at}


async def _send(merchant: RegisteredMerchant, body: bytes, nonce: str,
                media_type: str = "application/json") -> httpx.Response:
    path = f"{merchant.client.base_path}/redemptions"
    headers = {**merchant.client.headers_for("POST", path, body, nonce=nonce), "Content-Type": media_type}
    return await merchant.client.http.post(path, content=body, headers=headers)


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                         "2300-01-01T00:00:00Z"])
async def test_an_extreme_occurred_at_is_refused_before_the_nonce_is_spent(
        merchant: RegisteredMerchant, redis: redis_asyncio.Redis, db: asyncpg.Connection, occurred_at: str) -> None:
    nonce = new_nonce()
    refused = await _send(merchant, msgspec.json.encode(_notice(occurred_at)), nonce)
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "validation_failed"
    assert await redis.exists(f"mnonce:{merchant.id}:{nonce}") == 0
    assert await db.fetchval("SELECT count(*) FROM redemption_notices WHERE merchant_id = $1", merchant.id) == 0
    # The same nonce on a well-formed notice is not a replay (the packet is unknown, so it fails later).
    again = await _send(merchant, msgspec.json.encode(_notice("2026-05-01T10:00:00+08:00")), nonce)
    assert again.json()["code"] != "nonce_reused", again.text
    assert await redis.exists(f"mnonce:{merchant.id}:{nonce}") == 1


@pytest.mark.parametrize("body,media_type,status,code", [
    (b'{"merchant_txn_id": "t-1", "merchant_txn_id": "t-2", "payment_reference": "' + REFERENCE.encode()
     + b'", "amount_fen": 100, "occurred_at": "2026-05-01T10:00:00Z"}', "application/json", 400, "duplicate_key"),
    (msgspec.json.encode(_notice("2026-05-01T10:00:00Z", txn="t\u00001")), "application/json", 400, "invalid_text"),
    (msgspec.json.encode(_notice("2026-05-01T10:00:00Z")), "text/plain", 415, "unsupported_media_type"),
])
async def test_a_notice_with_an_unusual_body_is_refused_and_spends_nothing(
        merchant: RegisteredMerchant, redis: redis_asyncio.Redis, db: asyncpg.Connection,
        body: bytes, media_type: str, status: int, code: str) -> None:
    nonce = new_nonce()
    response = await _send(merchant, body, nonce, media_type)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert await redis.exists(f"mnonce:{merchant.id}:{nonce}") == 0
    assert await db.fetchval("SELECT count(*) FROM redemption_notices WHERE merchant_id = $1", merchant.id) == 0
