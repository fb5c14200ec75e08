"""Running the draw, once: seed, selection, results in bulk, the signed bundle, winners' notices.

Runs as the approved half of a maker-checker request, in one transaction: either everything
(results, bundle, notices, state `drawn`, audit entry, hand-over) commits or nothing does. The
hand-overs, and the software version the bundle names, are given by whoever assembles the action
(stimulus.actions), never found by import. A second run is refused; the bundle and results are
then only read back, never recomputed, so "draw shopping" is impossible through the service.
"""

from __future__ import annotations

import array
import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from kernel.approvals import ApprovalContext
from kernel.errors import NotFound, WrongState
from lottery import bundle as bundle_module
from lottery import campaigns, ceremony, parallel, published
from lottery.campaigns import Campaign
from lottery.selection import DrawOutcome
from lottery.statements import timestamp

# The notice carries no link: phishing texts imitating stimulus notices are the first thing
# fraudsters send, so citizens are told to open the official app themselves.
WIN_NOTICE = ("[{name}] Your registration (ticket {ticket}) has won a red packet of {yuan} yuan. "
              "Open the official city app yourself to claim it before {deadline}. "
              "We never send links and never ask for codes.")

# Domain packages act on a fresh draw in the same transaction (e.g. allocating red packets).
HandOver = Callable[[asyncpg.Connection, Campaign, DrawOutcome], Awaitable[dict[str, Any]]]

DRAW_STEPS = 5  # the progress a draw job reports: check, read, select, write, hand over


def campaign_section(campaign: Campaign, closed_at: datetime) -> dict[str, Any]:
    rules = campaign.draw_rules
    return {
        "id": campaign.id, "name": campaign.name, "budget_fen": campaign.budget_fen,
        "tiers": [{"tier": t.tier, "amount_fen": t.amount_fen, "count": t.count} for t in campaign.tiers],
        "strata": [{"stratum": s.stratum, "quota": s.quota} for s in sorted(campaign.strata, key=lambda s: s.stratum)],
        "registration_opens_at": timestamp(campaign.registration_opens_at),
        "registration_closes_at": timestamp(campaign.registration_closes_at),
        "registration_closed_at": timestamp(min(closed_at, campaign.registration_closes_at)),
        "beacon": {"kind": campaign.beacon.kind, "round": campaign.beacon.round,
                   "fallback": campaign.beacon.fallback},
        "participants": [{"id": p.id, "name": p.name, "public_key_hex": p.public_key_hex}
                         for p in sorted(campaign.participants, key=lambda p: p.id)],
        "draw_rules": {"algorithm": rules.algorithm, "tier_scope": rules.tier_scope, "spillover": rules.spillover,
                       "missing_reveal": rules.missing_reveal,
                       "reveal_deadline": timestamp(rules.reveal_deadline) if rules.reveal_deadline else None},
    }


async def precheck(conn: asyncpg.Connection, campaign_id: str, params: dict[str, Any]) -> None:
    campaign = await campaigns.fetch(conn, campaign_id)
    await _ready(conn, campaign)


async def _ready(conn: asyncpg.Connection, campaign: Campaign) -> None:
    if campaign.state != "committed":
        if await conn.fetchval("SELECT 1 FROM draws WHERE campaign_id = $1", campaign.id):
            raise WrongState("this campaign has been drawn; a draw runs once", code="already_drawn")
        raise WrongState(f"campaign is {campaign.state}; the draw needs the committed list",
                         code="wrong_campaign_state", state=campaign.state)
    status = await ceremony.ceremony_status(conn, campaign)
    if not status.ready:
        raise WrongState(f"the ceremony is not complete: {status.reason}", code="ceremony_incomplete")
    if not await conn.fetchval("SELECT 1 FROM beacons WHERE campaign_id = $1", campaign.id):
        raise WrongState("no beacon is recorded yet", code="beacon_not_recorded")


async def _tickets_by_stratum(conn: asyncpg.Connection, campaign: Campaign) -> dict[str, Sequence[int]]:
    grouped: dict[str, Sequence[int]] = {s.stratum: array.array("Q") for s in campaign.strata}
    rows = await conn.fetch(
        """SELECT stratum, array_agg(ticket ORDER BY ticket) AS tickets FROM committed_registrants
           WHERE campaign_id = $1 GROUP BY stratum""", campaign.id)
    for row in rows:
        grouped[row["stratum"]] = array.array("Q", row["tickets"])
    return grouped


def executor(hand_overs: Sequence[HandOver],
             software_version: str) -> Callable[[ApprovalContext], Awaitable[dict[str, Any]]]:
    """The draw as an approved action, followed in its transaction by each hand-over; the bundle
    names the software that drew it as `software_version`."""
    async def run(ctx: ApprovalContext) -> dict[str, Any]:
        return await execute(ctx, hand_overs, software_version)
    return run


