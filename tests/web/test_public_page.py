"""The public campaign page over HTTP, and in headless Chromium: a winning and a losing ticket
checked in the browser, a tampered proof rejected, screenshots kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.issuance.helpers import Winners, create_winners


@pytest.fixture(scope="session")
async def drawn(api_url: str, stack: Stack, operator_token: str,
                second_operator_token: str) -> tuple[Winners, dict[str, Any]]:
    # Returned, not yielded, session-scoped and first in the browser tests' arguments: async
    # fixtures must run before Playwright starts its own event loop in this thread.
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        result = await create_winners(http, stack.settings, operator_token, second_operator_token,
                                      winners=6, registrants=40)
        loser_ticket, loser_token = next(iter(result.losers.items()))
        own = await http.get(f"/v1/campaigns/{result.campaign_id}/registrations/me",
                             headers={"Authorization": f"Bearer {loser_token}"})
        assert own.status_code == 200, own.text
        assert own.json()["ticket"] == loser_ticket
        return result, own.json()["receipt"]


async def test_the_page_and_its_assets_are_served(http: httpx.AsyncClient,
                                                  drawn: tuple[Winners, dict[str, Any]]) -> None:
    winners, _ = drawn
    page = await http.get(f"/campaigns/{winners.campaign_id}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/public/app.js" in page.text and "default-src 'self'" in page.headers["content-security-policy"]
    script = await http.get("/static/public/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "crypto.subtle" in script.text
    style = await http.get("/static/public/style.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    missing = await http.get("/campaigns/no-such-campaign")
    assert missing.status_code == 404 and missing.json()["code"] == "campaign_not_found"
    assert (await http.get("/static/public/nothing.js")).status_code == 404


# -- in the browser ------------------------------------------------------------------------------


def _check(page: Any, text: str) -> tuple[str, str]:
    page.evaluate("delete document.body.dataset.checked")
    page.fill("#ticket-input", text)
    page.click("#check-button")
    page.wait_for_selector("body[data-checked]", timeout=20_000)
    return page.text_content("#verdict"), page.inner_text("#steps")


def _open(page: Any, api_url: str, campaign_id: str) -> None:
    page.goto(f"{api_url}/campaigns/{campaign_id}")
    page.wait_for_selector("body[data-loaded=true]", timeout=20_000)


def test_a_winning_and_a_losing_ticket_are_checked_in_the_browser(
        drawn: tuple[Winners, dict[str, Any]], page: Any, api_url: str, artifacts: Path) -> None:
    winners, receipt = drawn
    _open(page, api_url, winners.campaign_id)
    assert "verified in this browser" in page.text_content("#commitment-signature")
    assert page.locator("#strata tbody tr").count() >= 1
    page.screenshot(path=str(artifacts / "public-page.png"), full_page=True)

    winner = min(winners.tokens)
    verdict, steps = _check(page, str(winner))
    assert verdict.startswith("You won"), (verdict, steps)
    assert "Inclusion proof" in steps and "scores within the" in steps
    assert page.locator("#steps li.bad").count() == 0
    page.screenshot(path=str(artifacts / "public-page-winner.png"), full_page=True)

    verdict, steps = _check(page, json.dumps(receipt))
    assert verdict == "You did not win this time.", (verdict, steps)
    assert "Receipt signed by the service key" in steps and "above stratum" in steps
    assert page.locator("#steps li.bad").count() == 0
    page.screenshot(path=str(artifacts / "public-page-loser.png"), full_page=True)

    page.click("#language")
    assert page.text_content("#check-button") == "核验"


def test_a_tampered_proof_is_rejected_in_the_browser(
        drawn: tuple[Winners, dict[str, Any]], page: Any, api_url: str, artifacts: Path) -> None:
    winners, receipt = drawn

    def tamper(route: Any) -> None:
        response = route.fetch()
        proof = response.json()
        first = proof["audit_path"][0]
        proof["audit_path"][0] = ("0" if first[0] != "0" else "1") + first[1:]
        route.fulfill(response=response, body=json.dumps(proof))

    page.route("**/tickets/*/proof", tamper)
    _open(page, api_url, winners.campaign_id)
    verdict, steps = _check(page, str(receipt["ticket"]))
    assert verdict.startswith("REJECTED"), (verdict, steps)
    assert page.locator("#steps li.bad").count() == 1 and "Inclusion proof" in page.inner_text("#steps li.bad")
    page.screenshot(path=str(artifacts / "public-page-tampered.png"), full_page=True)

    # A receipt whose signature does not verify is rejected too.
    page.unroute("**/tickets/*/proof")
    forged = {**receipt, "registered_at": receipt["registered_at"].replace("0", "1", 1)}
    verdict, _ = _check(page, json.dumps(forged))
    assert verdict.startswith("REJECTED")
