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

from kernel import audit_log, wallet_rule
from kernel.approvals import ApprovalContext
from kernel.errors import Conflict, NotFound, WrongState
from lottery import campaigns
from lottery.campaigns import Campaign
from lottery.registration import find_own
from lottery.selection import DrawOutcome
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


_VIEW = [c.strip() for c in packets.VIEW_COLUMNS.split(",")]
# The whole claim is one statement, so one round trip and no explicit transaction: lock the
# claimant's packet (joined to their registration and to the campaign's state and deadline), decide
# as the rules below say, and only on `bind` set the wallet and insert the outbox row; the
# statement commits both or neither. The decision is made on the locked row: a concurrent claim
# of the same packet waits for the lock and then sees the packet as the first one left it.
# Verdicts, in the order they are checked:
#   campaign   the campaign is not (or no longer) claimable
#   repeat     already bound to this same wallet: the answer is the packet as it is
#   bound      already bound to another wallet
#   deadline   the claim deadline has passed: after it, the answer must not depend on whether the
#              deadline job has cancelled this packet yet
#   cancelled  the packet was cancelled
#   bind       allocated, or failed: bind it; a re-claim at another bank than one that refused it
#              waits REBIND_FENCE after the refusal (not_before)
_CLAIM = f"""WITH own AS (
        SELECT p.id, p.failed_at, p.refused_by, now() AS now, c.state AS campaign_state, c.claim_deadline,
               {", ".join("p." + c for c in _VIEW)}
        FROM registrations r
        JOIN packets p ON p.campaign_id = r.campaign_id AND p.ticket = r.ticket
        JOIN campaigns c ON c.id = r.campaign_id
        WHERE r.campaign_id = $1 AND r.id_hmac = $2 AND r.withdrawn_at IS NULL
        FOR UPDATE OF p),
    decided AS (
        SELECT own.*, CASE
            WHEN campaign_state NOT IN ({", ".join(f"'{s}'" for s in CLAIMABLE_CAMPAIGN_STATES)}) THEN 'campaign'
            WHEN state IN ('{packets.ISSUING}', '{packets.ISSUED}', '{packets.RECLAIMED}', '{packets.SPENT}') THEN
                CASE WHEN wallet_bank IS NOT DISTINCT FROM $3 AND wallet_id IS NOT DISTINCT FROM $4
                     THEN 'repeat' ELSE 'bound' END
            WHEN now >= claim_deadline THEN 'deadline'
            WHEN state = '{packets.CANCELLED}' THEN 'cancelled'
            ELSE 'bind' END AS verdict
        FROM own),
    bound AS (
        UPDATE packets p SET state = '{packets.ISSUING}', wallet_bank = $3, wallet_id = $4, claimed_at = now(),
               failure_code = NULL, updated_at = now()
        FROM decided d WHERE p.id = d.id AND d.verdict = 'bind' AND p.state = d.state
        RETURNING p.id, {", ".join("p." + c for c in _VIEW)}),
    queued AS (
        INSERT INTO issuance_outbox (packet_id, campaign_id, bank_code, not_before)
        SELECT b.id, b.campaign_id, $3,
               CASE WHEN d.state = '{packets.FAILED}'
                         AND EXISTS (SELECT 1 FROM unnest(d.refused_by) AS refused (bank) WHERE refused.bank <> $3)
                    THEN greatest(d.now, d.failed_at + $5::interval) ELSE d.now END
        FROM bound b JOIN decided d ON d.id = b.id)
    SELECT d.verdict, d.campaign_state, b.id IS NOT NULL AS bound,
           {", ".join(f"CASE WHEN b.id IS NULL THEN d.{c} ELSE b.{c} END AS {c}" for c in _VIEW)}
    FROM decided d LEFT JOIN bound b ON b.id = d.id"""


async def claim(conn: asyncpg.Connection, campaign_id: str, id_hmac: bytes, wallet: Wallet) -> ClaimOutcome:
    """Bind `wallet` to the packet won by the registrant `id_hmac` and enqueue its credit, or
    repeat an earlier claim. Refusals in the order a claimant meets them: an unknown campaign, no
    registration, a campaign not (or no longer) claimable, no packet won, then the packet's own."""
    row = await conn.fetchrow(_CLAIM, campaign_id, id_hmac, wallet.bank_code, wallet.wallet_id, REBIND_FENCE)
    if row is None:
        await _refuse_claim_without_packet(conn, campaign_id, id_hmac)
    verdict, campaign_state = row["verdict"], row["campaign_state"]
    if verdict == "campaign":
        check_claimable_state(campaign_state)
    elif verdict == "bound":
        raise Conflict("the packet is already bound to another wallet", code="wallet_already_bound",
                       state=row["state"])
    elif verdict == "deadline":
        raise WrongState("the claim deadline has passed", code="claim_deadline_passed")
    elif verdict == "cancelled":
        raise WrongState("the packet was cancelled", code="packet_cancelled")
    # `bind` updated the packet (it was locked, so the update cannot miss it); `repeat` did nothing
    if verdict == "bind" and not row["bound"]:
        raise RuntimeError(f"claim of campaign {campaign_id}: the locked packet was not updated")
    return ClaimOutcome(packets.view_from_row(row), verdict == "bind", campaign_state)


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
