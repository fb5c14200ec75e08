"""A packet's whole life on a campaign with deadlines seconds apart: a refused wallet claimed again,
progress, the claim deadline cancelling what nobody claimed, spending at the bank, and the spending
deadline expiring the packets by itself, reclaiming the unspent balances, re-runnable, with the
bank's books equal to the ledger."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from kernel import ledger
from kernel.db import create_pool
from kernel.errors import WrongState
from kernel.settings import Settings
from sandbox.bank import SANDBOX_API_KEY
from stimulus.ledger_audit import audit
from tests.conftest import Stack
from tests.foundation.helpers import auth
from tests.issuance.helpers import (
    assert_books_match,
    claim,
    create_winners,
    pipeline,
    wait_for_states,
)
from tests.wallet.conftest import RunningBank
from wallet_adapter import expiry
from wallet_adapter.bank_protocol import SpendRequest, idempotency_key_for
from wallet_adapter.banks import BankRegistry, issuance_client_options
from wallet_adapter.outbox import DispatcherOptions
from wallet_adapter.provider import BankClient


async def _packet(db: asyncpg.Connection, campaign: str, ticket: int) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM packets WHERE campaign_id = $1 AND ticket = $2", campaign, ticket)
    assert row is not None
    return row


async def _wait_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.3)


async def test_refusal_reclaim_deadline_spending_and_expiry(
        http: httpx.AsyncClient, stack: Stack, settings: Settings, bank: RunningBank, db: asyncpg.Connection,
        prefix: str, operator_token: str, second_operator_token: str) -> None:
    now = datetime.now(UTC)
    claim_deadline, spending_deadline = now + timedelta(seconds=24), now + timedelta(seconds=34)
    w = await create_winners(
        http, stack.settings, operator_token, second_operator_token, winners=6, registrants=8,
        registration_opens_at=(now - timedelta(seconds=5)).isoformat(),
        registration_closes_at=(now + timedelta(seconds=8)).isoformat(),
        claim_deadline=claim_deadline.isoformat(), spending_deadline=spending_deadline.isoformat())
    campaign = w.campaign_id
    t = sorted(w.tokens)
    for ticket, (bank_code, wallet) in zip(t[:4], [("ICBC", "INVALID-1"), ("CCB", "W-1"), ("BOC", "W-2"),
                                                  ("CCB", "FROZEN-3")], strict=True):
        assert (await claim(http, campaign, w.tokens[ticket], bank_code, wallet)).status_code == 202
    options = DispatcherOptions(prefix=prefix, check_s=0.5, republish_after_s=10, deadline_job_s=1)
    async with pipeline(settings, prefix=prefix, dispatcher=options):
        await wait_for_states(db, campaign, ["issued", "failed"], 4, 30)
        refused = (await http.get(f"/v1/campaigns/{campaign}/claim", headers=auth(w.tokens[t[0]]))).json()
        assert refused["state"] == "failed" and refused["failure_code"] == "wallet_not_found"
        # The citizen fixes the wallet at the same bank: claimable again at once.
        r = await claim(http, campaign, w.tokens[t[0]], "ICBC", "W-0")
        assert r.status_code == 202 and r.json()["state"] == "issuing"
        await wait_for_states(db, campaign, ["issued"], 3, 30)
        progress = (await http.get(f"/v1/admin/campaigns/{campaign}/issuance", headers=auth(operator_token))).json()
        assert (progress["issued"], progress["failed"], progress["unclaimed"], progress["pending"]) == (3, 1, 2, 0)
        assert {b["bank_code"] for b in progress["banks"]} == {"ICBC", "CCB", "BOC"}

        await _wait_until(claim_deadline)
        late = await claim(http, campaign, w.tokens[t[4]], "ICBC", "W-4")
        assert late.status_code == 409 and late.json()["code"] == "claim_deadline_passed"
        await wait_for_states(db, campaign, ["cancelled"], 3, 20)  # two unclaimed, one refused
    assert (await http.get(f"/v1/campaigns/{campaign}")).json()["state"] == "spending"

    async with BankClient(bank.url, "CCB", SANDBOX_API_KEY, bank.public_key) as ccb, \
            BankClient(bank.url, "BOC", SANDBOX_API_KEY, bank.public_key) as boc:
        p1, p2 = await _packet(db, campaign, t[1]), await _packet(db, campaign, t[2])
        await ccb.spend(idempotency_key_for(campaign, str(p1["id"])),
                        SpendRequest(spend_id=f"{campaign}-s1", amount_fen=3_000, merchant_id="m-1"))
        await boc.spend(idempotency_key_for(campaign, str(p2["id"])),
                        SpendRequest(spend_id=f"{campaign}-s2", amount_fen=p2["amount_fen"], merchant_id="m-2"))

    # Nobody runs `stimulus packets expire`: the dispatcher's deadline job expires the campaign.
    async with pipeline(settings, prefix=prefix, dispatcher=options):
        await _wait_until(spending_deadline)
        for _ in range(120):
            if (await http.get(f"/v1/campaigns/{campaign}")).json()["state"] == "expired":
                break
            await asyncio.sleep(0.5)
    done = await db.fetchrow(
        """SELECT actor, details FROM audit_log WHERE action = 'packets.expire' AND subject = $1
           ORDER BY seq LIMIT 1""", campaign)
    assert done is not None, "the spending deadline passed and nothing expired the campaign"
    report = json.loads(done["details"]) if isinstance(done["details"], str) else done["details"]
    assert done["actor"] == "system:issuance-dispatcher"
    assert (report["reclaimed"], report["spent"], report["left"]) == (2, 1, 0)
    assert stack.settings.database_url
    pool = await create_pool(stack.settings.database_url, 1, 4)
    banks = await BankRegistry.open(settings, issuance_client_options())
    try:
        again = await expiry.expire(pool, banks, campaign, "operator:test")
        # A run already holding the campaign's expiry: the second is told so and moves nothing.
        other_run = expiry.expiry_lease(campaign)
        assert await other_run.take(db)
        try:
            with pytest.raises(WrongState) as busy:
                await expiry.expire(pool, banks, campaign, "operator:test")
        finally:
            await other_run.release(db)
        assert busy.value.code == "expiry_running"
    finally:
        await banks.aclose()
        await pool.close()
    assert (again.reclaimed, again.spent, again.cancelled, again.left, again.campaign_state) == (0, 0, 0, 0, "expired")
    p0, p1 = await _packet(db, campaign, t[0]), await _packet(db, campaign, t[1])
    assert report["reclaimed_fen"] == p0["amount_fen"] + p1["amount_fen"] - 3_000
    assert (p1["state"], p1["spent_fen"], p1["reclaimed_fen"]) == ("reclaimed", 3_000, p1["amount_fen"] - 3_000)
    assert (await _packet(db, campaign, t[2]))["state"] == "spent"

    await assert_books_match(db, bank, campaign)
    reclaimed_at_banks = 0
    for code in ("ICBC", "CCB", "BOC"):
        async with BankClient(bank.url, code, SANDBOX_API_KEY, bank.public_key) as client:
            reclaimed_at_banks += (await client.books(campaign)).reclaimed_fen
    assert reclaimed_at_banks == report["reclaimed_fen"]
    balances = await ledger.balances(db, campaign)
    budget = (await http.get(f"/v1/campaigns/{campaign}")).json()["budget_fen"]
    spent = 3_000 + p2["amount_fen"]
    # Everything but what citizens spent is back in the budget; the spent part waits on `issued`
    # for the merchants' reconciliation.
    assert (balances["budget"], balances["allocated"], balances["issued"]) == (budget - spent, 0, spent)
    assert await audit(db, campaign) == []
