"""The public campaign page in headless Chromium: the campaign's commitment and seed checked on
load, winning and losing tickets checked in the browser with the right verdict, and proofs,
receipts and commitments with one flipped byte rejected. Screenshots are kept as artifacts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kernel.sample import sample_campaign
from kernel.settings import Settings
from tests.conftest import Stack
from tests.foundation.helpers import auth, citizen_token, new_campaign_id
from tests.jobs_helpers import run_jobs_sync
from tests.web.conftest import DrawnCampaign

CHECK_TIMEOUT_MS = 20_000
# A browser whose WebCrypto has no Ed25519 (older ones): importKey refuses the algorithm.
WITHOUT_ED25519 = """
const importKey = crypto.subtle.importKey.bind(crypto.subtle);
crypto.subtle.importKey = (format, data, algorithm, ...rest) =>
  (algorithm === "Ed25519" || (algorithm && algorithm.name === "Ed25519"))
    ? Promise.reject(new DOMException("Unrecognized name.", "NotSupportedError"))
    : importKey(format, data, algorithm, ...rest);
"""


def _open(page: Any, api_url: str, campaign_id: str) -> None:
    page.goto(f"{api_url}/campaigns/{campaign_id}")
    page.wait_for_selector("body[data-loaded]", timeout=CHECK_TIMEOUT_MS)
    assert page.get_attribute("body", "data-loaded") == "true", page.text_content("#campaign-name")


def _check(page: Any, text: str) -> str:
    page.evaluate("delete document.body.dataset.checked")  # no answer of an earlier check is taken for this one
    page.fill("#ticket-input", text)
    page.click("#check-button")
    page.wait_for_selector("body[data-checked]", timeout=CHECK_TIMEOUT_MS)
    return str(page.get_attribute("body", "data-checked"))


def _steps(page: Any) -> dict[str, list[str]]:
    """Step id -> the statuses it was shown with (the ceremony shows one step per participant)."""
    found: dict[str, list[str]] = {}
    for item in page.locator("#steps > li").all():
        found.setdefault(item.get_attribute("data-step"), []).append(item.get_attribute("class"))
    return found


def _flip(hex_text: str, byte: int) -> str:
    """The same hex with one byte's lowest bit flipped."""
    raw = bytearray.fromhex(hex_text)
    raw[byte % len(raw)] ^= 0x01
    return raw.hex()


def test_the_page_shows_the_campaign_and_checks_its_commitment_and_seed(
        drawn_campaign: DrawnCampaign, page: Any, api_url: str, artifacts: Path) -> None:
    _open(page, api_url, drawn_campaign.campaign_id)
    assert page.get_attribute("#state", "data-state") == "drawn"
    assert page.text_content("#tree-size") == str(len(drawn_campaign.receipts))
    assert page.get_attribute("#commitment-signature", "data-status") == "ok"  # Ed25519 in WebCrypto
    assert "verified in this browser" in page.text_content("#commitment-signature")
    assert page.get_attribute("#seed-check", "data-status") == "ok"
    assert page.locator("#ceremony tbody tr").count() == 2
    assert page.locator("#strata tbody tr").count() == 6
    assert "too few registrants (1)" in page.text_content("#spillover")
    assert page.text_content("#winner-count") == str(len(drawn_campaign.winners))
    assert page.is_visible("#sandbox")
    timeline = page.locator("#timeline li.done").all_inner_texts()
    assert any("Registrant list committed" in line for line in timeline)
    assert any("Draw run" in line for line in timeline)
    assert "stimulus-verify bundle.json --registrants registrants.csv --service-key" in page.text_content(
        "#verify-command")
    assert page.get_attribute("#bundle-link", "href") == f"/v1/campaigns/{drawn_campaign.campaign_id}/bundle"
    page.screenshot(path=str(artifacts / "public-page.png"), full_page=True)

    page.click("#language")
    assert page.text_content("#check h2") == "核验我的票"
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert "已在本浏览器中验证" in page.text_content("#commitment-signature")
    page.screenshot(path=str(artifacts / "public-page-zh.png"), full_page=True)
    page.reload()
    page.wait_for_selector("body[data-loaded=true]", timeout=CHECK_TIMEOUT_MS)
    assert page.text_content("#check h2") == "核验我的票"  # the choice is remembered


