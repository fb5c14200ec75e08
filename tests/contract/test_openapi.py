"""The OpenAPI document says who may call each operation, what it takes and every problem it can
answer with, as problem details."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from litestar.exceptions import LitestarDeprecationWarning

from kernel.contract import Access, access_of, openapi_document, operations
from kernel.problem_codes import CODES
from kernel.problems import PROBLEM_MEDIA_TYPE
from stimulus.app import create_app
from tests.conftest import Stack


@pytest.fixture(scope="module")
def app_and_doc(stack: Stack) -> tuple[Any, dict[str, Any]]:
    # Building the app in this process: the routes' inferred dependencies warn (Litestar 3 notice).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LitestarDeprecationWarning)
        app = create_app(stack.settings)
        return app, openapi_document(app)


def _problem_codes(operation: dict[str, Any]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for status, response in operation["responses"].items():
        if int(status) >= 400:
            content = response["content"]
            assert list(content) == [PROBLEM_MEDIA_TYPE]
            codes = content[PROBLEM_MEDIA_TYPE]["schema"]["allOf"][1]["properties"]["code"]["enum"]
            found[int(status)] = set(codes)
    return found


def test_every_operation_declares_problems_security_and_storage_outages(app_and_doc: Any) -> None:
    app, doc = app_and_doc
    assert "Problem" in doc["components"]["schemas"]
    seen = 0
    for path, method, handler in operations(app):
        operation = doc["paths"][path][method.lower()]
        problems = _problem_codes(operation)
        seen += 1
        assert problems, f"{method} {path} declares no problem"
        for status, codes in problems.items():
            assert all(status in CODES[code].statuses for code in codes), (method, path, status)
        access = access_of(handler)
        if access is Access.PUBLIC:
            assert operation["security"] == [], (method, path)
            assert 401 not in problems, (method, path)
        else:
            assert operation["security"], (method, path)
            assert 401 in problems, (method, path)
        if "services" in handler.fn.__code__.co_varnames:
            assert 503 in problems, (method, path)
    assert seen > 50


def test_operations_say_which_credentials_they_take(app_and_doc: Any) -> None:
    _, doc = app_and_doc
    paths = doc["paths"]
    assert paths["/v1/campaigns/{campaign_id}/registrations"]["post"]["security"] == [{"identityToken": []}]
    assert paths["/v1/admin/campaigns"]["post"]["security"] == [{"staffToken": []}]
    signed = paths["/v1/merchants/{merchant_id}/redemptions"]["post"]["security"]
    assert {doc["components"]["securitySchemes"][n]["name"] for n in signed[0]} == {
        "X-Merchant-Id", "X-Timestamp", "X-Nonce", "X-Signature"}
    assert paths["/v1/campaigns/{campaign_id}"]["get"]["security"] == []


def test_route_codes_are_listed_under_their_status(app_and_doc: Any) -> None:
    _, doc = app_and_doc
    claim = _problem_codes(doc["paths"]["/v1/campaigns/{campaign_id}/claim"]["post"])
    assert {"wallet_already_bound", "claim_deadline_passed"} <= claim[409]
    assert {"identity_token_required", "token_expired"} <= claim[401]
    assert "rate_limited" in claim[429]
    campaign = _problem_codes(doc["paths"]["/v1/admin/campaigns/{campaign_id}"]["get"])
    assert campaign[404] == {"campaign_not_found"}
    assert 403 not in campaign  # auditors and operators alike may read it
    assert doc["paths"]["/v1/admin/campaigns/{campaign_id}"]["get"]["description"].endswith(
        "Roles: operator, auditor.")
    opening = doc["paths"]["/v1/admin/campaigns/{campaign_id}/open"]["post"]
    assert _problem_codes(opening)[403] == {"role_required"}
    assert opening["description"].endswith("Roles: operator.")


def test_request_bodies_say_which_fields_are_required_and_refuse_others(app_and_doc: Any) -> None:
    _, doc = app_and_doc
    schemas = doc["components"]["schemas"]
    spec = schemas["CampaignSpec"]
    assert spec["additionalProperties"] is False
    assert {"id", "budget_fen", "tiers"} <= set(spec["required"])
    assert "participants" not in spec["required"]
    body = doc["paths"]["/v1/campaigns/{campaign_id}/registrations"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert schemas[ref]["additionalProperties"] is False
    notice = doc["paths"]["/v1/merchants/{merchant_id}/redemptions"]["post"]
    assert "requestBody" in notice and set(notice["responses"]) >= {"200", "202", "401", "403"}
    receipt = doc["paths"]["/v1/campaigns/{campaign_id}/registrations"]["post"]["responses"]["201"]
    assert receipt["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Receipt"}


async def test_the_served_document_is_the_completed_one(http: Any) -> None:
    answer = await http.get("/schema/openapi.json")
    assert answer.status_code == 200
    served = answer.json()
    assert "Problem" in served["components"]["schemas"]
    assert PROBLEM_MEDIA_TYPE in served["paths"]["/v1/admin/campaigns"]["post"]["responses"]["401"]["content"]


@pytest.mark.parametrize("body", [b"{", b"\x00", b'{"id": "a'])
async def test_a_body_litestar_cannot_decode_is_malformed_json(http: Any, operator_token: str,
                                                                body: bytes) -> None:
    answer = await http.post("/v1/admin/campaigns", content=body, headers={
        "Authorization": f"Bearer {operator_token}", "Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    assert answer.json()["code"] == "malformed_json"


@pytest.mark.parametrize("path", ["/v1/admin/approvals/{big}", "/v1/admin/settlements/{big}/rejects"])
async def test_path_ids_beyond_bigint_are_refused_as_invalid(http: Any, operator_token: str, path: str) -> None:
    for big in (2**63, -(2**63) - 1):
        answer = await http.get(path.format(big=big), headers={"Authorization": f"Bearer {operator_token}"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "validation_failed"
