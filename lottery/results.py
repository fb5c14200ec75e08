"""What each registrant may know about the draw: their own score, their stratum's cutoff, totals.

Every registrant, not only winners, can see why they did or did not win: with `sha256-score-v1`
a ticket wins in round 1 exactly when its rank key (score, then ticket) is at or below its
stratum's cutoff, and in round 2 when at or below the spill-over cutoff.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from kernel.errors import NotFound
from lottery import campaigns
from lottery.seed import rank_key, score

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


# A draw never changes once it has run (one row per campaign, inserted once; its commitment's size
# likewise), so each process keeps the parts every result check reads, decoded: the result check
# then costs one statement, the registrant's own row joined to their committed line and prize.
DRAW_CACHE_ENTRIES = 64


@dataclass(frozen=True)
class DrawFacts:
    algorithm: str
    seed: bytes
    winner_count: int
    registrants: int
    strata: dict[str, StratumTotals]
    spill: dict[str, Any]
    sandbox: bool


_draws: dict[str, DrawFacts] = {}

_OWN_LINE = """SELECT r.ticket, c.stratum, w.tier, w.amount_fen, w.round FROM registrations r
    LEFT JOIN committed_registrants c ON c.campaign_id = r.campaign_id AND c.ticket = r.ticket
    LEFT JOIN draw_winners w ON w.campaign_id = r.campaign_id AND w.ticket = r.ticket
    WHERE r.campaign_id = $1 AND r.id_hmac = $2 AND r.withdrawn_at IS NULL"""


async def draw_facts(pool: asyncpg.Pool, campaign_id: str) -> DrawFacts:
    facts = _draws.get(campaign_id)
    if facts is not None:
        return facts
    draw = await pool.fetchrow(
        """SELECT d.algorithm, d.seed, d.winner_count, d.strata,
                  (SELECT tree_size FROM commitments WHERE campaign_id = $1) AS size
           FROM draws d WHERE d.campaign_id = $1""", campaign_id)
    if draw is None:
        raise NotFound("the draw has not run yet", code="not_drawn")
    strata = draw["strata"]
    facts = DrawFacts(
        draw["algorithm"], bytes(draw["seed"]), draw["winner_count"], draw["size"],
        {e["stratum"]: StratumTotals(e["stratum"], e["registrants"], e["quota"], e["winners_round1"],
                                     e["cutoff_score_hex"], e["cutoff_ticket"]) for e in strata["strata"]},
        strata["spillover"], strata["sandbox"])
    if len(_draws) >= DRAW_CACHE_ENTRIES:
        _draws.clear()
    _draws[campaign_id] = facts
    return facts


async def result_for(pool: asyncpg.Pool, campaign_id: str, id_hmac: bytes) -> DrawResult:
    own = await pool.fetchrow(_OWN_LINE, campaign_id, id_hmac)
    if own is None:
        raise NotFound("no registration for this person in this campaign", code="registration_not_found")
    draw = await draw_facts(pool, campaign_id)
    stratum = own["stratum"]
    if stratum is None:
        raise NotFound("this registration was not in the committed list", code="ticket_not_committed")
    ticket = own["ticket"]
    won = own["tier"] is not None
    totals = draw.strata[stratum]
    spill = draw.spill
    scored = draw.algorithm == "sha256-score-v1"
    own_score = score(draw.seed, ticket) if scored else None
    explanation = _explain(ticket, own_score, totals, spill, own["round"] if won else None, scored)
    return DrawResult(
        campaign_id, ticket, stratum, won, own["tier"], own["amount_fen"], own["round"], draw.algorithm,
        draw.seed.hex(), own_score.hex() if own_score else None, totals, spill["cutoff_score_hex"],
        spill["cutoff_ticket"], draw.registrants, draw.winner_count, draw.sandbox, explanation)


def _key(score_hex: str | None, ticket: int | None) -> bytes | None:
    if score_hex is None or ticket is None:
        return None
    return bytes.fromhex(score_hex) + struct.pack(">Q", ticket)


def _explain(ticket: int, own_score: bytes | None, totals: StratumTotals, spill: dict[str, Any],
             won_round: int | None, scored: bool) -> str:
    if not scored:
        return ("won: selected by the RFC 3797 procedure" if won_round is not None
                else "not selected by the RFC 3797 procedure") \
            + "; re-derive with stimulus-verify and the published registrant list"
    assert own_score is not None
    key = rank_key(own_score, ticket)
    cutoff = _key(totals.cutoff_score_hex, totals.cutoff_ticket)
    if won_round == 1:
        return f"won in stratum {totals.stratum}: {totals.quota} places, your score is among the lowest"
    if won_round is not None:
        return "won a spill-over place left by a stratum with fewer registrants than places"
    if cutoff is not None and key > cutoff:
        spill_key = _key(spill.get("cutoff_score_hex"), spill.get("cutoff_ticket"))
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
