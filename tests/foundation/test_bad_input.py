"""Unusual input over real HTTP: each is a 4xx problem with a stable code, and nothing is written.

Control characters in paths, queries, headers and bodies; integers beyond the columns; datetimes
at the ends of the calendar; bodies that are not JSON by their media type; duplicate JSON keys.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from kernel.sample import sample_campaign
from tests.conftest import Stack
from tests.foundation.helpers import auth, citizen_token, new_campaign_id, open_campaign

BIG = str(2**63)
NUMBERS = iter(range(7_300_000, 7_400_000))


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


@pytest.mark.parametrize("path", ["/v1/campaigns/%00", "/campaigns/%00", "/v1/campaigns/%00/bundle",
                                  "/v1/campaigns/a%01b/commitment", "/v1/campaigns/x%7F/beacon",
                                  "/v1/campaigns/x%C2%85/draw"])
async def test_control_characters_in_public_paths_are_invalid_text(http: httpx.AsyncClient, path: str) -> None:
    _problem(await http.get(path), 400, "invalid_text")


@pytest.mark.parametrize("query", [{"status": "a\x00"}, {"bank": "\x00"}, {"campaign": "c\x1b"},
                                   {"break_class": "\x00"}, {"\x00": "1"}])
async def test_control_characters_in_admin_filters_are_invalid_text(
        http: httpx.AsyncClient, operator_token: str, query: dict[str, str]) -> None:
    for path in ("/v1/admin/approvals", "/v1/admin/settlements", "/v1/admin/reconciliation/breaks"):
        _problem(await http.get(path, params=query, headers=auth(operator_token)), 400, "invalid_text")


async def test_a_query_that_is_not_utf8_is_invalid_text(http: httpx.AsyncClient, operator_token: str) -> None:
    _problem(await http.get("/v1/admin/approvals?status=%FF", headers=auth(operator_token)), 400, "invalid_text")


@pytest.mark.parametrize("method,path", [
    ("GET", f"/v1/admin/approvals/{BIG}"), ("POST", f"/v1/admin/approvals/{BIG}/approve"),
    ("GET", f"/v1/admin/settlements/{BIG}/rejects"), ("GET", f"/v1/admin/approvals/-{2**63 + 1}")])
async def test_path_ids_beyond_bigint_are_refused(http: httpx.AsyncClient, operator_token: str,
                                                  method: str, path: str) -> None:
    _problem(await http.request(method, path, headers=auth(operator_token)), 400, "validation_failed")


async def test_a_ticket_beyond_bigint_is_a_404_not_an_error(http: httpx.AsyncClient) -> None:
    """The ticket routes answer it as a ticket never committed (tests/web/test_public_page.py)."""
    for answer, code in (("proof", "not_committed"), ("result", "campaign_not_found")):
        _problem(await http.get(f"/v1/campaigns/c-1/tickets/{2**64}/{answer}"), 404, code)


async def test_resolving_a_break_beyond_bigint_writes_nothing(http: httpx.AsyncClient, operator_token: str,
                                                              db: asyncpg.Connection) -> None:
    before = await db.fetchval("SELECT count(*) FROM audit_log")
    response = await http.post(f"/v1/admin/reconciliation/breaks/{BIG}/resolve", json={"resolution": "seen"},
                               headers=auth(operator_token))
    _problem(response, 400, "validation_failed")
    assert await db.fetchval("SELECT count(*) FROM audit_log") == before


@pytest.mark.parametrize("value", [BIG, f"-{2**63 + 1}", "99999999999999999999999"])
async def test_a_query_integer_beyond_bigint_is_refused(http: httpx.AsyncClient, operator_token: str,
                                                                value: str) -> None:
    response = await http.get("/v1/admin/reconciliation/breaks", params={"after": value},
                              headers=auth(operator_token))
    _problem(response, 400, "validation_failed")


async def _create(http: httpx.AsyncClient, token: str, spec: dict[str, Any]) -> httpx.Response:
    return await http.post("/v1/admin/campaigns", json=spec, headers=auth(token))


async def _campaign_count(db: asyncpg.Connection, campaign_id: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM campaigns WHERE id = $1", campaign_id))


@pytest.mark.parametrize("change", [
    {"name": "night\x00market"}, {"name": "tab\there"}, {"name": "bell\u0085"},
    {"budget_fen": 2**63}, {"budget_fen": 2**64 + 5},
    {"tiers": [{"tier": "a", "amount_fen": 2**63, "count": 1}]},
    {"tiers": [{"tier": "a", "amount_fen": 100, "count": 2**31}]},
    {"registration_opens_at": "0001-01-01T00:00:00+14:00"},
    {"spending_deadline": "9999-12-31T23:59:59-14:00"},
    {"claim_deadline": "1999-12-31T23:59:59Z"},
    {"eligibility": {"min_age": 10**6}},
])
async def test_a_campaign_with_unusual_values_is_refused_and_not_stored(
        http: httpx.AsyncClient, operator_token: str, db: asyncpg.Connection, change: dict[str, Any]) -> None:
    campaign_id = new_campaign_id("bad")
    spec = {**sample_campaign(campaign_id, 10), **change}
    response = await _create(http, operator_token, spec)
    code = "invalid_text" if "name" in change else "validation_failed"
    _problem(response, 400, code)
    assert await _campaign_count(db, campaign_id) == 0


async def test_a_text_plain_body_is_refused_with_415(http: httpx.AsyncClient, operator_token: str,
                                                     db: asyncpg.Connection) -> None:
    campaign_id = new_campaign_id("txt")
    body = json.dumps(sample_campaign(campaign_id, 10)).encode()
    for headers in ({"Content-Type": "text/plain"}, {}):
        response = await http.post("/v1/admin/campaigns", content=body, headers={**auth(operator_token), **headers})
        _problem(response, 415, "unsupported_media_type")
    assert await _campaign_count(db, campaign_id) == 0
    accepted = await http.post("/v1/admin/campaigns", content=body,
                               headers={**auth(operator_token), "Content-Type": "application/json; charset=utf-8"})
    assert accepted.status_code == 201, accepted.text


async def test_a_csv_route_refuses_json(http: httpx.AsyncClient, operator_token: str) -> None:
    response = await http.post("/v1/admin/merchants/import", json={"id": "x"}, headers=auth(operator_token))
    body = _problem(response, 415, "unsupported_media_type")
    assert body["accepted"] == ["text/csv"]


async def test_duplicate_keys_are_refused(http: httpx.AsyncClient, operator_token: str,
                                          db: asyncpg.Connection) -> None:
    campaign_id = new_campaign_id("dup")
    spec = json.dumps(sample_campaign(campaign_id, 10))
    for body in (spec[:-1] + ', "name": "other"}',  # a top-level key twice
                 spec[:-1] + ', "\\u006eame": "other"}',  # the same key, escaped
                 spec.replace('"amount_fen": ', '"amount_fen": 1, "amount_fen": ', 1)):  # inside a tier
        response = await http.post("/v1/admin/campaigns", content=body.encode(),
                                   headers={**auth(operator_token), "Content-Type": "application/json"})
        _problem(response, 400, "duplicate_key")
    assert await _campaign_count(db, campaign_id) == 0


async def test_registration_refuses_text_plain_duplicate_keys_and_control_characters(
        http: httpx.AsyncClient, stack: Stack, operator_token: str, db: asyncpg.Connection) -> None:
    campaign_id = await open_campaign(http, operator_token)
    token = citizen_token(stack.settings, next(NUMBERS))
    path = f"/v1/campaigns/{campaign_id}/registrations"
    wallet = '{"wallet": {"bank_code": "ICBC", "wallet_id": "w-1"}}'
    refusals = [
        ("text/plain", wallet, 415, "unsupported_media_type"),
        ("application/json", '{"wallet": {"bank_code": "ICBC", "bank_code": "HSBC", "wallet_id": "w-1"}}',
         400, "duplicate_key"),
        ("application/json", '{"wallet": {"bank_code": "ICBC", "wallet_id": "w\\u00001"}}', 400, "invalid_text"),
    ]
    for media_type, body, status, code in refusals:
        response = await http.post(path, content=body.encode(),
                                   headers={**auth(token), "Content-Type": media_type, "Idempotency-Key": code})
        _problem(response, status, code)
    assert await db.fetchval("SELECT count(*) FROM registrations WHERE campaign_id = $1", campaign_id) == 0
    accepted = await http.post(path, content=wallet.encode(),
                               headers={**auth(token), "Content-Type": "application/json"})
    assert accepted.status_code == 201, accepted.text


async def test_control_characters_in_a_header_are_refused(api_url: str, stack: Stack) -> None:
    """httpx will not send them, so this speaks HTTP/1.1 over a socket."""
    url = urlsplit(api_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    token = citizen_token(stack.settings, next(NUMBERS))
    writer.write(b"GET /v1/campaigns HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Authorization: Bearer " + token.encode() + b"\r\nX-Request-Note: a\x01b\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    # The HTTP server may refuse the line itself (400); if it passes it on, the guard refuses it.
    assert status_line.split()[1] == b"400", status_line
