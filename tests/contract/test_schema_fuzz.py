"""Schema fuzzing: schemathesis sends requests generated from the served OpenAPI document to the
real API over HTTP, as an anonymous caller, a citizen, a signed merchant and an operator, and
checks every answer: never a 5xx, and never a status, content type or body the document does not
declare for that operation.

The number of examples per operation is bounded (`FUZZ_EXAMPLES`, default 10): four callers times
every operation stays within a few minutes on two cores. Set STIMULUS_FUZZ_EXAMPLES higher for a
longer hunt.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kernel.sample import sample_campaign
from kernel.signing import SigningKey
from merchants.signing import signed_headers
from tests.conftest import Stack
from tests.foundation.helpers import auth, citizen_token

FUZZ_EXAMPLES = int(os.environ.get("STIMULUS_FUZZ_EXAMPLES", "10"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ROLES = ("anonymous", "citizen", "merchant", "operator")
# Operations whose effect reaches past what they are given (a reconciliation run over every
# campaign, a settlement file for a bank): the other tests of the session share this database,
# so an operator does not fuzz them here (their refusals are fuzzed by the other callers).
OPERATOR_SKIPS = {("POST", "/v1/admin/reconciliation/runs"), ("POST", "/v1/admin/settlements")}


class MerchantSignature(requests.auth.AuthBase):
    """Signs each request as it will be sent: the exact path, query and body bytes."""

    def __init__(self, merchant_id: str, key: SigningKey) -> None:
        self.merchant_id = merchant_id
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        assert request.method is not None
        request.headers.update(signed_headers(self.key, self.merchant_id, request.method,
                                              request.path_url, raw))
        return request


@pytest.fixture(scope="module")
def api_schema(api_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{api_url}/schema/openapi.json")


@pytest.fixture(scope="module")
def fuzz_paths(api_url: str, operator_token: str, fuzz_sessions: dict[str, requests.Session]) -> dict[str, str]:
    """Real resources for the path parameters that decide how far a request gets: a merchant
    signs for its own id only, and a citizen's routes need a campaign that is open."""
    spec = sample_campaign("fuzz-campaign", 12)
    created = httpx.post(f"{api_url}/v1/admin/campaigns", headers=auth(operator_token), json=spec)
    assert created.status_code == 201, created.text
    opened = httpx.post(f"{api_url}/v1/admin/campaigns/fuzz-campaign/open", headers=auth(operator_token))
    assert opened.status_code == 200, opened.text
    return {"campaign_id": "fuzz-campaign", "merchant_id": "fuzz-shop"}


@pytest.fixture(scope="module")
def fuzz_sessions(stack: Stack, api_url: str, operator_token: str) -> dict[str, requests.Session]:
    merchant = httpx.post(f"{api_url}/v1/admin/merchants", headers=auth(operator_token), json={
        "id": "fuzz-shop", "name": "Fuzz shop", "category": "5411", "district": "430102",
        "settlement_account": "6222000000000002"})
    assert merchant.status_code in (201, 409), merchant.text
    sessions = {role: requests.Session() for role in ROLES}
    sessions["citizen"].headers.update(auth(citizen_token(stack.settings, 777001)))
    sessions["operator"].headers.update(auth(operator_token))
    if merchant.status_code == 201:
        key = merchant.json()["key"]
        sessions["merchant"].auth = MerchantSignature(
            key["merchant_id"], SigningKey.from_seed(bytes.fromhex(key["private_key_seed_hex"])))
    return sessions


FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("role", ROLES)
def test_no_5xx_and_every_answer_fits_the_document(role: str, api_schema: Any, fuzz_paths: dict[str, str],
                                                   fuzz_sessions: dict[str, requests.Session]) -> None:
    session = fuzz_sessions[role]
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= OPERATOR_SKIPS
    for operation in operations:
        if role == "operator" and (operation.method.upper(), operation.path) in OPERATOR_SKIPS:
            continue

        # Half the examples on real resources (deep into the handlers), half on generated ones.
        real = {name: value for name, value in fuzz_paths.items() if "{" + name + "}" in operation.path}
        strategies = [operation.as_strategy(mode, path_parameters=paths)
                      for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                      for paths in ((real, None) if real else (None,))]

        @FUZZ
        @given(case=st.one_of(strategies))
        def run(case: Any) -> None:
            case.call_and_validate(session=session, checks=CHECKS, timeout=10)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # every operation's failure is reported, not only the first
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    assert failures == [], "\n\n".join(failures)
