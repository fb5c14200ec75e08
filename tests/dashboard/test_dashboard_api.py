"""The operators' dashboard page and the registration timeline it draws, over HTTP."""

from __future__ import annotations

import httpx

from tests.conftest import Stack
from tests.foundation.helpers import auth
from tests.issuance.helpers import create_winners


async def test_the_dashboard_page_and_its_assets_are_served(http: httpx.AsyncClient) -> None:
    page = await http.get("/admin/dashboard", params={"campaign": "x"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    script = await http.get("/static/dashboard/app.js")
    assert script.status_code == 200 and "Authorization" in script.text
    assert (await http.get("/static/dashboard/style.css")).status_code == 200


async def test_the_timeline_counts_registrations_and_refusals(
        http: httpx.AsyncClient, stack: Stack, operator_token: str, second_operator_token: str,
        auditor_token: str) -> None:
    drawn = await create_winners(http, stack.settings, operator_token, second_operator_token, winners=6,
                                 registrants=14)
    path = f"/v1/admin/campaigns/{drawn.campaign_id}/registrations/timeline"
    for token in (operator_token, auditor_token):
        reply = await http.get(path, headers=auth(token))
        assert reply.status_code == 200, reply.text
        timeline = reply.json()
        assert timeline["registered"] == 14 and timeline["withdrawn"] == 0
        assert sum(p["registrations"] for p in timeline["points"]) == 14
        assert timeline["bucket"] == "minute"
    by_day = (await http.get(path, params={"bucket": "day"}, headers=auth(operator_token))).json()
    assert len(by_day["points"]) == 1 and by_day["points"][0]["registrations"] == 14
    assert (await http.get(path)).status_code == 401
    assert (await http.get(path, params={"bucket": "week"}, headers=auth(operator_token))).status_code == 400
    missing = await http.get("/v1/admin/campaigns/no-such-campaign/registrations/timeline",
                             headers=auth(operator_token))
    assert missing.status_code == 404