async def execute(ctx: ApprovalContext, hand_overs: Sequence[HandOver], software_version: str) -> dict[str, Any]:
    conn = ctx.conn
    await ctx.progress(0, DRAW_STEPS, "checking the campaign")
    await conn.execute("SELECT 1 FROM campaigns WHERE id = $1 FOR UPDATE", ctx.subject)
    campaign = await campaigns.fetch(conn, ctx.subject)
    await _ready(conn, campaign)
    commitment = await conn.fetchrow(
        "SELECT tree_size, root, key_id, statement, signature FROM commitments WHERE campaign_id = $1", campaign.id)
    statement = msgspec.json.decode(bytes(commitment["statement"]))
    beacon_record = dict(await conn.fetchval("SELECT record FROM beacons WHERE campaign_id = $1", campaign.id))
    drawn_at = timestamp(await conn.fetchval("SELECT clock_timestamp()"))
    section = campaign_section(campaign, await conn.fetchval("SELECT closed_at FROM campaigns WHERE id = $1",
                                                             campaign.id))
    evidence = {"campaign_id": campaign.id, "tree_size": commitment["tree_size"],
                "root_hex": bytes(commitment["root"]).hex(), "committed_at": statement["committed_at"],
                "key_id": commitment["key_id"], "signature_hex": bytes(commitment["signature"]).hex()}
    ceremony_entries = await ceremony.bundle_entries(conn, campaign)
    await ctx.progress(1, DRAW_STEPS, "reading the committed list")
    tickets = await _tickets_by_stratum(conn, campaign)
    await ctx.progress(2, DRAW_STEPS, "selecting the winners")
    registrants = sum(len(t) for t in tickets.values())
    pool = parallel.executor(spawn=True) if registrants >= ctx.settings.draw_parallel_from else None
    try:
        bundle, outcome, seed = await asyncio.to_thread(functools.partial(
            bundle_module.compose, campaign=section, commitment=evidence, ceremony=ceremony_entries,
            beacon=beacon_record, tickets_by_stratum=tickets, drawn_at=drawn_at,
            software_version=software_version, pool=pool))
    finally:
        if pool is not None:
            pool.shutdown()
    key = ctx.settings.service_key
    signed = bundle_module.envelope(bundle, key.sign, key.public_bytes)
    await ctx.progress(3, DRAW_STEPS, "writing the results")
    await conn.copy_records_to_table(
        "draw_winners", columns=["campaign_id", "ticket", "stratum", "tier", "amount_fen", "round", "rank_key"],
        records=((campaign.id, w.ticket, w.stratum, w.tier, w.amount_fen, w.round, w.rank_key)
                 for w in outcome.winners))
    # The list and the winners were just bulk-loaded: without fresh statistics the planner takes
    # the campaign for one row and joins them by nested loop (51 s for 5,000 winners among
    # 100,000 registrants, past the statement timeout; found by the result-spike load run).
    await conn.execute("ANALYZE committed_registrants, draw_winners")
    draw = bundle["draw"]
    await conn.execute(
        """INSERT INTO draws (campaign_id, algorithm, seed, winners_root, winner_count, strata, bundle, drawn_at,
                              requested_by, approved_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::timestamptz, $9, $10)""",
        campaign.id, draw["algorithm"], seed, outcome.winners_root, len(outcome.winners),
        {"strata": draw["strata"], "spillover": draw["spillover"], "fallbacks_taken": bundle["fallbacks_taken"],
         "sandbox": bundle["sandbox"]},
        signed, drawn_at, ctx.maker, ctx.checker)
    await published.publish_bundle(conn, ctx.settings.state_dir / "work", campaign.id, signed)
    await queue_win_notices(conn, campaign)
    details = {"seed_hex": seed.hex(), "winners": len(outcome.winners),
               "winners_root_hex": outcome.winners_root.hex(), "maker": ctx.maker,
               "fallbacks_taken": bundle["fallbacks_taken"], "sandbox": bundle["sandbox"]}
    await campaigns.transition(conn, campaign.id, "drawn", ctx.checker, details)
    await ctx.progress(4, DRAW_STEPS, "handing over to packets")
    for hand_over in hand_overs:
        details.update(await hand_over(conn, campaign, outcome))
    return details


async def queue_win_notices(conn: asyncpg.Connection, campaign: Campaign) -> None:
    deadline = campaign.claim_deadline.strftime("%Y-%m-%d %H:%M UTC")
    await conn.execute(
        """INSERT INTO notification_outbox (campaign_id, ticket, channel, recipient, body)
           SELECT w.campaign_id, w.ticket, 'sms', c.pseudonym,
                  format($2, w.ticket, trim_scale(w.amount_fen / 100.0)::text)
           FROM draw_winners w
           JOIN committed_registrants c ON c.campaign_id = w.campaign_id AND c.ticket = w.ticket
           WHERE w.campaign_id = $1""",
        campaign.id, WIN_NOTICE.replace("{name}", campaign.name.replace("%", "%%")).replace("{deadline}", deadline)
        .replace("{ticket}", "%s").replace("{yuan}", "%s"))


async def signed_bundle(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> bytes:
    data = await conn.fetchval("SELECT bundle FROM draws WHERE campaign_id = $1", campaign_id)
    if data is None:
        raise NotFound(f"campaign {campaign_id} has not been drawn", code="not_drawn")
    return bytes(data)