def test_a_winning_ticket_is_verified_in_the_browser(
        drawn_campaign: DrawnCampaign, page: Any, api_url: str, artifacts: Path) -> None:
    _open(page, api_url, drawn_campaign.campaign_id)
    for round_ in (1, 2):
        ticket, _, tier, amount_fen, _ = next(w for w in drawn_campaign.winners.values() if w[4] == round_)
        assert _check(page, str(ticket)) == "won", page.inner_text("#steps")
        assert page.text_content("#verdict") == f"You won: ¥{amount_fen // 100}.00 ({tier})."
        steps = _steps(page)
        assert all(status != "bad" for statuses in steps.values() for status in statuses), steps
        for step in ("commitment", "proof", "leaf", "leaf-hash", "inclusion", "seed", "score", "cutoff", "listing"):
            assert steps.get(step) == ["ok"], (step, steps)
        assert steps["ceremony"] == ["ok", "ok"] and steps["beacon-signature"] == ["warn"]
        reason = "spill-over cutoff" if round_ == 2 else "stratum's cutoff"
        assert reason in page.inner_text("#steps li[data-step=cutoff]")
        page.screenshot(path=str(artifacts / f"public-page-winner-round{round_}.png"), full_page=True)


def test_a_losing_ticket_is_verified_from_its_receipt(
        drawn_campaign: DrawnCampaign, page: Any, api_url: str, artifacts: Path) -> None:
    _open(page, api_url, drawn_campaign.campaign_id)
    receipt = drawn_campaign.receipts[drawn_campaign.losers[0]]
    assert _check(page, json.dumps(receipt, indent=2)) == "lost", page.inner_text("#steps")
    assert page.text_content("#verdict") == "You did not win this time."
    steps = _steps(page)
    assert steps["receipt"] == ["ok"] and steps["receipt-leaf"] == ["ok"] and steps["inclusion"] == ["ok"]
    assert steps["cutoff"] == ["ok"] and steps["listing"] == ["ok"]
    assert "did not win: the rank key is above" in page.inner_text("#steps li[data-step=cutoff]")
    page.screenshot(path=str(artifacts / "public-page-loser.png"), full_page=True)

    assert _check(page, "not a ticket") == "invalid"
    assert _check(page, str(max(drawn_campaign.receipts) + 1000)) == "rejected"
    assert _steps(page)["proof"] == ["bad"]


Tamper = Callable[[dict[str, Any]], None]
TAMPERED_PROOFS: dict[str, tuple[Tamper, str]] = {
    "audit-path": (lambda p: p["audit_path"].__setitem__(0, _flip(p["audit_path"][0], 7)), "inclusion"),
    "last-path-hash": (lambda p: p["audit_path"].__setitem__(-1, _flip(p["audit_path"][-1], 31)), "inclusion"),
    "leaf": (lambda p: p.__setitem__("leaf_hex", _flip(p["leaf_hex"], -1)), "inclusion"),
    "leaf-ticket": (lambda p: p.__setitem__("leaf_hex", _flip(p["leaf_hex"], 8)), "leaf"),
    "root": (lambda p: p.__setitem__("root_hex", _flip(p["root_hex"], 0)), "proof"),
    "index": (lambda p: p.__setitem__("leaf_index", p["leaf_index"] ^ 1), "inclusion"),
}


@pytest.mark.parametrize("where", list(TAMPERED_PROOFS))
def test_a_tampered_proof_is_rejected_in_the_browser(
        where: str, drawn_campaign: DrawnCampaign, page: Any, api_url: str, artifacts: Path) -> None:
    tamper, failing_step = TAMPERED_PROOFS[where]

    def intercept(route: Any) -> None:
        response = route.fetch()
        proof = response.json()
        tamper(proof)
        route.fulfill(response=response, body=json.dumps(proof))

    page.route("**/tickets/*/proof", intercept)
    _open(page, api_url, drawn_campaign.campaign_id)
    ticket = min(drawn_campaign.winners)
    assert _check(page, str(ticket)) == "rejected", page.inner_text("#steps")
    assert page.text_content("#verdict").startswith("REJECTED")
    steps = _steps(page)
    assert steps[failing_step] == ["bad"], steps
    assert "score" not in steps and "listing" not in steps
    page.screenshot(path=str(artifacts / f"public-page-tampered-{where}.png"), full_page=True)


def test_a_forged_receipt_is_rejected_in_the_browser(
        drawn_campaign: DrawnCampaign, page: Any, api_url: str) -> None:
    _open(page, api_url, drawn_campaign.campaign_id)
    receipt = drawn_campaign.receipts[drawn_campaign.losers[0]]
    forged = {**receipt, "signature_hex": _flip(receipt["signature_hex"], 5)}
    assert _check(page, json.dumps(forged)) == "rejected"
    assert _steps(page) == {"input": ["info"], "receipt": ["bad"]}
    # A receipt for a leaf other than the committed one: signed, but not what was committed.
    other = drawn_campaign.receipts[drawn_campaign.losers[1]]
    assert _check(page, json.dumps({**receipt, "leaf_hex": other["leaf_hex"]})) == "rejected"
    assert _steps(page)["receipt"] == ["bad"]


