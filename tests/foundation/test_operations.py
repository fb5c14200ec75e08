"""Operations: health, readiness, metrics, OpenAPI, problem details, migrations and the audit chain."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from kernel import audit_log
from kernel import db as stimulus_db
from tests.conftest import Stack
from tests.foundation.helpers import auth, citizen_token, open_campaign


async def test_health_ready_metrics_and_schema(http: httpx.AsyncClient, stack: Stack,
                                               operator_token: str, metrics_url: str) -> None:
    assert (await http.get("/health")).json() == {"status": "live"}
    assert (await http.get("/ready")).status_code == 200
    campaign_id = await open_campaign(http, operator_token)
    await http.post(f"/v1/campaigns/{campaign_id}/registrations", headers=auth(citizen_token(stack.settings, 500)))
    # Metrics are not on the public port, for anyone: only on the metrics listener.
    for headers in ({}, auth(operator_token)):
        assert (await http.get("/metrics", headers=headers)).status_code == 404
    async with httpx.AsyncClient(timeout=30) as client:
        metrics = (await client.get(metrics_url)).text
    assert "stimulus_registrations_total" in metrics
    assert 'route="/v1/campaigns/{campaign_id}/registrations"' in metrics, metrics[:2000]
    schema = (await http.get("/schema/openapi.json")).json()
    assert "/v1/campaigns/{campaign_id}/registrations" in schema["paths"]
    assert (await http.get("/schema")).status_code == 200


async def test_request_id_is_echoed_and_in_problems(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/nowhere", headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "abc-123"
    problem = response.json()
    assert problem["code"] == "not_found" and problem["request_id"] == "abc-123"
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_operator_endpoints_need_an_operator(http: httpx.AsyncClient, auditor_token: str) -> None:
    assert (await http.post("/v1/admin/campaigns", json={})).status_code == 401
    bad = await http.post("/v1/admin/campaigns", json={}, headers=auth("stm_nope"))
    assert bad.status_code == 401 and bad.json()["code"] == "invalid_admin_token"
    from kernel.sample import sample_campaign

    forbidden = await http.post("/v1/admin/campaigns", json=sample_campaign("aud-1"), headers=auth(auditor_token))
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "role_required"


@pytest.mark.parametrize(("change", "code"), [
    ({"budget_fen": 100}, "tiers_exceed_budget"),
    ({"strata": [{"stratum": "430102", "quota": 1}]}, "quotas_mismatch"),
    ({"registration_closes_at": "2020-01-01T00:00:00+00:00"}, "windows_out_of_order"),
    ({"id": "Bad Id!"}, "invalid_campaign_id"),
    ({"beacon": {"kind": "drand-quicknet"}}, "invalid_beacon"),
    ({"beacon": {"kind": "sandbox", "round": 0}}, "invalid_beacon"),
])
async def test_campaign_validation(http: httpx.AsyncClient, operator_token: str,
                                   change: dict[str, object], code: str, db: asyncpg.Connection) -> None:
    from kernel.sample import sample_campaign

    spec = sample_campaign("valid-" + code.replace("_", "-")[:20], 60)
    spec.update(change)
    response = await http.post("/v1/admin/campaigns", json=spec, headers=auth(operator_token))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert await db.fetchval("SELECT count(*) FROM campaigns WHERE id = $1", spec["id"]) == 0


async def test_unknown_campaign_field_is_refused(http: httpx.AsyncClient, operator_token: str) -> None:
    from kernel.sample import sample_campaign

    spec = {**sample_campaign("unknown-field", 60), "surprise": True}
    response = await http.post("/v1/admin/campaigns", json=spec, headers=auth(operator_token))
    assert response.status_code == 400 and response.json()["code"] == "validation_failed"


async def test_transitions_are_audited_and_chain_verifies(
        http: httpx.AsyncClient, operator_token: str, db: asyncpg.Connection) -> None:
    campaign_id = await open_campaign(http, operator_token)
    await http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(operator_token))
    rows = await db.fetch("SELECT action, actor FROM audit_log WHERE subject = $1 ORDER BY seq", campaign_id)
    assert [r["action"] for r in rows] == ["campaign.create", "campaign.open", "campaign.closed"]
    assert {r["actor"] for r in rows} == {"operator:alice"}
    check = await audit_log.verify_chain(db)
    assert check.ok, check
    with pytest.raises(asyncpg.RaiseError):
        await db.execute("UPDATE audit_log SET actor = 'mallory' WHERE subject = $1", campaign_id)


async def test_ledger_funding_posted_at_creation(http: httpx.AsyncClient, operator_token: str,
                                                 db: asyncpg.Connection) -> None:
    from kernel import ledger

    campaign_id = await open_campaign(http, operator_token, winners=60)
    balances = await ledger.balances(db, campaign_id)
    assert balances["budget"] == -balances["funding"] > 0
    assert await ledger.check_postings_balanced(db) == []


async def test_migrations_twice_are_a_noop(db: asyncpg.Connection) -> None:
    assert await stimulus_db.migrate(db) == []
    numbers = [r["number"] for r in await db.fetch("SELECT number FROM schema_migrations ORDER BY number")]
    assert numbers == sorted(numbers) and 1 in numbers and 100 in numbers
