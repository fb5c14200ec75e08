"""Starting issuance: the draw's hand-over, claims by winners, bulk issuance by operators, and
the claim deadline.

Everything that binds a wallet writes the packet's outbox row in the same transaction, so the
dispatcher finds every committed claim. The campaign moves drawn -> issuing with the first claim
or the bulk start, and issuing -> spending once the claim deadline has passed and every packet
nobody claimed has been cancelled.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import asyncpg

from lottery import campaigns
from lottery.campaigns import Campaign
from lottery.registration import find_own
from lottery.selection import DrawOutcome
from stimulus import audit_log, wallet_rule
from stimulus.approvals import ApprovalContext
from stimulus.errors import Conflict, NotFound, WrongState
from wallet_adapter import packets
from wallet_adapter.packets import NewPacket, PacketView, Wallet

log = logging.getLogger("wallet_adapter.issuance")

BULK_START = "issue.start"
CLAIMABLE_CAMPAIGN_STATES = ("drawn", "issuing")
# A re-claim at another bank waits this long after the refusal, and the refusing bank is asked
# first: a duplicate of the refused request still in flight there must land before we move on.
REBIND_FENCE = timedelta(seconds=60)
CANCEL_CHUNK = 10_000
MAX_TICKETS_LISTED = 1000  # in a bulk result (stored with the approval); the progress counts them all


async def hand_over(conn: asyncpg.Connection, campaign: Campaign, outcome: DrawOutcome) -> dict[str, Any]:
    """The draw's hand-over: one `allocated` packet per winner, in the draw's transaction.

    The wallet a winner gave at registration is copied from their registration, so an operator
    can later issue in bulk without each winner claiming.
    """
    tickets = [w.ticket for w in outcome.winners]
    wallets = {r["ticket"]: (r["wallet_bank"], r["wallet_id"]) for r in await conn.fetch(
        """SELECT ticket, wallet_bank, wallet_id FROM registrations
           WHERE campaign_id = $1 AND ticket = ANY($2::bigint[]) AND wallet_bank IS NOT NULL""",
        campaign.id, tickets)}
    created = await packets.allocate(conn, campaign.id, [
        NewPacket(w.ticket, w.tier, w.amount_fen, *wallets.get(w.ticket, (None, None)))
        for w in outcome.winners])
    return {"packets_allocated": created,
            "packets_allocated_fen": sum(w.amount_fen for w in outcome.winners)}


async def ensure_issuing(pool: asyncpg.Pool, campaign_id: str, state: str, actor: str) -> None:
    """drawn -> issuing, once; a concurrent first claim that lost the race is not an error."""
    if state != "drawn":
        return
    async with pool.acquire() as conn:
        with contextlib.suppress(WrongState):
            await campaigns.transition(conn, campaign_id, "issuing", actor, expected="drawn")


def check_claimable(campaign: Campaign) -> None:
    check_claimable_state(campaign.state)


def check_claimable_state(state: str) -> None:
    if state in CLAIMABLE_CAMPAIGN_STATES:
        return
    if state in ("draft", "open", "closed", "committed"):
        raise WrongState("the draw has not run yet", code="not_drawn", state=state)
    raise WrongState("the claim deadline has passed", code="claim_deadline_passed", state=state)


@dataclass(frozen=True)
class ClaimOutcome:
    view: PacketView
    created: bool  # False: the same claim was made before
    campaign_state: str  # as the claim's transaction read it


# The claimant's packet, locked, with what the claim checks of the campaign, in one statement: the
# registration and the campaign are read in the transaction that binds the wallet, not before it.
_LOCK_OWN_PACKET = """SELECT p.id, p.failed_at, p.refused_by, now() AS now, c.state AS campaign_state,
        c.claim_deadline, p.campaign_id, p.ticket, p.tier, p.amount_fen, p.state, p.wallet_bank, p.wallet_id,
        p.claimed_at, p.issued_at, p.failure_code, p.spent_fen, p.reclaimed_fen
    FROM registrations r
    JOIN packets p ON p.campaign_id = r.campaign_id AND p.ticket = r.ticket
    JOIN campaigns c ON c.id = r.campaign_id
    WHERE r.campaign_id = $1 AND r.id_hmac = $2 AND r.withdrawn_at IS NULL
    FOR UPDATE OF p"""
# Binding the wallet and enqueueing the credit, as one statement.
_BIND_AND_ENQUEUE = f"""WITH bound AS (
        UPDATE packets SET state = 'issuing', wallet_bank = $2, wallet_id = $3, claimed_at = now(),
               failure_code = NULL, updated_at = now()
        WHERE id = $1 AND state = $4 RETURNING id, {packets.VIEW_COLUMNS}),
    queued AS (
        INSERT INTO issuance_outbox (packet_id, campaign_id, bank_code, not_before)
        SELECT id, campaign_id, $2, $5 FROM bound)
    SELECT {packets.VIEW_COLUMNS} FROM bound"""


async def claim(conn: asyncpg.Connection, campaign_id: str, id_hmac: bytes, wallet: Wallet) -> ClaimOutcome:
    """Bind `wallet` to the packet won by the registrant `id_hmac` and enqueue its credit, or
    repeat an earlier claim. Refusals in the order a claimant meets them: an unknown campaign, no
    registration, a campaign not (or no longer) claimable, no packet won."""
    async with conn.transaction():
        row = await conn.fetchrow(_LOCK_OWN_PACKET, campaign_id, id_hmac)
        if row is None:
            await _refuse_claim_without_packet(conn, campaign_id, id_hmac)
        check_claimable_state(row["campaign_state"])
        same_wallet = (row["wallet_bank"], row["wallet_id"]) == (wallet.bank_code, wallet.wallet_id)
        state = row["state"]
        if state in (packets.ISSUING, packets.ISSUED, packets.RECLAIMED, packets.SPENT):
            if same_wallet:
                return ClaimOutcome(packets.view_from_row(row), False, row["campaign_state"])
            raise Conflict("the packet is already bound to another wallet", code="wallet_already_bound",
                           state=state)
        # The deadline first: after it, the answer must not depend on whether the deadline job
        # has cancelled this packet yet.
        if row["now"] >= row["claim_deadline"]:
            raise WrongState("the claim deadline has passed", code="claim_deadline_passed")
        if state == packets.CANCELLED:
            raise WrongState("the packet was cancelled", code="packet_cancelled")
        not_before = row["now"]
        if state == packets.FAILED and any(bank != wallet.bank_code for bank in row["refused_by"]):
            not_before = max(not_before, row["failed_at"] + REBIND_FENCE)
        updated = await conn.fetchrow(_BIND_AND_ENQUEUE, row["id"], wallet.bank_code, wallet.wallet_id, state,
                                      not_before)
        assert updated is not None  # the row is locked FOR UPDATE
    return ClaimOutcome(packets.view_from_row(updated), True, row["campaign_state"])


async def _refuse_claim_without_packet(conn: asyncpg.Connection, campaign_id: str, id_hmac: bytes) -> NoReturn:
    campaign = await campaigns.fetch(conn, campaign_id)
    await find_own(conn, campaign_id, id_hmac)
    check_claimable(campaign)
    raise NotFound("this registration did not win a packet", code="not_a_winner")


# -- bulk issuance (maker-checker) -------------------------------------------------------------


async def bulk_precheck(conn: asyncpg.Connection, campaign_id: str, params: dict[str, Any]) -> None:
    campaign = await campaigns.fetch(conn, campaign_id)
    check_claimable(campaign)
    if not await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM packets WHERE campaign_id = $1 AND state = 'allocated'
                              AND registered_bank IS NOT NULL)""", campaign_id):
        raise WrongState("no unclaimed packet has a wallet bound at registration",
                         code="nothing_to_issue")


