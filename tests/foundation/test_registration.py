"""Registration through the real app over HTTP, against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from lottery.leaf import decode_leaf
from lottery.registration import verify_receipt
from sandbox.citizens import synthetic_citizen
from sandbox.idp_keys import KeyStore, Signer
from tests.conftest import Stack
from tests.foundation.helpers import auth, citizen_token, open_campaign, window


async def test_register_returns_signed_receipt_and_stores_only_hmac(
        http: httpx.AsyncClient, stack: Stack, operator_token: str, db: asyncpg.Connection) -> None:
    campaign_id = await open_campaign(http, operator_token)
    token = citizen_token(stack.settings, 1)
    response = await http.post(f"/v1/campaigns/{campaign_id}/registrations", headers=auth(token))
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert receipt["campaign_id"] == campaign_id
    assert verify_receipt(receipt, stack.settings.service_key.public_bytes)
    leaf_campaign, ticket, pseudonym, _stratum = decode_leaf(bytes.fromhex(receipt["leaf_hex"]))
    assert (leaf_campaign, ticket) == (campaign_id, receipt["ticket"])
    row = await db.fetchrow("SELECT * FROM registrations WHERE campaign_id = $1", campaign_id)
    assert row is not None and row["ticket"] == ticket and row["pseudonym"] == pseudonym
    resident = synthetic_citizen(1).resident_id
    dumped = json.dumps({k: (v.hex() if isinstance(v, bytes) else str(v)) for k, v in dict(row).items()})
    assert resident not in dumped and synthetic_citizen(1).phone not in dumped
    assert bytes(row["id_hmac"]).hex() != pseudonym


async def test_repeat_same_payload_returns_first_ticket_and_different_payload_is_409(
        http: httpx.AsyncClient, stack: Stack, operator_token: str) -> None:
    campaign_id = await open_campaign(http, operator_token)
    headers = auth(citizen_token(stack.settings, 2))
    url = f"/v1/campaigns/{campaign_id}/registrations"
    body = {"wallet": {"bank_code": "ICBC", "wallet_id": "w-2"}}
    first = await http.post(url, headers=headers, json=body)
    again = await http.post(url, headers=headers, json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["ticket"] == again.json()["ticket"]
    other = await http.post(url, headers=headers, json={"wallet": {"bank_code": "CCB", "wallet_id": "w-2"}})
    assert other.status_code == 409
    assert other.json()["code"] == "registration_conflict"
    assert other.headers["content-type"].startswith("application/problem+json")


async def test_concurrent_registration_of_same_person_yields_one_ticket(
        http: httpx.AsyncClient, stack: Stack, operator_token: str, db: asyncpg.Connection) -> None:
    campaign_id = await open_campaign(http, operator_token)
    headers = auth(citizen_token(stack.settings, 3))
    url = f"/v1/campaigns/{campaign_id}/registrations"
    # Stays under the identity's burst allowance, so every answer is about the registration.
    responses = await asyncio.gather(*[http.post(url, headers=headers) for _ in range(8)])
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 1 and codes.count(200) == 7, codes
    assert len({r.json()["ticket"] for r in responses}) == 1
    count = await db.fetchval("SELECT count(*) FROM registrations WHERE campaign_id = $1", campaign_id)
    assert count == 1


async def test_many_citizens_each_get_one_ticket(
        http: httpx.AsyncClient, stack: Stack, operator_token: str, db: asyncpg.Connection) -> None:
    campaign_id = await open_campaign(http, operator_token)
    url = f"/v1/campaigns/{campaign_id}/registrations"
    tokens = [citizen_token(stack.settings, 100 + n) for n in range(200)]
    responses = await asyncio.gather(*[http.post(url, headers=auth(t)) for t in tokens])
    assert all(r.status_code == 201 for r in responses)
    tickets = {r.json()["ticket"] for r in responses}
    assert len(tickets) == 200
    stored = await db.fetch("SELECT ticket FROM registrations WHERE campaign_id = $1", campaign_id)
    assert {r["ticket"] for r in stored} == tickets


async def test_forged_expired_and_malformed_tokens_are_refused(
        http: httpx.AsyncClient, stack: Stack, operator_token: str, db: asyncpg.Connection,
        tmp_path: Path) -> None:
    campaign_id = await open_campaign(http, operator_token)
    url = f"/v1/campaigns/{campaign_id}/registrations"
    settings = stack.settings
    forger = Signer(KeyStore(tmp_path).ensure("EdDSA"), settings.idp_issuer)
    forged_unknown = forger.citizen_token(synthetic_citizen(5), audience=settings.idp_audience)
    good = citizen_token(settings, 5)
    head, payload, _ = good.split(".")
    _, _, other_sig = citizen_token(settings, 6).split(".")
    tampered = f"{head}.{payload}.{other_sig}"
    expired = citizen_token(settings, 5, now=1_600_000_000, ttl_s=60)
    cases = {
        "token_unknown_key": forged_unknown,
        "token_signature_invalid": tampered,
        "token_expired": expired,
        "token_malformed": "not-a-jwt",
    }
    for code, token in cases.items():
        response = await http.post(url, headers=auth(token))
        assert response.status_code == 401, (code, response.text)
        assert response.json()["code"] == code
    missing = await http.post(url)
    assert missing.status_code == 401 and missing.json()["code"] == "identity_token_required"
    bad_id = citizen_token(settings, 5, sub="110101199003077777")
    response = await http.post(url, headers=auth(bad_id))
    assert response.status_code == 401 and response.json()["code"] == "invalid_resident_id"
    count = await db.fetchval("SELECT count(*) FROM registrations WHERE campaign_id = $1", campaign_id)
    assert count == 0


async def test_bad_bodies_are_clear_4xx_and_write_nothing(
        http: httpx.AsyncClient, stack: Stack, operator_token: str, db: asyncpg.Connection) -> None:
    campaign_id = await open_campaign(http, operator_token)
    url = f"/v1/campaigns/{campaign_id}/registrations"
    headers = {**auth(citizen_token(stack.settings, 7)), "content-type": "application/json"}
    cases = [
        (b"{not json", 400, "malformed_json"),
        (b'{"wallet": 5}', 400, "validation_failed"),
        (b'{"surprise": 1}', 400, "validation_failed"),
        (b'{"wallet": {"bank_code": "ICBC", "wallet_id": ""}}', 400, "invalid_wallet"),
        (b'{"wallet": {"bank_code": "ICBC", "wallet_id": "' + b"x" * 70_000 + b'"}}', 413, "body_too_large"),
    ]
    for body, status, code in cases:
        response = await http.post(url, headers=headers, content=body)
        assert response.status_code == status, (code, response.text[:200])
        problem = response.json()
        assert problem["code"] == code and problem["status"] == status and problem["request_id"]
    count = await db.fetchval("SELECT count(*) FROM registrations WHERE campaign_id = $1", campaign_id)
    assert count == 0


async def test_window_edges(http: httpx.AsyncClient, stack: Stack, operator_token: str,
                            db: asyncpg.Connection) -> None:
    not_yet = await open_campaign(http, operator_token, **window(opens_in_s=3600, closes_in_s=7200))
    token = auth(citizen_token(stack.settings, 8))
    response = await http.post(f"/v1/campaigns/{not_yet}/registrations", headers=token)
    assert response.status_code == 409 and response.json()["code"] == "registration_not_open"
    closing = await open_campaign(http, operator_token, **window(opens_in_s=-10, closes_in_s=2.0))
    response = await http.post(f"/v1/campaigns/{closing}/registrations", headers=token)
    assert response.status_code == 201
    await asyncio.sleep(2.6)
    late = await http.post(f"/v1/campaigns/{closing}/registrations",
                           headers=auth(citizen_token(stack.settings, 9)))
    assert late.status_code == 409 and late.json()["code"] == "registration_closed"
    count = await db.fetchval("SELECT count(*) FROM registrations WHERE campaign_id = $1", closing)
    assert count == 1


async def test_closed_campaign_refuses_and_withdraw_only_before_close(
        http: httpx.AsyncClient, stack: Stack, operator_token: str) -> None:
    campaign_id = await open_campaign(http, operator_token)
    url = f"/v1/campaigns/{campaign_id}/registrations"
    alice, bob = auth(citizen_token(stack.settings, 10)), auth(citizen_token(stack.settings, 11))
    assert (await http.post(url, headers=alice)).status_code == 201
    assert (await http.post(url, headers=bob)).status_code == 201
    own = await http.get(url + "/me", headers=alice)
    assert own.status_code == 200 and own.json()["receipt"]["ticket"] == own.json()["ticket"]
    withdrawn = await http.delete(url + "/me", headers=alice)
    assert withdrawn.status_code == 200
    assert (await http.get(url + "/me", headers=alice)).status_code == 404
    closed = await http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(operator_token))
    assert closed.status_code == 200 and closed.json()["state"] == "closed"
    late = await http.post(url, headers=auth(citizen_token(stack.settings, 12)))
    assert late.status_code == 409 and late.json()["code"] == "registration_closed"
    too_late = await http.delete(url + "/me", headers=bob)
    assert too_late.status_code == 409 and too_late.json()["code"] == "registration_not_open"
    reopened = await http.post(f"/v1/admin/campaigns/{campaign_id}/open", headers=auth(operator_token))
    assert reopened.status_code == 409 and reopened.json()["code"] == "wrong_campaign_state"


async def test_eligibility_refusals_have_codes_and_are_counted(
        http: httpx.AsyncClient, stack: Stack, operator_token: str, db: asyncpg.Connection) -> None:
    campaign_id = await open_campaign(http, operator_token)
    url = f"/v1/campaigns/{campaign_id}/registrations"
    settings = stack.settings
    cases: dict[str, dict[str, Any]] = {
        "ineligible_location": {"city": "1101"},
        "ineligible_phone": {"phone": "+85291234567"},
        "ineligible_social_insurance": {"si_city": "4401"},
        "ineligible_too_young": {"sub": "430102201501010012"},
        "ineligible_district": {"district": "430199"},
    }
    from kernel.resident_id import check_char

    young = "43010220150101001"
    cases["ineligible_too_young"] = {"sub": young + check_char(young)}
    for code, claims in cases.items():
        response = await http.post(url, headers=auth(citizen_token(settings, 20, **claims)))
        assert response.status_code == 403, (code, response.text)
        assert response.json()["code"] == code
    rows = await db.fetch("SELECT code, attempts FROM ineligible_attempts WHERE campaign_id = $1", campaign_id)
    assert {r["code"]: r["attempts"] for r in rows} == dict.fromkeys(cases, 1)
    assert await db.fetchval("SELECT count(*) FROM registrations WHERE campaign_id = $1", campaign_id) == 0


async def test_idempotency_key_replays_and_refuses_reuse(
        http: httpx.AsyncClient, stack: Stack, operator_token: str) -> None:
    campaign_id = await open_campaign(http, operator_token)
    url = f"/v1/campaigns/{campaign_id}/registrations"
    headers = {**auth(citizen_token(stack.settings, 30)), "Idempotency-Key": "k-1"}
    first = await http.post(url, headers=headers, json={})
    replay = await http.post(url, headers=headers, json={})
    assert first.status_code == 201 and replay.status_code == 201
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.content == first.content
    reused = await http.post(url, headers=headers, json={"wallet": {"bank_code": "ICBC", "wallet_id": "x"}})
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"


async def test_identity_rate_limit_answers_429_with_retry_after(
        http: httpx.AsyncClient, stack: Stack, operator_token: str) -> None:
    campaign_id = await open_campaign(http, operator_token)
    headers = auth(citizen_token(stack.settings, 40))
    url = f"/v1/campaigns/{campaign_id}/registrations/me"
    post_url = f"/v1/campaigns/{campaign_id}/registrations"
    assert (await http.post(post_url, headers=headers)).status_code == 201
    statuses = [(await http.post(post_url, headers=headers)) for _ in range(15)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["code"] == "rate_limited"
    assert (await http.get(url, headers=headers)).status_code == 200
