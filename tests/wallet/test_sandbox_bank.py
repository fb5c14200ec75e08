"""The sandbox bank as an outside party sees it: its HTTP protocol, signatures and books."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
from litestar.testing import TestClient

from kernel.signing import verify_signature
from sandbox.bank import SEED_FILE, SandboxConfig, create_app
from tests.wallet.conftest import AUTH, RunningBank, credit_request
from wallet_adapter.bank_protocol import KEY_ID_HEADER, SIGNATURE_HEADER, CreditRequest


def _post(bank: RunningBank, path: str, body: object) -> httpx.Response:
    return httpx.post(bank.url + path, content=msgspec.json.encode(body),
                      headers={**AUTH, "Content-Type": "application/json"}, timeout=5)


def _assert_signed(bank: RunningBank, response: httpx.Response) -> None:
    key_id = hashlib.sha256(bank.public_key).hexdigest()[:16]
    assert response.headers[KEY_ID_HEADER] == key_id
    signature = bytes.fromhex(response.headers[SIGNATURE_HEADER])
    assert verify_signature(bank.public_key, signature, response.content)
    assert not verify_signature(bank.public_key, signature, response.content + b" ")


def test_key_is_a_raw_seed_and_every_answer_is_signed(bank: RunningBank) -> None:
    seed = (bank.data_dir / SEED_FILE).read_bytes()
    assert len(seed) == 32
    health = httpx.get(bank.url + "/health")
    assert health.json()["status"] == "ok"
    for response in (
        health,
        httpx.get(bank.url + "/keys"),
        httpx.get(bank.url + "/banks/ICBC/v1/books"),  # no key: 401
        httpx.get(bank.url + "/banks/NOPE/v1/books", headers=AUTH),  # unknown bank: 404
        httpx.get(bank.url + "/no/such/path", headers=AUTH),
        _post(bank, "/banks/ICBC/v1/credits", {"wallet_id": 1}),  # malformed: 400
    ):
        _assert_signed(bank, response)
    assert httpx.get(bank.url + "/banks/ICBC/v1/books").json()["code"] == "unauthenticated"
    assert httpx.get(bank.url + "/banks/NOPE/v1/books",
                     headers=AUTH).json()["code"] == "bank_not_found"


def test_credit_is_idempotent_and_a_changed_payload_conflicts(bank: RunningBank,
                                                              campaign_id: str) -> None:
    request = credit_request(campaign_id, "p-1")
    first = _post(bank, "/banks/CCB/v1/credits", request)
    again = _post(bank, "/banks/CCB/v1/credits", request)
    assert first.status_code == again.status_code == 200
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    assert first.json()["credit_id"] == again.json()["credit_id"]
    # The same instant written in another offset is the same payload.
    shifted = msgspec.structs.replace(
        request, expires_at=request.expires_at.astimezone(datetime.now().astimezone().tzinfo))
    assert _post(bank, "/banks/CCB/v1/credits", shifted).json()["duplicate"] is True
    changed = msgspec.structs.replace(request, amount_fen=request.amount_fen + 1)
    conflict = _post(bank, "/banks/CCB/v1/credits", changed)
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "idempotency_conflict"
    assert conflict.json()["idempotency_key"] == request.idempotency_key
    books = httpx.get(f"{bank.url}/banks/CCB/v1/books", params={"campaign_id": campaign_id},
                      headers=AUTH).json()
    assert books["credits"] == 1 and books["credited_fen"] == 20_000
    assert books["double_credits"] == 0
    status = httpx.get(f"{bank.url}/banks/CCB/v1/credits/{request.idempotency_key}",
                       headers=AUTH).json()
    assert status["status"] == "credited" and status["balance_fen"] == 20_000


def test_refusals_for_wallets_amounts_and_expiry(bank: RunningBank, campaign_id: str) -> None:
    cases = [
        (credit_request(campaign_id, "a", "INVALID-7"), 422, "wallet_not_found"),
        (credit_request(campaign_id, "b", "not a wallet!"), 422, "wallet_not_found"),
        (credit_request(campaign_id, "c", "FROZEN-1"), 422, "wallet_frozen"),
        (credit_request(campaign_id, "d", amount_fen=1_000_001), 422,
         "amount_exceeds_wallet_limit"),
        (credit_request(campaign_id, "e", expires_in=timedelta(seconds=-1)), 422,
         "already_expired"),
    ]
    for request, status, code in cases:
        response = _post(bank, "/banks/ICBC/v1/credits", request)
        assert (response.status_code, response.json()["code"]) == (status, code)
    naive = msgspec.json.decode(msgspec.json.encode(credit_request(campaign_id, "f")))
    naive["expires_at"] = datetime.now(UTC).replace(tzinfo=None).isoformat()
    assert _post(bank, "/banks/ICBC/v1/credits", naive).json()["code"] == "invalid_request"
    missing = httpx.get(f"{bank.url}/banks/ICBC/v1/credits/pkt-unknown", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["code"] == "credit_not_found"
    assert missing.json()["idempotency_key"] == "pkt-unknown"


def test_batch_answers_each_item_in_order(bank: RunningBank, campaign_id: str) -> None:
    items = [credit_request(campaign_id, f"p-{i}", f"W-{i}") for i in range(5)]
    items[2] = credit_request(campaign_id, "p-2", "INVALID-2")
    items.append(items[0])  # a repeat inside the batch is a duplicate, not a second credit
    response = _post(bank, "/banks/BOC/v1/credits:batch", {"items": items})
    results = response.json()["results"]
    assert [r["idempotency_key"] for r in results] == [i.idempotency_key for i in items]
    assert results[2]["error"]["code"] == "wallet_not_found"
    assert results[0]["result"]["duplicate"] is False and results[5]["result"]["duplicate"]
    too_many = _post(bank, "/banks/BOC/v1/credits:batch", {"items": [items[0]] * 501})
    assert too_many.status_code == 400
    books = httpx.get(f"{bank.url}/banks/BOC/v1/books", params={"campaign_id": campaign_id},
                      headers=AUTH).json()
    assert books["credits"] == 4 and books["double_credits"] == 0


def test_batch_status_answers_each_key_in_order_with_null_for_never_credited(
        bank: RunningBank, campaign_id: str) -> None:
    credited = [credit_request(campaign_id, f"p-{i}", f"W-{i}") for i in range(3)]
    assert _post(bank, "/banks/CCB/v1/credits:batch", {"items": credited}).status_code == 200
    never = credit_request(campaign_id, "p-never")
    keys = [credited[2].idempotency_key, never.idempotency_key, credited[0].idempotency_key]
    response = _post(bank, "/banks/CCB/v1/credits:status", {"idempotency_keys": keys})
    assert response.status_code == 200
    _assert_signed(bank, response)
    items = response.json()["items"]
    assert [i["idempotency_key"] for i in items] == keys
    assert items[1]["record"] is None
    assert items[0]["record"]["wallet_id"] == "W-2" and items[2]["record"]["packet_id"] == "p-0"
    assert items[0]["record"]["status"] == "credited" and items[0]["record"]["balance_fen"] > 0
    other_bank = _post(bank, "/banks/BOC/v1/credits:status", {"idempotency_keys": keys}).json()
    assert all(i["record"] is None for i in other_bank["items"])  # keys are per bank
    for bad in ({"idempotency_keys": []}, {"idempotency_keys": keys[:1] * 501}, {"keys": keys}):
        refused = _post(bank, "/banks/CCB/v1/credits:status", bad)
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_request"


def test_books_detect_a_packet_credited_under_two_keys(bank: RunningBank,
                                                      campaign_id: str) -> None:
    right = credit_request(campaign_id, "p-1")
    wrong = CreditRequest(**{**msgspec.structs.asdict(right), "idempotency_key": "careless-1"})
    assert _post(bank, "/banks/ICBC/v1/credits", right).status_code == 200
    assert _post(bank, "/banks/ICBC/v1/credits", wrong).status_code == 200
    books = httpx.get(f"{bank.url}/banks/ICBC/v1/books", params={"campaign_id": campaign_id},
                      headers=AUTH).json()
    assert books["credits"] == 2 and books["double_credits"] == 1


def test_the_litestar_app_alone_serves_the_same_bank(tmp_path: Path) -> None:
    """`create_app` (mounted routes, no fast path in front) for embedding in other servers."""
    config = SandboxConfig(data_dir=tmp_path, banks=("ICBC",))
    request = credit_request("t-mount", "p-1")
    with TestClient(create_app(config)) as client:
        first = client.post("/banks/ICBC/v1/credits", content=msgspec.json.encode(request),
                            headers=AUTH)
        again = client.post("/banks/ICBC/v1/credits", content=msgspec.json.encode(request),
                            headers=AUTH)
        books = client.get("/banks/ICBC/v1/books", headers=AUTH)
        health = client.get("/health")
    assert first.status_code == 200 and again.json()["duplicate"] is True
    assert books.json()["credits"] == 1
    assert health.json()["key_id"] == first.headers[KEY_ID_HEADER]