async def bulk_execute(ctx: ApprovalContext) -> dict[str, Any]:
    """Bind every unclaimed packet to its registration wallet and enqueue all of them at once."""
    conn = ctx.conn
    await conn.execute("SELECT 1 FROM campaigns WHERE id = $1 FOR UPDATE", ctx.subject)
    campaign = await campaigns.fetch(conn, ctx.subject)
    check_claimable(campaign)
    if await conn.fetchval("SELECT now() >= $1::timestamptz", campaign.claim_deadline):
        raise WrongState("the claim deadline has passed", code="claim_deadline_passed")
    codes = list(ctx.settings.bank_codes)
    # A wallet kept from registration that breaks the wallet rule (a bank not taking part, a wallet
    # id no bank accepts) is not sent: its packet stays `allocated`, claimable with another wallet
    # until the deadline, and says why in `failure_code`, which the progress lists.
    held = await conn.fetch(
        """UPDATE packets SET failure_code = CASE WHEN registered_bank = ANY($2::text[]) THEN $4
                                                   ELSE $3 END, updated_at = now()
           WHERE campaign_id = $1 AND state = 'allocated' AND registered_bank IS NOT NULL
             AND (NOT registered_bank = ANY($2::text[]) OR registered_wallet IS NULL
                  OR registered_wallet !~ $5)
           RETURNING ticket, failure_code""",
        campaign.id, codes, wallet_rule.UNKNOWN_BANK, wallet_rule.INVALID_WALLET,
        wallet_rule.WALLET_ID_PATTERN.pattern)
    rows = await conn.fetch(
        """WITH bound AS (
               UPDATE packets SET state = 'issuing', wallet_bank = registered_bank,
                      wallet_id = registered_wallet, claimed_at = now(), updated_at = now()
               WHERE campaign_id = $1 AND state = 'allocated' AND registered_bank = ANY($2::text[])
                 AND registered_wallet ~ $3
               RETURNING id, wallet_bank, amount_fen),
           queued AS (
               INSERT INTO issuance_outbox (packet_id, campaign_id, bank_code)
               SELECT id, $1, wallet_bank FROM bound ORDER BY id)
           SELECT wallet_bank, count(*) AS packets, sum(amount_fen)::bigint AS amount_fen
           FROM bound GROUP BY wallet_bank ORDER BY wallet_bank""",
        campaign.id, codes, wallet_rule.WALLET_ID_PATTERN.pattern)
    unclaimed = await conn.fetchval(
        "SELECT count(*) FROM packets WHERE campaign_id = $1 AND state = 'allocated' AND registered_bank IS NULL",
        campaign.id)
    if campaign.state == "drawn":
        await campaigns.transition(conn, campaign.id, "issuing", ctx.checker, {"by": "bulk"})
    per_bank = {r["wallet_bank"]: {"packets": int(r["packets"]), "amount_fen": int(r["amount_fen"])}
                for r in rows}
    not_sent: dict[str, int] = {}
    for row in held:
        not_sent[row["failure_code"]] = not_sent.get(row["failure_code"], 0) + 1
    if held:
        log.warning("campaign %s: bulk issuance kept %d packets whose registration wallet breaks the "
                    "wallet rule: %s", campaign.id, len(held), not_sent)
    return {"queued": sum(v["packets"] for v in per_bank.values()), "per_bank": per_bank,
            "left_unclaimed": int(unclaimed), "not_sent": not_sent,
            "not_sent_tickets": sorted(int(r["ticket"]) for r in held)[:MAX_TICKETS_LISTED]}



