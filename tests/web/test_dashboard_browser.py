"""The dashboard in headless Chromium: it loads with an operator token and follows a running
issuance at the sandbox bank until every packet is issued."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.issuance.helpers import (
    Winners,
    create_winners,
    maker_checker,
    start_issuance_processes,
    stop_processes,
)
from tests.wallet.conftest import RunningBank
from tests.wallet.conftest import bank as bank  # the session's sandbox bank

WINNERS = 12
expect = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[browser]'").expect


# Session scope, and first in the test's arguments: async fixtures must be set up before Playwright
# starts its own event loop in this thread.
@pytest.fixture(scope="session")
async def queued(api_url: str, stack: Stack, operator_token: str, second_operator_token: str) -> Winners:
    """A drawn campaign whose bulk issuance is approved and queued, with no worker running yet."""
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        drawn = await create_winners(http, stack.settings, operator_token, second_operator_token, winners=WINNERS,
                                     registrants=WINNERS + 4, with_wallets=True)
        await maker_checker(http, f"/v1/admin/campaigns/{drawn.campaign_id}/issuance", operator_token,
                            second_operator_token, stack.settings)
        return drawn


def test_the_dashboard_follows_a_running_issuance(
        queued: Winners, page: Any, api_url: str, operator_token: str, stack: Stack, bank: RunningBank,
        artifacts: Path, tmp_path: Path) -> None:
    page.goto(f"{api_url}/admin/dashboard?campaign={queued.campaign_id}")
    page.fill("#token", operator_token)
    page.click("form#login button")
    page.wait_for_selector("body[data-updated]", timeout=20_000)
    assert page.text_content("#iss-pending") == str(WINNERS) and page.text_content("#iss-issued") == "0"
    assert page.text_content("#reg-total") == str(WINNERS + 4)
    # The campaign's three approved actions ran as jobs, each to its last step.
    jobs = page.locator("#jobs tbody tr[data-state=succeeded]")
    assert sorted(jobs.nth(i).locator("td").nth(1).inner_text() for i in range(jobs.count())) == [
        "draw.commit", "draw.run", "issue.start"]
    workers = start_issuance_processes(stack.database_url, stack.redis_url, stack.settings.state_dir, bank.url,
                                       tmp_path)
    try:
        # A locator, not a script: the page's Content-Security-Policy forbids evaluating strings.
        expect(page.locator("#iss-issued")).to_have_text(str(WINNERS), timeout=90_000)
    finally:
        stop_processes(workers)
    assert page.text_content("#iss-pending") == "0"
    banks = page.locator("#issuance tbody tr")
    assert banks.count() >= 1
    assert sum(int(banks.nth(i).locator("td.issued").text_content() or 0) for i in range(banks.count())) == WINNERS
    page.screenshot(path=str(artifacts / "dashboard-issuance.png"), full_page=True)

    # A wrong token is refused and the login form comes back with the reason.
    page.evaluate("sessionStorage.setItem('stimulus-token', 'stm_not-a-token')")
    page.reload()
    page.wait_for_selector("form#login:not([hidden])", timeout=20_000)
    assert "refused" in (page.text_content("#login-error") or "")
