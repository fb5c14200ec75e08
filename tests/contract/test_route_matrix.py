"""Every route against every kind of caller: no credentials, a garbage token, a citizen's identity
token, a merchant's signature, an auditor's token and an operator's token.

The routes come from the app itself, so a new route fails here until `ACCESS` says who may call
it. "open" means the request got past authentication and authorization (no 401, no 403, no 5xx):
path parameters name real resources for reads and absent ones for writes, and writes carry a
body with a field no request has, so nothing changes.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import httpx
import pytest
from litestar.exceptions import LitestarDeprecationWarning
from litestar.routes import HTTPRoute

from kernel.signing import SigningKey
from merchants.signing import signed_headers
from stimulus.app import create_app
from tests.conftest import Stack
from tests.foundation.helpers import auth, citizen_token, open_campaign

ROLES = ("anonymous", "garbage", "citizen", "merchant", "auditor", "operator")
OPEN = "open"
EXPECTED: dict[str, dict[str, int | str]] = {
    "public": dict.fromkeys(ROLES, OPEN),
    "citizen": {**dict.fromkeys(ROLES, 401), "citizen": OPEN},
    "merchant": {**dict.fromkeys(ROLES, 401), "merchant": OPEN},
    "staff": {**dict.fromkeys(ROLES, 401), "auditor": OPEN, "operator": OPEN},
    "operator": {**dict.fromkeys(ROLES, 401), "auditor": 403, "operator": OPEN},
}

ACCESS: dict[str, str] = {
    # Probes, keys, the public page and its files, the API description.
    "GET /health": "public",
    "GET /ready": "public",
    "GET /v1/keys": "public",
    "GET /campaigns/{campaign_id:str}": "public",
    "GET /static/public/{file_path:path}": "public",
    "HEAD /static/public/{file_path:path}": "public",
    "GET /admin/dashboard": "public",  # a static page; every call it makes needs a staff token
    "GET /static/dashboard/{file_path:path}": "public",
    "HEAD /static/dashboard/{file_path:path}": "public",
    "GET /schema": "public",
    "GET /schema/openapi.json": "public",
    "GET /schema/scalar": "public",
    "GET /schema/swagger": "public",
    "GET /schema/oauth2-redirect.html": "public",
    "GET /schema/{path:str}": "public",
    # The public record of a campaign and its draw; ceremony participants sign their bodies.
    "GET /v1/campaigns": "public",
    "GET /v1/campaigns/{campaign_id:str}": "public",
    "GET /v1/campaigns/{campaign_id:str}/beacon": "public",
    "GET /v1/campaigns/{campaign_id:str}/commitment": "public",
    "GET /v1/campaigns/{campaign_id:str}/tickets/{ticket:int}/proof": "public",
    "GET /v1/campaigns/{campaign_id:str}/tickets/{ticket:int}/result": "public",
    "GET /v1/campaigns/{campaign_id:str}/bundle": "public",
    "GET /v1/campaigns/{campaign_id:str}/draw": "public",
    "GET /v1/campaigns/{campaign_id:str}/registrants": "public",
    "GET /v1/artefacts/{sha256:str}": "public",
    "GET /v1/campaigns/{campaign_id:str}/ceremony": "public",
    "POST /v1/campaigns/{campaign_id:str}/ceremony/{participant_id:str}/commitment": "public",
    "POST /v1/campaigns/{campaign_id:str}/ceremony/{participant_id:str}/reveal": "public",
    # Citizens.
    "POST /v1/campaigns/{campaign_id:str}/registrations": "citizen",
    "GET /v1/campaigns/{campaign_id:str}/registrations/me": "citizen",
    "DELETE /v1/campaigns/{campaign_id:str}/registrations/me": "citizen",
    "GET /v1/campaigns/{campaign_id:str}/result": "citizen",
    "GET /v1/campaigns/{campaign_id:str}/claim": "citizen",
    "POST /v1/campaigns/{campaign_id:str}/claim": "citizen",
    # Merchants, signed.
    "POST /v1/merchants/{merchant_id:str}/redemptions": "merchant",
    "POST /v1/merchants/{merchant_id:str}/redemptions/{txn_id:str}/reversals": "merchant",
    "GET /v1/merchants/{merchant_id:str}/redemptions/{txn_id:str}": "merchant",
    "GET /v1/merchants/{merchant_id:str}": "merchant",
    # Operators act; auditors read.
    "GET /v1/admin/approvals": "staff",
    "GET /v1/admin/approvals/{approval_id:int}": "staff",
    "POST /v1/admin/approvals/{approval_id:int}/approve": "operator",
    "POST /v1/admin/approvals/{approval_id:int}/reject": "operator",
    "GET /v1/admin/jobs": "staff",
    "GET /v1/admin/jobs/{job_id:int}": "staff",
    "POST /v1/admin/jobs/{job_id:int}/retry": "operator",
    "POST /v1/admin/campaigns": "operator",
    "POST /v1/admin/campaigns/{campaign_id:str}/open": "operator",
    "POST /v1/admin/campaigns/{campaign_id:str}/close": "operator",
    "GET /v1/admin/campaigns/{campaign_id:str}": "staff",
    "POST /v1/admin/campaigns/{campaign_id:str}/commitment": "operator",
    "POST /v1/admin/campaigns/{campaign_id:str}/draw": "operator",
    "POST /v1/admin/campaigns/{campaign_id:str}/beacon": "operator",
    "POST /v1/admin/campaigns/{campaign_id:str}/beacon/fetch": "operator",
    "GET /v1/admin/campaigns/{campaign_id:str}/registrations/timeline": "staff",
    "GET /v1/admin/campaigns/{campaign_id:str}/issuance": "staff",
    "POST /v1/admin/campaigns/{campaign_id:str}/issuance": "operator",
    "GET /v1/admin/campaigns/{campaign_id:str}/acceptance": "staff",
    "PUT /v1/admin/campaigns/{campaign_id:str}/acceptance": "operator",
    "GET /v1/admin/campaigns/{campaign_id:str}/report": "staff",
    "GET /v1/admin/campaigns/{campaign_id:str}/report.html": "staff",
    "GET /v1/admin/merchants": "staff",
    "POST /v1/admin/merchants": "operator",
    "POST /v1/admin/merchants/import": "operator",
    "GET /v1/admin/merchants/{merchant_id:str}": "staff",
    "POST /v1/admin/merchants/{merchant_id:str}/suspend": "operator",
    "POST /v1/admin/merchants/{merchant_id:str}/activate": "operator",
    "GET /v1/admin/merchants/{merchant_id:str}/statement": "staff",
    "GET /v1/admin/settlements": "staff",
    "POST /v1/admin/settlements": "operator",
    "GET /v1/admin/settlements/{file_id:int}/rejects": "staff",
    "GET /v1/admin/reconciliation/runs": "staff",
    "POST /v1/admin/reconciliation/runs": "operator",
    "GET /v1/admin/reconciliation/breaks": "staff",
    "POST /v1/admin/reconciliation/breaks/{break_id:int}/resolve": "operator",
}

PARAMETER = re.compile(r"\{(\w+):\w+\}")
ABSENT_ID = 987654321


def app_routes(stack: Stack) -> list[str]:
    """`METHOD path` of every route the app serves (OPTIONS is the framework's own, everywhere)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LitestarDeprecationWarning)
        app = create_app(stack.settings)
    return sorted(f"{method} {route.path}" for route in app.routes if isinstance(route, HTTPRoute)
                  for method in route.methods if method != "OPTIONS")


def concrete(key: str, campaign_id: str, merchant_id: str) -> tuple[str, str]:
    method, template = key.split(" ", 1)
    reads = method in ("GET", "HEAD")
    values = {
        "campaign_id": campaign_id if reads else "matrix-absent",
        "merchant_id": merchant_id if reads or template.startswith("/v1/merchants/") else "matrix-absent",
        "txn_id": "matrix-absent-txn",
        "participant_id": "nobody",
        "ticket": "1",
        "approval_id": str(ABSENT_ID), "job_id": str(ABSENT_ID), "file_id": str(ABSENT_ID), "break_id": str(ABSENT_ID),
        "file_path": "style.css" if "public" in template else "app.js",
        "path": "absent", "sha256": "0" * 64,
    }
    return method, PARAMETER.sub(lambda m: values[m[1]], template)


@pytest.fixture(scope="module")
async def callers(stack: Stack, api_url: str, operator_token: str, auditor_token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        campaign_id = await open_campaign(http, operator_token)
        merchant = await http.post("/v1/admin/merchants", headers=auth(operator_token), json={
            "id": f"matrix-{campaign_id}", "name": "Matrix shop", "category": "5411",
            "district": "430102", "settlement_account": "6222000000000001"})
        assert merchant.status_code == 201, merchant.text
    key = merchant.json()["key"]
    return {"campaign_id": campaign_id, "merchant_id": key["merchant_id"],
            "merchant_key": SigningKey.from_seed(bytes.fromhex(key["private_key_seed_hex"])),
            "citizen": citizen_token(stack.settings, 424242), "auditor": auditor_token,
            "operator": operator_token}


WRITE_BODY = b'{"matrix": true}'


def body_for(method: str) -> bytes:
    return b"" if method in ("GET", "HEAD", "DELETE") else WRITE_BODY


def headers_for(role: str, callers: dict[str, Any], method: str, path: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json"} if body_for(method) else {}
    return {**headers, **_credentials(role, callers, method, path)}


def _credentials(role: str, callers: dict[str, Any], method: str, path: str) -> dict[str, str]:
    if role == "garbage":
        return auth("not-a-token")
    if role == "merchant":
        return signed_headers(callers["merchant_key"], callers["merchant_id"], method, path, body_for(method))
    if role in ("citizen", "auditor", "operator"):
        return auth(callers[role])
    return {}


def test_every_route_has_an_expectation(stack: Stack) -> None:
    routes = app_routes(stack)
    assert sorted(set(routes) - set(ACCESS)) == [], "routes nobody said who may call: add them to ACCESS"
    assert sorted(set(ACCESS) - set(routes)) == [], "ACCESS names routes the app no longer has"


async def test_each_role_gets_what_the_table_says(stack: Stack, api_url: str, callers: dict[str, Any]) -> None:
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for key in app_routes(stack):
            method, path = concrete(key, callers["campaign_id"], callers["merchant_id"])
            for role in ROLES:
                expected = EXPECTED[ACCESS[key]][role]
                answer = await http.request(method, path, content=body_for(method),
                                            headers=headers_for(role, callers, method, path))
                got = answer.status_code
                passed = got not in (401, 403) and got < 500 if expected == OPEN else got == expected
                if expected == OPEN and method not in ("GET", "HEAD"):
                    passed = passed and got >= 400  # a write that did something changed shared state
                if not passed:
                    wrong.append(f"{key} as {role}: {got} (expected {expected}) {answer.text[:120]}")
    assert wrong == [], "\n".join(wrong)


async def test_withdrawing_from_no_campaign_is_campaign_not_found(http: httpx.AsyncClient,
                                                                  callers: dict[str, Any]) -> None:
    answer = await http.delete("/v1/campaigns/matrix-absent/registrations/me", headers=auth(callers["citizen"]))
    assert answer.status_code == 404 and answer.json()["code"] == "campaign_not_found"
