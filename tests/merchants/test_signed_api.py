"""The signed merchant API: the canonical string, and every refusal of a request that fails the
signature check, through the real app over HTTP, with nothing stored for a refused request."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg
import httpx
import msgspec
from hypothesis import given
from hypothesis import strategies as st

from kernel.signing import SigningKey, verify_signature
from merchants.signing import MAX_SKEW_S, b64url, b64url_decode, canonical_message, signed_headers
from tests.foundation.helpers import auth
from tests.merchants.conftest import IssuedCampaign, MerchantFactory, RegisteredMerchant

_KEY = SigningKey.from_seed(bytes(range(32)))
_methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "patch"])
_paths = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80).map(lambda s: "/" + s)
_nonces = st.text(st.sampled_from("ABCxyz019_-"), min_size=16, max_size=64)


@given(_methods, _paths, st.integers(0, 10**11), _nonces, st.binary(max_size=512))
def test_canonical_string_has_six_lines_and_binds_every_part(method: str, path: str, timestamp: int,
                                                             nonce: str, body: bytes) -> None:
    message = canonical_message(method, path, str(timestamp), nonce, body)
    lines = message.decode().split("\n")
    assert lines[:5] == ["stimulus-merchant-v1", method.upper(), path, str(timestamp), nonce]
    assert len(lines) == 6 and len(lines[5]) == 64
    signature = _KEY.sign(message)
    assert verify_signature(_KEY.public_bytes, signature, message)
    assert b64url_decode(b64url(signature)) == signature and "=" not in b64url(signature)
    for changed in (canonical_message(method, path + "x", str(timestamp), nonce, body),
                    canonical_message(method, path, str(timestamp + 1), nonce, body),
                    canonical_message(method, path, str(timestamp), nonce[::-1] + "Q", body),
                    canonical_message(method, path, str(timestamp), nonce, body + b"\0")):
        assert not verify_signature(_KEY.public_bytes, signature, changed)


async def test_a_signed_request_is_accepted(merchant: RegisteredMerchant) -> None:
    response = await merchant.client.me()
    assert response.status_code == 200, response.text
    assert response.json()["id"] == merchant.id and response.json()["status"] == "active"


async def test_the_query_string_is_signed(merchant: RegisteredMerchant) -> None:
    path = f"/v1/merchants/{merchant.id}"
    headers = merchant.client.headers_for("GET", path)
    response = await merchant.client.http.get(path + "?x=1", headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"
    signed = merchant.client.headers_for("GET", path + "?x=1")
    assert (await merchant.client.http.get(path + "?x=1", headers=signed)).status_code == 200


async def test_a_replayed_request_is_refused(merchant: RegisteredMerchant) -> None:
    path = f"/v1/merchants/{merchant.id}"
    headers = merchant.client.headers_for("GET", path)
    assert (await merchant.client.http.get(path, headers=headers)).status_code == 200
    again = await merchant.client.http.get(path, headers=headers)
    assert again.status_code == 401 and again.json()["code"] == "nonce_reused"
    assert again.headers["content-type"].startswith("application/problem+json")


async def test_a_forged_signature_is_refused_and_stores_nothing(
        merchant: RegisteredMerchant, issued: IssuedCampaign, db: asyncpg.Connection) -> None:
    packet = issued.packet()
    payload = {"merchant_txn_id": "forged-1", "payment_reference": packet.payment_reference,
               "amount_fen": 100, "occurred_at": datetime.now(UTC).isoformat()}
    body = msgspec.json.encode(payload)
    path = f"/v1/merchants/{merchant.id}/redemptions"
    forger = SigningKey.generate()
    headers = {**signed_headers(forger, merchant.id, "POST", path, body), "Content-Type": "application/json"}
    response = await merchant.client.http.post(path, content=body, headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"
    # A genuine signature over another body does not cover this one.
    headers = {**merchant.client.headers_for("POST", path, body), "Content-Type": "application/json"}
    tampered = body.replace(b'"amount_fen":100', b'"amount_fen":900')
    response = await merchant.client.http.post(path, content=tampered, headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"
    # Garbage in the signature header.
    headers = {**merchant.client.headers_for("POST", path, body), "X-Signature": "not*base64",
               "Content-Type": "application/json"}
    response = await merchant.client.http.post(path, content=body, headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"
    assert await db.fetchval("SELECT count(*) FROM redemption_notices WHERE merchant_id = $1", merchant.id) == 0


async def test_stale_and_future_timestamps_are_refused(merchant: RegisteredMerchant) -> None:
    now = int(time.time())
    for stamp in (now - MAX_SKEW_S - 5, now + MAX_SKEW_S + 5):
        response = await merchant.client.request("GET", merchant.client.base_path, timestamp=stamp)
        assert response.status_code == 401 and response.json()["code"] == "stale_timestamp", response.text
    inside = await merchant.client.request("GET", merchant.client.base_path, timestamp=now - MAX_SKEW_S + 30)
    assert inside.status_code == 200


async def test_missing_or_malformed_headers_are_refused(merchant: RegisteredMerchant) -> None:
    path = merchant.client.base_path
    assert (await merchant.client.http.get(path)).json()["code"] == "signature_missing"
    for header, value, code in (("X-Nonce", "short", "bad_nonce"), ("X-Nonce", "a" * 15 + "!", "bad_nonce"),
                                ("X-Timestamp", "12.5", "bad_timestamp"), ("X-Timestamp", "-5", "bad_timestamp")):
        headers = {**merchant.client.headers_for("GET", path), header: value}
        response = await merchant.client.http.get(path, headers=headers)
        assert response.status_code == 401 and response.json()["code"] == code, (header, value, response.text)


async def test_unknown_merchant_and_another_merchants_path_are_refused(
        merchant: RegisteredMerchant, make_merchant: MerchantFactory) -> None:
    other = await make_merchant()
    # Signed by `merchant`, for `other`'s resources.
    path = other.client.base_path
    response = await merchant.client.http.get(path, headers=merchant.client.headers_for("GET", path))
    assert response.status_code == 403 and response.json()["code"] == "merchant_mismatch"
    path = "/v1/merchants/nobody-here"
    headers = signed_headers(merchant.client.key, "nobody-here", "GET", path, b"")
    response = await merchant.client.http.get(path, headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "unknown_merchant"


async def test_a_suspended_merchant_is_refused_until_activated(
        merchant: RegisteredMerchant, http: httpx.AsyncClient, operator_token: str, db: asyncpg.Connection,
        issued: IssuedCampaign) -> None:
    packet = issued.packet()
    assert (await merchant.client.redeem("before", packet.payment_reference, 100, datetime.now(UTC))).status_code == 202
    response = await http.post(f"/v1/admin/merchants/{merchant.id}/suspend", json={"reason": "fake purchases"},
                               headers=auth(operator_token))
    assert response.status_code == 200 and response.json()["status"] == "suspended"
    refused = await merchant.client.me()
    assert refused.status_code == 403 and refused.json()["code"] == "merchant_suspended"
    # The payment route checks the status in the transaction that would store the notice.
    refused = await merchant.client.redeem("while-suspended", packet.payment_reference, 100, datetime.now(UTC))
    assert refused.status_code == 403 and refused.json()["code"] == "merchant_suspended"
    assert await db.fetchval("SELECT count(*) FROM redemption_notices WHERE merchant_id = $1", merchant.id) == 1
    response = await http.post(f"/v1/admin/merchants/{merchant.id}/activate", headers=auth(operator_token))
    assert response.status_code == 200 and response.json()["status"] == "active"
    assert (await merchant.client.me()).status_code == 200
    actions = [r["action"] for r in await db.fetch(
        "SELECT action FROM audit_log WHERE subject = $1 ORDER BY seq", merchant.id)]
    assert actions == ["merchant.create", "merchant.suspend", "merchant.activate"]
