"""Claims over HTTP: bind a wallet, repeat, conflict, refusals, and the credit through the pipeline."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from kernel.db import create_pool
from kernel.settings import Settings
from lottery import campaigns
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
from wallet_adapter import issuance


async def test_claim_binds_a_wallet_and_the_packet_is_credited_once(
        http: httpx.AsyncClient, stack: Stack, settings: Settings, bank: RunningBank, db: asyncpg.Connection,
        prefix: str, operator_token: str, second_operator_token: str) -> None:
    w = await create_winners(http, stack.settings, operator_token, second_operator_token, winners=6, registrants=9)
    campaign = w.campaign_id
    tickets = sorted(w.tokens)
    first = w.tokens[tickets[0]]

    r = await claim(http, campaign, first, "ICBC", "W-alice")
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/campaigns/{campaign}/claim"
    assert r.json()["state"] == "issuing" and r.json()["wallet"] == {"bank_code": "ICBC", "wallet_id": "W-alice"}
    again = await claim(http, campaign, first, "ICBC", "W-alice")
    assert again.status_code == 202 and again.json() == r.json()
    other = await claim(http, campaign, first, "CCB", "W-alice")
    assert other.status_code == 409 and other.json()["code"] == "wallet_already_bound"

    loser = next(iter(w.losers.values()))
    r = await claim(http, campaign, loser, "ICBC", "W-bob")
    assert r.status_code == 404 and r.json()["code"] == "not_a_winner"
    r = await claim(http, campaign, w.tokens[tickets[1]], "NOBANK", "W-1")
    assert r.status_code == 400 and r.json()["code"] == "unknown_bank"
    r = await claim(http, campaign, w.tokens[tickets[1]], "ICBC", "bad wallet!")
    assert r.status_code == 400 and r.json()["code"] == "invalid_wallet"
    r = await http.post(f"/v1/campaigns/{campaign}/claim", content=b"{",
                        headers={**auth(first), "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "malformed_json"
    assert (await http.get(f"/v1/campaigns/{campaign}")).json()["state"] == "issuing"
    assert await db.fetchval("SELECT count(*) FROM issuance_outbox WHERE campaign_id = $1", campaign) == 1

    for n, ticket in enumerate(tickets[1:], start=1):
        r = await claim(http, campaign, w.tokens[ticket], ("ICBC", "CCB", "BOC")[n % 3], f"W-{ticket}")
        assert r.status_code == 202, r.text
    async with pipeline(settings, prefix=prefix):
        await wait_for_states(db, campaign, ["issued"], len(tickets), 30)
    r = await http.get(f"/v1/campaigns/{campaign}/claim", headers=auth(first))
    assert r.status_code == 200 and r.json()["state"] == "issued" and r.json()["issued_at"]
    r = await http.get(f"/v1/campaigns/{campaign}/claim", headers=auth(loser))
    assert r.status_code == 404 and r.json()["code"] == "not_a_winner"
    await assert_books_match(db, bank, campaign)


async def test_the_same_claim_ten_times_at_once_binds_and_credits_once(
        http: httpx.AsyncClient, stack: Stack, settings: Settings, bank: RunningBank, db: asyncpg.Connection,
        prefix: str, operator_token: str, second_operator_token: str) -> None:
    w = await create_winners(http, stack.settings, operator_token, second_operator_token, winners=6, registrants=8)
    campaign = w.campaign_id
    ticket, token = next(iter(w.tokens.items()))
    plain = [claim(http, campaign, token, "CCB", "W-ten") for _ in range(5)]
    keyed = [claim(http, campaign, token, "CCB", "W-ten", **{"Idempotency-Key": "claim-1"}) for _ in range(5)]
    replies = await asyncio.gather(*plain, *keyed)
    statuses = sorted(r.status_code for r in replies)
    # A retry while the first request with its key is still running is 409 (the idempotency draft).
    assert set(statuses) <= {202, 409} and statuses.count(202) >= 6, [r.text for r in replies]
    for r in replies:
        if r.status_code == 409:
            assert r.json()["code"] == "idempotency_key_in_use"
        else:
            assert r.json()["wallet"] == {"bank_code": "CCB", "wallet_id": "W-ten"}
    await asyncio.sleep(2.2)  # ten calls took the person's burst allowance; two more tokens refill in 2 s
    replay = await claim(http, campaign, token, "CCB", "W-ten", **{"Idempotency-Key": "claim-1"})
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    reused = await claim(http, campaign, token, "BOC", "W-ten", **{"Idempotency-Key": "claim-1"})
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    assert await db.fetchval("SELECT count(*) FROM issuance_outbox WHERE campaign_id = $1", campaign) == 1
    async with pipeline(settings, prefix=prefix, workers=2):
        await wait_for_states(db, campaign, ["issued"], 1, 30)
    books = await assert_books_match(db, bank, campaign)
    assert books["credits"] == 1
    assert await db.fetchval("SELECT count(*) FROM ledger_transactions WHERE campaign_id = $1 AND kind = 'packet.issue'",
                             campaign) == 1
    assert ticket in w.tokens


async def test_a_claim_after_the_deadline_says_so_even_once_its_packet_is_cancelled(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, operator_token: str,
        second_operator_token: str) -> None:
    now = datetime.now(UTC)
    deadline = now + timedelta(seconds=6)
    w = await create_winners(
        http, stack.settings, operator_token, second_operator_token, winners=6, registrants=8,
        registration_opens_at=(now - timedelta(seconds=5)).isoformat(),
        registration_closes_at=(now + timedelta(seconds=4)).isoformat(),
        claim_deadline=deadline.isoformat(), spending_deadline=(now + timedelta(seconds=60)).isoformat())
    first, second = (w.tokens[t] for t in sorted(w.tokens)[:2])
    early = await claim(http, w.campaign_id, first, "ICBC", "W-early")
    assert early.status_code == 202
    await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.2)
    # The deadline job's first half: the unclaimed packet is cancelled, claims are not closed yet.
    assert stack.settings.database_url
    pool = await create_pool(stack.settings.database_url, 1, 2)
    try:
        campaign = await campaigns.fetch(pool, w.campaign_id)
        assert await issuance.cancel_unclaimed(pool, campaign, "operator:test") == 5
    finally:
        await pool.close()
    late = await claim(http, w.campaign_id, second, "ICBC", "W-late")
    assert late.status_code == 409 and late.json()["code"] == "claim_deadline_passed"
    repeat = await claim(http, w.campaign_id, first, "ICBC", "W-early")
    assert repeat.status_code == 202 and repeat.json()["state"] == "issuing"
    assert await db.fetchval("SELECT count(*) FROM packets WHERE campaign_id = $1 AND state = 'cancelled'",
                             w.campaign_id) == 5


async def test_a_refused_packet_is_claimed_again_behind_the_fence_and_a_cancelled_one_is_refused(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, operator_token: str,
        second_operator_token: str) -> None:
    w = await create_winners(http, stack.settings, operator_token, second_operator_token, winners=6, registrants=8)
    campaign = w.campaign_id
    elsewhere, same_bank, cancelled = sorted(w.tokens)[:3]
    for ticket in (elsewhere, same_bank):
        assert (await claim(http, campaign, w.tokens[ticket], "ICBC", f"W-{ticket}")).status_code == 202
    # What the issuance worker leaves when ICBC refuses a credit for good: the packet failed, the
    # refusing bank named, its work item done.
    failed_at = await db.fetchval(
        """WITH refused AS (
               UPDATE packets SET state = 'failed', failed_at = now() - interval '10 seconds', refused_by = '{ICBC}',
                      failure_code = 'wallet_closed'
               WHERE campaign_id = $1 AND ticket = ANY($2::bigint[]) RETURNING id, failed_at)
           UPDATE issuance_outbox o SET done_at = now() FROM refused r WHERE o.packet_id = r.id
           RETURNING r.failed_at""", campaign, [elsewhere, same_bank])
    await db.execute("UPDATE packets SET state = 'cancelled' WHERE campaign_id = $1 AND ticket = $2",
                     campaign, cancelled)

    moved = await claim(http, campaign, w.tokens[elsewhere], "CCB", "W-moved")
    assert moved.status_code == 202 and moved.json()["state"] == "issuing", moved.text
    assert moved.json()["wallet"] == {"bank_code": "CCB", "wallet_id": "W-moved"} and moved.json()["failure_code"] is None
    again = await claim(http, campaign, w.tokens[same_bank], "ICBC", "W-again")
    assert again.status_code == 202, again.text
    gone = await claim(http, campaign, w.tokens[cancelled], "ICBC", "W-late")
    assert gone.status_code == 409 and gone.json()["code"] == "packet_cancelled"

    queued = {r["ticket"]: r for r in await db.fetch(
        """SELECT p.ticket, o.bank_code, o.not_before, o.created_at FROM issuance_outbox o
           JOIN packets p ON p.id = o.packet_id WHERE o.campaign_id = $1 AND o.done_at IS NULL""", campaign)}
    assert set(queued) == {elsewhere, same_bank}
    # Another bank than the one that refused waits a minute after the refusal; the same bank does not.
    assert queued[elsewhere]["bank_code"] == "CCB"
    assert queued[elsewhere]["not_before"] == failed_at + issuance.REBIND_FENCE
    assert queued[same_bank]["not_before"] <= queued[same_bank]["created_at"] + timedelta(seconds=1)
