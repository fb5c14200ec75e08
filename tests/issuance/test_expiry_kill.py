"""Expiry survives a killed worker. Expiry is no HTTP request: the dispatcher's deadline job runs it
(wallet_adapter/outbox.py `spending_deadlines`) in chunks whose every step is idempotent (the bank's
reclaim answers a repeat with the same figures; each packet moves issued -> reclaimed | spent by
compare-and-set, with its posting, in one transaction). SIGKILL the dispatcher while the bank has
taken balances back that our books have not yet posted, and a second dispatcher finishes the
expiry: each packet reclaimed once at the bank and posted once, the bank's books equal to the
ledger, the ledger audit and the audit log clean.

The deadlines are brought forward in the database once every packet is issued, rather than waited
for.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx

from kernel import audit_log
from kernel.leases import current_holder
from kernel.settings import Settings
from sandbox.bank import SANDBOX_API_KEY
from tests.conftest import Stack
from tests.issuance.helpers import (
    BANKS,
    assert_books_match,
    create_winners,
    maker_checker,
    pipeline,
    start_process,
    wait_for_states,
    worker_env,
)
from tests.wallet.conftest import Admin, RunningBank
from wallet_adapter.bank_protocol import SpendRequest, idempotency_key_for
from wallet_adapter.expiry import EXPIRY_LEASE_TTL_S
from wallet_adapter.outbox import DispatcherOptions
from wallet_adapter.packets import KIND_RECLAIM
from wallet_adapter.provider import BankClient

WINNERS = 60
# The killed run holds the dispatcher's lease and the campaign's expiry lease until they lapse;
# the next deadline round (every 10 s) then finishes it.
FINISH_S = DispatcherOptions().lease_ttl_s + EXPIRY_LEASE_TTL_S + 10 + 30


async def _reclaimed_at_banks(bank: RunningBank, campaign_id: str) -> int:
    total = 0
    for code in BANKS:
        async with BankClient(bank.url, code, SANDBOX_API_KEY, bank.public_key) as client:
            total += (await client.books(campaign_id)).reclaimed_fen
    return total


async def test_a_dispatcher_killed_mid_expiry_is_finished_by_another_with_the_books_balanced(
        http: httpx.AsyncClient, stack: Stack, settings: Settings, bank: RunningBank, admin: Admin,
        db: asyncpg.Connection, prefix: str, tmp_path: Path, operator_token: str,
        second_operator_token: str) -> None:
    w = await create_winners(http, stack.settings, operator_token, second_operator_token,
                             winners=WINNERS, registrants=WINNERS + 2, with_wallets=True)
    campaign = w.campaign_id
    await maker_checker(http, f"/v1/admin/campaigns/{campaign}/issuance", operator_token,
                        second_operator_token, stack.settings)
    async with pipeline(settings, prefix=prefix):
        await wait_for_states(db, campaign, ["issued"], WINNERS, 90)
    # Citizens spend: one packet whole, one in part; the rest is reclaimed at expiry.
    spent = await db.fetch("SELECT id, wallet_bank, amount_fen FROM packets WHERE campaign_id = $1 ORDER BY id LIMIT 2",
                           campaign)
    for row, amount_fen in zip(spent, (spent[0]["amount_fen"], 1_000), strict=True):
        async with BankClient(bank.url, row["wallet_bank"], SANDBOX_API_KEY, bank.public_key) as client:
            await client.spend(idempotency_key_for(campaign, str(row["id"])),
                               SpendRequest(spend_id=f"{campaign}-s{row['id']}", amount_fen=amount_fen,
                                            merchant_id="m-1"))
    await db.execute(
        """UPDATE campaigns SET registration_opens_at = least(registration_opens_at, now() - interval '4 s'),
                  registration_closes_at = now() - interval '3 s', claim_deadline = now() - interval '2 s',
                  spending_deadline = now() - interval '1 s' WHERE id = $1""", campaign)

    # Each bank call waits ~1.5 s, and a run posts a chunk once all its reclaims are answered (32
    # at a time: two waves here); killed 2 s into the run, the bank has taken balances back that
    # our books have not posted.
    admin.knobs(latency_ms=1500, latency_sigma=0.1)
    env = worker_env(stack.settings, bank)
    dispatcher_args = ["worker", "issuance-dispatcher", "--prefix", prefix]
    first = start_process("dispatcher-1", dispatcher_args, env, tmp_path)
    second = None
    try:
        deadline = time.monotonic() + 60
        while await current_holder(db, f"expiry:{campaign}") is None:
            assert time.monotonic() < deadline, first.tail()
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)
        first.kill()
        posted = await db.fetchval("SELECT coalesce(sum(reclaimed_fen), 0) FROM packets WHERE campaign_id = $1",
                                   campaign)
        admin.knobs(latency_ms=0)
        at_banks = await _reclaimed_at_banks(bank, campaign)
        assert posted < at_banks, "not killed between the bank and our books: nothing was tested"
        second = start_process("dispatcher-2", dispatcher_args, env, tmp_path)
        restarted = time.monotonic()
        deadline = time.monotonic() + FINISH_S
        while (await db.fetchval("SELECT state FROM campaigns WHERE id = $1", campaign)) != "expired":
            assert time.monotonic() < deadline, second.tail()
            await asyncio.sleep(0.5)
        print(f"killed mid-expiry: {at_banks} fen reclaimed at the banks, {posted} posted; the second "
              f"dispatcher finished it {time.monotonic() - restarted:.1f} s after it started")
    finally:
        first.kill()
        if second is not None:
            second.stop()

    states = dict(await db.fetch("SELECT state, count(*) FROM packets WHERE campaign_id = $1 GROUP BY state",
                                 campaign))
    assert states == {"reclaimed": WINNERS - 1, "spent": 1}, states
    # Our books, the packets and the banks agree on what was taken back, posted once per packet.
    postings = await db.fetchrow(
        """SELECT count(*) AS n, coalesce(sum(e.amount_fen), 0) AS fen FROM ledger_transactions t
           JOIN ledger_entries e ON e.txn_id = t.id WHERE t.kind = $1 AND t.campaign_id = $2 AND e.amount_fen > 0""",
        KIND_RECLAIM, campaign)
    reclaimed_fen = await db.fetchval("SELECT sum(reclaimed_fen) FROM packets WHERE campaign_id = $1", campaign)
    assert (postings["n"], postings["fen"]) == (WINNERS - 1, reclaimed_fen)
    assert reclaimed_fen == await _reclaimed_at_banks(bank, campaign)
    total_fen = await db.fetchval("SELECT sum(amount_fen) FROM packets WHERE campaign_id = $1", campaign)
    assert reclaimed_fen == total_fen - spent[0]["amount_fen"] - 1_000
    await assert_books_match(db, bank, campaign)
    chain = await audit_log.verify_chain(db)
    assert chain.ok, chain
