"""The end of a packet's life: refused packets after the claim deadline, and expiry at the
spending deadline, where the unspent balances are reclaimed from the wallets.

Both ask the banks before they move money in our books, and both are re-runnable: the bank's
reclaim is idempotent (a repeat answers the same figures), every posting is keyed by packet, and
every transition is a compare-and-set, so a crash at any point is finished by running again.

Expiry, per packet:
* `issued`: reclaim at the bank; issued -> reclaimed (unspent part back to the budget) or
  spent (nothing left). The spent part stays on `issued` for the merchants' reconciliation.
* `issuing` (a credit may be in flight): the bank is asked; a credit it holds is recorded as
  issued and then reclaimed; none, once past the deadline plus `CLOCK_GRACE` (the bank refuses
  credits that expire before they are made), means it never will be: cancelled.
* `allocated` / `failed`: cancelled, as after the claim deadline.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg

from kernel import audit_log
from kernel.errors import WrongState
from kernel.leases import Lease
from lottery import campaigns
from wallet_adapter import issuance, packets
from wallet_adapter.bank_protocol import CreditRecord, idempotency_key_for
from wallet_adapter.banks import BankRegistry
from wallet_adapter.packets import Credited, Reclaimed
from wallet_adapter.provider import BankError, BankUnavailable, PermanentFailure

log = logging.getLogger("wallet_adapter.expiry")

CLOCK_GRACE = timedelta(minutes=2)
EXPIRY_LEASE_TTL_S = 30.0  # renewed every 10 s while a run works; a crashed run is replaced after it
CHUNK = 500
MAX_CONCURRENT_CALLS = 32


@dataclass
class ExpiryReport:
    campaign_id: str
    reclaimed: int = 0
    reclaimed_fen: int = 0
    spent: int = 0
    issued_late: int = 0
    cancelled: int = 0
    left: int = 0  # could not be settled now (bank unavailable, in flight); run again
    errors: list[str] = field(default_factory=list)
    campaign_state: str = ""


async def _found_credit(banks: BankRegistry, campaign_id: str, packet_id: int,
                        bank_codes: list[str]) -> tuple[str, CreditRecord] | None:
    key = idempotency_key_for(campaign_id, str(packet_id))
    for code in dict.fromkeys(bank_codes):
        if code not in banks.codes:
            continue
        record = await banks.client(code).status(key)
        if record is not None:
            return code, record
    return None


async def settle_failed(pool: asyncpg.Pool, banks: BankRegistry, campaign_id: str) -> ExpiryReport:
    """After the claim deadline, a refused packet is asked about at every bank that refused it: a
    late success there is recorded as issued; otherwise the packet is cancelled to the budget."""
    report = ExpiryReport(campaign_id)
    rows = await pool.fetch(
        """SELECT id, wallet_bank, refused_by FROM packets WHERE campaign_id = $1 AND state = 'failed'
           ORDER BY id""", campaign_id)
    for row in rows:
        try:
            found = await _found_credit(banks, campaign_id, row["id"], [*row["refused_by"], row["wallet_bank"]])
        except BankError as exc:
            report.left += 1
            report.errors.append(f"packet {row['id']}: {exc}")
            continue
        async with pool.acquire() as conn, conn.transaction():
            if found is not None:
                code, record = found
                report.issued_late += len(await packets.apply_issued(conn, [Credited(
                    row["id"], code, record.wallet_id, record.credit_id, record.credited_at)]))
            else:
                report.cancelled += len(await packets.cancel(conn, [row["id"]], from_states=(packets.FAILED,)))
    return report


async def expire(pool: asyncpg.Pool, banks: BankRegistry, campaign_id: str, actor: str) -> ExpiryReport:
    """Expire a campaign's packets at its spending deadline; run it again until nothing is left.

    One run per campaign at a time (the lease `expiry:<campaign>`): the dispatcher's deadline job
    and an operator's `stimulus packets expire` may meet, and the second is told, not queued.
    """
    campaign = await campaigns.fetch(pool, campaign_id)
    if not await pool.fetchval("SELECT now() >= $1::timestamptz", campaign.spending_deadline):
        raise WrongState("the spending deadline has not passed", code="spending_not_over")
    if campaign.state in ("draft", "open", "closed", "committed"):
        raise WrongState("the campaign was never drawn", code="not_drawn", state=campaign.state)
    lease = expiry_lease(campaign_id)
    if not await lease.take(pool):
        raise WrongState(f"campaign {campaign_id} is being expired by another run", code="expiry_running")
    try:
        async with lease.kept(pool):
            return await _expire(pool, banks, campaign, actor, lease)
    finally:
        await lease.release(pool)


def expiry_lease(campaign_id: str) -> Lease:
    return Lease(f"expiry:{campaign_id}", EXPIRY_LEASE_TTL_S)


async def _expire(pool: asyncpg.Pool, banks: BankRegistry, campaign: campaigns.Campaign, actor: str,
                  lease: Lease) -> ExpiryReport:
    campaign_id = campaign.id
    report = ExpiryReport(campaign_id)
    report.cancelled += await issuance.cancel_unclaimed(pool, campaign, actor)
    lease.check()  # a run that lost its lease stops between stages; the next run finishes the job
    failed = await settle_failed(pool, banks, campaign_id)
    report.cancelled += failed.cancelled
    report.issued_late += failed.issued_late
    report.left += failed.left
    report.errors += failed.errors
    lease.check()
    await _settle_in_flight(pool, banks, campaign_id, report)
    lease.check()
    await _reclaim_issued(pool, banks, campaign_id, report)
    async with pool.acquire() as conn, conn.transaction():
        await lease.fence(conn)
        open_left = await conn.fetchval(
            """SELECT count(*) FROM packets WHERE campaign_id = $1
               AND state IN ('allocated', 'issuing', 'issued', 'failed')""", campaign_id)
        await audit_log.append(conn, actor=actor, action="packets.expire", subject=campaign_id, details={
            "reclaimed": report.reclaimed, "reclaimed_fen": report.reclaimed_fen, "spent": report.spent,
            "issued_late": report.issued_late, "cancelled": report.cancelled, "left": int(open_left)})
        current = await campaigns.fetch(conn, campaign_id)
        if open_left == 0 and current.state != "expired" and current.state != "finished":
            current = await campaigns.transition(conn, campaign_id, "expired", actor, {"packets": "settled"})
        report.left = int(open_left)
        report.campaign_state = current.state
    return report


async def _settle_in_flight(pool: asyncpg.Pool, banks: BankRegistry, campaign_id: str,
                            report: ExpiryReport) -> None:
    rows = await pool.fetch(
        """SELECT id, wallet_bank, refused_by, now() >= $2::timestamptz AS past_grace
           FROM packets WHERE campaign_id = $1 AND state = 'issuing' ORDER BY id""",
        campaign_id, (await campaigns.fetch(pool, campaign_id)).spending_deadline + CLOCK_GRACE)
    for row in rows:
        try:
            found = await _found_credit(banks, campaign_id, row["id"], [row["wallet_bank"], *row["refused_by"]])
        except BankError as exc:
            report.errors.append(f"packet {row['id']}: {exc}")
            continue
        async with pool.acquire() as conn, conn.transaction():
            if found is not None:
                code, record = found
                report.issued_late += len(await packets.apply_issued(conn, [Credited(
                    row["id"], code, record.wallet_id, record.credit_id, record.credited_at)]))
            elif row["past_grace"]:
                report.cancelled += len(await packets.cancel(
                    conn, [row["id"]], from_states=(packets.ISSUING,), code={row["id"]: "expired_unissued"}))


async def _reclaim_issued(pool: asyncpg.Pool, banks: BankRegistry, campaign_id: str,
                          report: ExpiryReport) -> None:
    slots = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
    after = 0
    while True:
        rows = await pool.fetch(
            """SELECT id, wallet_bank FROM packets WHERE campaign_id = $1 AND state = 'issued' AND id > $2
               ORDER BY id LIMIT $3""", campaign_id, after, CHUNK)
        if not rows:
            return
        after = rows[-1]["id"]

        async def one(row: asyncpg.Record) -> Reclaimed | None:
            key = idempotency_key_for(campaign_id, str(row["id"]))
            async with slots:
                try:
                    result = await banks.client(row["wallet_bank"]).reclaim(key)
                except (BankUnavailable, PermanentFailure, BankError) as exc:
                    report.errors.append(f"packet {row['id']} at {row['wallet_bank']}: {exc}")
                    return None
            return Reclaimed(row["id"], result.reclaimed_fen, result.spent_fen)

        results = [r for r in await asyncio.gather(*(one(row) for row in rows)) if r is not None]
        async with pool.acquire() as conn, conn.transaction():
            moved = set(await packets.apply_reclaimed(conn, results))
        for result in results:
            if result.packet_id in moved:
                if result.reclaimed_fen > 0:
                    report.reclaimed += 1
                    report.reclaimed_fen += result.reclaimed_fen
                else:
                    report.spent += 1
