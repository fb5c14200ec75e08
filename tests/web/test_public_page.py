"""The public campaign page over HTTP: the page and its assets through the real app, an unknown
campaign as a 404 problem, and the two public JSON answers the page's ticket check reads."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import httpx
import pytest

import lottery
from kernel.sample import sample_campaign
from tests.foundation.helpers import auth, new_campaign_id
from tests.web.conftest import DrawnCampaign

ASSETS = {"app.js": "javascript", "check.js": "javascript", "draw.js": "javascript", "i18n.js": "javascript",
          "style.css": "text/css"}


async def test_the_page_and_its_assets_are_served(http: httpx.AsyncClient, drawn_campaign: DrawnCampaign) -> None:
    page = await http.get(f"/campaigns/{drawn_campaign.campaign_id}")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/static/public/app.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe" not in policy
    for name, kind in ASSETS.items():
        asset = await http.get(f"/static/public/{name}")
        assert asset.status_code == 200, name
        assert kind in asset.headers["content-type"], (name, asset.headers["content-type"])
        assert "max-age" in asset.headers["cache-control"]
    assert "crypto.subtle.digest" in (await http.get("/static/public/draw.js")).text
    assert (await http.get("/static/public/nothing.js")).status_code == 404


def test_every_page_file_is_package_data() -> None:
    """An installed package (not only a checkout) serves the page: its files match package-data."""
    config = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    package = Path(lottery.__file__).parent
    packaged = {path for pattern in config["tool"]["setuptools"]["package-data"]["*"]
                for path in package.glob(pattern)}
    files = {path for path in (package / "static").rglob("*") if path.is_file()}
    assert files and files <= packaged, sorted(str(f) for f in files - packaged)


@pytest.mark.parametrize("campaign_id", ["no-such-campaign", "NOT-AN-ID", "x"])
async def test_an_unknown_campaign_is_a_404_problem(http: httpx.AsyncClient, campaign_id: str) -> None:
    response = await http.get(f"/campaigns/{campaign_id}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "campaign_not_found"


async def test_the_draw_summary_is_the_bundle_without_its_winners(
        http: httpx.AsyncClient, drawn_campaign: DrawnCampaign) -> None:
    base = f"/v1/campaigns/{drawn_campaign.campaign_id}"
    signed = (await http.get(f"{base}/bundle")).content
    bundle = json.loads(signed)["bundle"]
    summary = (await http.get(f"{base}/draw")).json()
    assert summary["bundle_sha256_hex"] == hashlib.sha256(signed).hexdigest()
    assert summary["bundle_bytes"] == len(signed) and summary["winners_omitted"] is True
    assert summary["campaign_id"] == drawn_campaign.campaign_id and summary["key_id"] == json.loads(signed)["key_id"]
    winners = bundle["draw"].pop("winners")
    assert len(winners) == bundle["draw"]["winner_count"] and summary["bundle"] == bundle
    assert (await http.get(f"{base}/draw")).content == (await http.get(f"{base}/draw")).content


async def test_a_tickets_line_of_the_result(http: httpx.AsyncClient, drawn_campaign: DrawnCampaign) -> None:
    base = f"/v1/campaigns/{drawn_campaign.campaign_id}"
    for ticket, (_, stratum, tier, amount_fen, round_) in drawn_campaign.winners.items():
        line = (await http.get(f"{base}/tickets/{ticket}/result")).json()
        assert line == {"campaign_id": drawn_campaign.campaign_id, "ticket": ticket, "stratum": stratum,
                        "algorithm": "sha256-score-v1", "won": True, "tier": tier, "amount_fen": amount_fen,
                        "round": round_}
    loser = drawn_campaign.losers[0]
    line = (await http.get(f"{base}/tickets/{loser}/result")).json()
    assert line["won"] is False and line["tier"] is None and line["amount_fen"] is None and line["round"] is None
    for ticket in (max(drawn_campaign.receipts) + 1000, 2**63, 2**64 - 1, 2**64, -1):
        for answer in ("result", "proof"):
            missing = await http.get(f"{base}/tickets/{ticket}/{answer}")
            assert missing.status_code == 404 and missing.json()["code"] == "ticket_not_committed", (ticket, answer)


async def test_before_the_draw_and_for_no_campaign_the_result_is_a_404_problem(
        http: httpx.AsyncClient, operator_token: str) -> None:
    campaign_id = new_campaign_id("page")
    created = await http.post("/v1/admin/campaigns", json=sample_campaign(campaign_id, 6), headers=auth(operator_token))
    assert created.status_code == 201, created.text
    assert (await http.get(f"/campaigns/{campaign_id}")).status_code == 200
    for path in (f"/v1/campaigns/{campaign_id}/draw", f"/v1/campaigns/{campaign_id}/tickets/1/result"):
        response = await http.get(path)
        assert response.status_code == 404 and response.json()["code"] == "not_drawn", path
    for path in ("/v1/campaigns/no-such-campaign/draw", "/v1/campaigns/no-such-campaign/tickets/1/result"):
        response = await http.get(path)
        assert response.status_code == 404 and response.json()["code"] == "campaign_not_found", path
