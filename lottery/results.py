"""What each registrant may know about the draw: their own score, their stratum's cutoff, totals.

Every registrant, not only winners, can see why they did or did not win: with `sha256-score-v1`
a ticket wins in round 1 exactly when its rank key (score, then ticket) is at or below its
stratum's cutoff, and in round 2 when at or below the spill-over cutoff.
"""

from __future__ import annotations

import struct

import asyncpg
import msgspec

from lottery import campaigns
from lottery.registration import find_own
from lottery.seed import rank_key, score
from stimulus.errors import NotFound

TICKET_MAX = 2**63 - 1  # tickets are stored as bigint


class StratumTotals(msgspec.Struct, frozen=True):
    stratum: str
    registrants: int
    quota: int
    winners_round1: int
    cutoff_score_hex: str | None
    cutoff_ticket: int | None


class DrawResult(msgspec.Struct, frozen=True):
    campaign_id: str
    ticket: int
    stratum: str
    won: bool
    tier: str | None
    amount_fen: int | None
    round: int | None
    algorithm: str
    seed_hex: str
    score_hex: str | None
    stratum_totals: StratumTotals
    spillover_cutoff_score_hex: str | None
    spillover_cutoff_ticket: int | None
    registrants: int
    winners: int
    sandbox: bool
    explanation: str


class TicketResult(msgspec.Struct, frozen=True):
    """One committed ticket's line of the published result (the bundle's winners list, by ticket)."""

    campaign_id: str
    ticket: int
    stratum: str
    algorithm: str
    won: bool
    tier: str | None
    amount_fen: int | None
    round: int | None


async def result_for(pool: asyncpg.Pool, campaign_id: str, id_hmac: bytes) -> DrawResult:
    own = await find_own(pool, campaign_id, id_hmac)
    draw = await pool.fetchrow(
        "SELECT algorithm, seed, winner_count, strata FROM draws WHERE campaign_id = $1", campaign_id)
    if draw is None:
        raise NotFound("the draw has not run yet", code="not_drawn")
    committed = await pool.fetchrow(
        """SELECT c.stratum, (SELECT tree_size FROM commitments WHERE campaign_id = $1) AS size
           FROM committed_registrants c WHERE c.campaign_id = $1 AND c.ticket = $2""", campaign_id, own.ticket)
    if committed is None:
        raise NotFound("this registration was not in the committed list", code="ticket_not_committed")
    winner = await pool.fetchrow(
        "SELECT tier, amount_fen, round FROM draw_winners WHERE campaign_id = $1 AND ticket = $2",
        campaign_id, own.ticket)
    strata = draw["strata"]
    entry = next(s for s in strata["strata"] if s["stratum"] == committed["stratum"])
    totals = StratumTotals(entry["stratum"], entry["registrants"], entry["quota"], entry["winners_round1"],
                           entry["cutoff_score_hex"], entry["cutoff_ticket"])
    spill = strata["spillover"]
    seed = bytes(draw["seed"])
    scored = draw["algorithm"] == "sha256-score-v1"
    own_score = score(seed, own.ticket) if scored else None
    explanation = _explain(own.ticket, own_score, totals, spill, winner, scored)
    return DrawResult(
        campaign_id, own.ticket, committed["stratum"], winner is not None,
        winner["tier"] if winner else None, winner["amount_fen"] if winner else None,
        winner["round"] if winner else None, draw["algorithm"], seed.hex(),
        own_score.hex() if own_score else None, totals, spill["cutoff_score_hex"], spill["cutoff_ticket"],
        committed["size"], draw["winner_count"], strata["sandbox"], explanation)


def _key(score_hex: str | None, ticket: int | None) -> bytes | None:
    if score_hex is None or ticket is None:
        return None
    return bytes.fromhex(score_hex) + struct.pack(">Q", ticket)


def _explain(ticket: int, own_score: bytes | None, totals: StratumTotals, spill: dict[str, object],
             winner: asyncpg.Record | None, scored: bool) -> str:
    if not scored:
        return ("won: selected by the RFC 3797 procedure" if winner else "not selected by the RFC 3797 procedure") \
            + "; re-derive with stimulus-verify and the published registrant list"
    assert own_score is not None
    key = rank_key(own_score, ticket)
    cutoff = _key(totals.cutoff_score_hex, totals.cutoff_ticket)
    if winner is not None and winner["round"] == 1:
        return f"won in stratum {totals.stratum}: {totals.quota} places, your score is among the lowest"
    if winner is not None:
        return "won a spill-over place left by a stratum with fewer registrants than places"
    if cutoff is not None and key > cutoff:
        spill_key = _key(spill.get("cutoff_score_hex"), spill.get("cutoff_ticket"))  # type: ignore[arg-type]
        extra = " and above the spill-over cutoff" if spill_key is not None else ""
        return f"not drawn: your score is above stratum {totals.stratum}'s cutoff{extra}"
    return "not drawn"


async def ticket_result(pool: asyncpg.Pool, campaign_id: str, ticket: int) -> TicketResult:
    """A committed ticket's line of the published result, for anyone who knows the ticket."""
    row = await pool.fetchrow(
        """SELECT d.algorithm, c.stratum, w.tier, w.amount_fen, w.round
           FROM draws d
           LEFT JOIN committed_registrants c ON c.campaign_id = d.campaign_id AND c.ticket = $2
           LEFT JOIN draw_winners w ON w.campaign_id = d.campaign_id AND w.ticket = $2
           WHERE d.campaign_id = $1""", campaign_id, ticket if 0 <= ticket <= TICKET_MAX else -1)
    if row is None:
        await campaigns.fetch(pool, campaign_id)  # an unknown campaign is campaign_not_found
        raise NotFound(f"campaign {campaign_id} has not been drawn", code="not_drawn")
    if row["stratum"] is None:
        raise NotFound(f"ticket {ticket} is not in campaign {campaign_id}'s committed list",
                       code="ticket_not_committed")
    return TicketResult(campaign_id, ticket, row["stratum"], row["algorithm"], row["tier"] is not None, row["tier"],
                        row["amount_fen"], row["round"])
