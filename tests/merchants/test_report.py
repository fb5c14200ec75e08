"""The campaign report and the merchants' statements, over the admin API and the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack
from tests.foundation.helpers import auth
from tests.merchants.conftest import CampaignFactory, IssuedCampaign, MerchantFactory


@pytest.fixture(scope="module")
async def spent(new_issued_campaign: CampaignFactory) -> IssuedCampaign:
    return await new_issued_campaign()


async def test_the_report_counts_money_spend_and_the_multiplier(
        spent: IssuedCampaign, make_merchant: MerchantFactory, http: httpx.AsyncClient, operator_token: str,
        stack: Stack, tmp_path: Path) -> None:
    grocer = await make_merchant(category="5411", district="430102")
    cafe = await make_merchant(category="5814", district="430103")
    first, second = spent.packets[:2]
    now = datetime.now(UTC) - timedelta(minutes=1)
    assert (await grocer.client.redeem("g-1", first.payment_reference, 5_000, now, basket_fen=12_500)).status_code == 202
    assert (await grocer.client.redeem("g-2", second.payment_reference, 3_000, now)).status_code == 202
    assert (await cafe.client.redeem("c-1", first.payment_reference, 2_000, now, basket_fen=2_500)).status_code == 202
    assert (await grocer.client.reverse("g-2", "g-2r", 1_000, now)).status_code == 202

    response = await http.get(f"/v1/admin/campaigns/{spent.campaign_id}/report", headers=auth(operator_token))
    assert response.status_code == 200, response.text
    report = response.json()
    issued = sum(p.amount_fen for p in spent.packets)
    money = report["money"]
    assert money["issued_fen"] == issued
    assert money["pending_fen"] == 5_000 + 3_000 + 2_000 - 1_000
    assert money["redeemed_fen"] == 0 and money["outstanding_fen"] == issued
    assert report["notices"] == {"payment:pending": 3, "reversal:pending": 1}
    districts = {row["key"]: row for row in report["spend_by_district"]}
    assert districts["430102"]["spent_fen"] == 7_000 and districts["430102"]["payments"] == 2
    assert districts["430103"]["spent_fen"] == 2_000
    assert {row["key"]: row["spent_fen"] for row in report["spend_by_category"]} == {"5411": 7_000, "5814": 2_000}
    day = now.astimezone(timezone(timedelta(hours=8))).date().isoformat()
    assert [(row["key"], row["spent_fen"]) for row in report["spend_by_day"]] == [(day, 9_000)]
    assert report["basket_fen"] == 15_000 and report["basket_subsidy_fen"] == 7_000
    assert report["consumption_multiplier"] == pytest.approx(15_000 / 7_000, abs=1e-4)
    assert [b["class"] for b in report["breaks"]] == ["missing_at_bank", "missing_at_merchant",
                                                      "amount_mismatch", "duplicate", "late"]

    page = await http.get(f"/v1/admin/campaigns/{spent.campaign_id}/report.html", headers=auth(operator_token))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<svg" in page.text and spent.campaign_id in page.text and "<script" not in page.text

    assert (await http.get(f"/v1/admin/campaigns/{spent.campaign_id}/report")).status_code == 401
    missing = await http.get("/v1/admin/campaigns/no-such-campaign/report", headers=auth(operator_token))
    assert missing.status_code == 404 and missing.json()["code"] == "campaign_not_found"

    out = tmp_path / "report.html"
    env = {**os.environ, "STIMULUS_ENV": "development", "DATABASE_URL": stack.database_url, "REDIS_URL": stack.redis_url,
           "STIMULUS_STATE_DIR": str(stack.settings.state_dir)}
    ran = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "stimulus.cli", "report", spent.campaign_id, "--html", str(out)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "pending reconciliation" in ran.stdout and "¥90.00" in ran.stdout
    assert "<svg" in out.read_text()


async def test_a_statement_lists_every_notice_as_json_and_csv(
        spent: IssuedCampaign, make_merchant: MerchantFactory, http: httpx.AsyncClient, operator_token: str) -> None:
    shop = await make_merchant()
    packet = spent.packets[2]
    now = datetime.now(UTC) - timedelta(minutes=1)
    assert (await shop.client.redeem("s-1", packet.payment_reference, 1_500, now, bank_reference="b-1")).status_code \
        == 202
    assert (await shop.client.redeem("s-2", packet.payment_reference, 500, now)).status_code == 202
    assert (await shop.client.reverse("s-1", "s-1r", 200, now)).status_code == 202

    path = f"/v1/admin/merchants/{shop.id}/statement"
    statement = (await http.get(path, headers=auth(operator_token))).json()
    assert [line["merchant_txn_id"] for line in statement["lines"]] == ["s-1", "s-2", "s-1r"]
    assert statement["payments_fen"] == 2_000 and statement["reversals_fen"] == 200
    assert statement["pending_fen"] == 1_800 and statement["matched_fen"] == 0
    assert statement["lines"][0]["bank_reference"] == "b-1"

    as_csv = await http.get(path, params={"format": "csv"}, headers=auth(operator_token))
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert rows[0][0] == "merchant_txn_id" and [r[0] for r in rows[1:4]] == ["s-1", "s-2", "s-1r"]
    assert ["#pending_fen", "1800"] in rows

    today = now.astimezone(UTC).date()
    empty = await http.get(path, params={"from": (today + timedelta(days=2)).isoformat()}, headers=auth(operator_token))
    assert empty.json()["lines"] == []
    other = await http.get(path, params={"campaign": "no-such-campaign"}, headers=auth(operator_token))
    assert other.json()["lines"] == []
    bad = await http.get(path, params={"format": "xml"}, headers=auth(operator_token))
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_format"
    unknown = await http.get("/v1/admin/merchants/m-nobody/statement", headers=auth(operator_token))
    assert unknown.status_code == 404 and unknown.json()["code"] == "merchant_not_found"