# -- the claim deadline --------------------------------------------------------------------------


async def claim_deadline_passed(conn: asyncpg.Connection | asyncpg.Pool, campaign: Campaign) -> bool:
    return bool(await conn.fetchval("SELECT now() >= $1::timestamptz", campaign.claim_deadline))


async def cancel_unclaimed(pool: asyncpg.Pool, campaign: Campaign, actor: str) -> int:
    """After the claim deadline: cancel every packet still `allocated` (allocated -> budget).

    Refused packets (`failed`) need the banks asked first and are cancelled by the caller that
    holds the bank clients (`wallet_adapter.expiry.settle_failed`). Re-runnable; returns the
    number cancelled now.
    """
    if not await claim_deadline_passed(pool, campaign):
        raise WrongState("the claim deadline has not passed", code="claim_deadline_not_passed")
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            ids = [r["id"] for r in await conn.fetch(
                """SELECT id FROM packets WHERE campaign_id = $1 AND state = 'allocated'
                   ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED""", campaign.id, CANCEL_CHUNK)]
            cancelled = await packets.cancel(conn, ids, from_states=(packets.ALLOCATED,),
                                             code=dict.fromkeys(ids, "unclaimed"))
            if cancelled:
                await audit_log.append(conn, actor=actor, action="packets.cancel_unclaimed",
                                       subject=campaign.id, details={"packets": len(cancelled)})
        total += len(cancelled)
        if len(ids) < CANCEL_CHUNK:
            return total


async def close_claims(pool: asyncpg.Pool, campaign: Campaign, actor: str) -> bool:
    """issuing|drawn -> spending once nothing claimable is left; True if it moved now."""
    if campaign.state not in CLAIMABLE_CAMPAIGN_STATES or not await claim_deadline_passed(pool, campaign):
        return False
    async with pool.acquire() as conn, conn.transaction():
        open_left = await conn.fetchval(
            "SELECT count(*) FROM packets WHERE campaign_id = $1 AND state IN ('allocated', 'failed')",
            campaign.id)
        if open_left:
            return False
        try:
            await campaigns.transition(conn, campaign.id, "spending", actor, {"claims": "closed"})
        except WrongState:
            return False
    log.info("campaign %s: claims closed, spending", campaign.id)
    return True