def test_a_tampered_commitment_is_rejected_in_the_browser(
        drawn_campaign: DrawnCampaign, page: Any, api_url: str, artifacts: Path) -> None:
    def intercept(route: Any) -> None:
        response = route.fetch()
        commitment = response.json()
        commitment["signature_hex"] = _flip(commitment["signature_hex"], 40)
        route.fulfill(response=response, body=json.dumps(commitment))

    page.route("**/commitment", intercept)
    _open(page, api_url, drawn_campaign.campaign_id)
    assert page.get_attribute("#commitment-signature", "data-status") == "bad"
    assert _check(page, str(min(drawn_campaign.winners))) == "rejected"
    assert _steps(page) == {"input": ["info"], "commitment": ["bad"]}
    page.screenshot(path=str(artifacts / "public-page-tampered-commitment.png"), full_page=True)


def test_without_ed25519_the_signatures_are_said_to_be_unchecked(
        drawn_campaign: DrawnCampaign, page: Any, api_url: str, artifacts: Path) -> None:
    page.add_init_script(WITHOUT_ED25519)
    _open(page, api_url, drawn_campaign.campaign_id)
    assert page.get_attribute("#commitment-signature", "data-status") == "info"
    assert "not checked" in page.text_content("#commitment-signature")
    receipt = drawn_campaign.receipts[min(drawn_campaign.winners)]
    assert _check(page, json.dumps(receipt)) == "won", page.inner_text("#steps")
    steps = _steps(page)
    assert steps["receipt"] == ["info"] and steps["commitment"] == ["info"] and steps["ceremony"] == ["info", "info"]
    assert steps["inclusion"] == ["ok"] and steps["seed"] == ["ok"] and steps["cutoff"] == ["ok"]
    assert "no Ed25519" in page.inner_text("#steps li[data-step=commitment]")
    page.screenshot(path=str(artifacts / "public-page-without-ed25519.png"), full_page=True)


def _approved(http: httpx.Client, settings: Settings, path: str, maker: str, checker: str) -> None:
    requested = http.post(path, headers=auth(maker))
    assert requested.status_code == 202, requested.text
    approval_id = requested.json()["id"]
    approved = http.post(f"/v1/admin/approvals/{approval_id}/approve", headers=auth(checker))
    assert approved.status_code == 202 and approved.json()["status"] == "approved", approved.text
    run_jobs_sync(settings)
    assert http.get(f"/v1/admin/approvals/{approval_id}", headers=auth(checker)).json()["status"] == "executed"


def test_before_the_draw_a_ticket_is_checked_as_far_as_it_can_be(
        stack: Stack, operator_token: str, second_operator_token: str, page: Any, api_url: str,
        artifacts: Path) -> None:
    campaign_id = new_campaign_id("page")
    with httpx.Client(base_url=api_url, timeout=60) as http:
        created = http.post("/v1/admin/campaigns", json=sample_campaign(campaign_id, 6), headers=auth(operator_token))
        assert created.status_code == 201, created.text
        assert http.post(f"/v1/admin/campaigns/{campaign_id}/open", headers=auth(operator_token)).status_code == 200
        receipts = [http.post(f"/v1/campaigns/{campaign_id}/registrations", json={},
                              headers=auth(citizen_token(stack.settings, n))).json() for n in range(710_000, 710_003)]
        _open(page, api_url, campaign_id)
        assert page.get_attribute("#state", "data-state") == "open" and page.is_visible("#no-commitment")
        assert _check(page, json.dumps(receipts[1])) == "pending"
        assert page.text_content("#verdict").startswith("The registrant list is not committed yet")
        assert _steps(page) == {"input": ["info"], "receipt": ["ok"]}

        assert http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(operator_token)).status_code == 200
        _approved(http, stack.settings, f"/v1/admin/campaigns/{campaign_id}/commitment", operator_token,
                  second_operator_token)
    page.reload()
    page.wait_for_selector("body[data-loaded=true]", timeout=CHECK_TIMEOUT_MS)
    assert page.get_attribute("#state", "data-state") == "committed"
    assert page.get_attribute("#commitment-signature", "data-status") == "ok" and page.is_hidden("#draw-section")
    assert _check(page, json.dumps(receipts[1])) == "pending"
    assert page.text_content("#verdict") == "Your ticket is in the committed list. The draw has not run yet."
    steps = _steps(page)
    assert steps["receipt"] == ["ok"] and steps["inclusion"] == ["ok"] and "score" not in steps
    page.screenshot(path=str(artifacts / "public-page-committed.png"), full_page=True)
