"""The draw algorithms a campaign can name, behind one call.

`sha256-score-v1` is the default (lottery.selection). `rfc3797` applies IETF RFC 3797 exactly to
pools ordered by ticket number, with the draw seed as the only random source:
  * round 1, per stratum in id order: key = canonical_key(["<seed hex>", "stratum:<id>"]),
    pool = the stratum's tickets ascending, select min(quota, pool) in the RFC's order;
  * spill-over ("redistribute-lowest-scores"): key with "spillover", pool = every ticket not yet
    selected, ascending; select the unused places;
  * rank order: round 1 before round 2; within a round by position in its selection (first drawn
    first), then stratum id. The campaign's tiers take their counts from the head of that order.
The RFC writes the selection counter as two bytes, so one selection takes at most 65,536 winners;
campaigns using this algorithm are validated to at most 65,536 winners in all, which bounds every
stratum's selection and the spill-over.
Imports only the standard library: the offline verifier runs this.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor

from lottery import rfc3797
from lottery.selection import (
    SPILLOVER_RULES,
    DrawOutcome,
    StratumOutcome,
    TierSpec,
    Winner,
    check_places,
    select,
    winners_root,
)

ALGORITHMS = ("sha256-score-v1", "rfc3797")


def run(algorithm: str, seed: bytes, tickets_by_stratum: Mapping[str, Sequence[int]], quotas: dict[str, int],
        tiers: Sequence[TierSpec], spillover: str, pool: Executor | None = None) -> DrawOutcome:
    if algorithm == "sha256-score-v1":
        return select(seed, tickets_by_stratum, quotas, tiers, spillover, pool)
    if algorithm == "rfc3797":
        return select_rfc3797(seed, tickets_by_stratum, quotas, tiers, spillover)
    raise ValueError(f"unknown draw algorithm {algorithm!r}")


def rfc3797_key(seed: bytes, purpose: str) -> str:
    return rfc3797.canonical_key([seed.hex(), purpose])


def select_rfc3797(seed: bytes, tickets_by_stratum: Mapping[str, Sequence[int]], quotas: dict[str, int],
                   tiers: Sequence[TierSpec], spillover: str) -> DrawOutcome:
    if spillover not in SPILLOVER_RULES:
        raise ValueError(f"unknown spill-over rule {spillover!r}")
    check_places(quotas, tiers)
    unknown = set(tickets_by_stratum) - set(quotas)
    if unknown:
        raise ValueError(f"registrants in strata without a quota: {sorted(unknown)}")
    chosen: dict[int, tuple[str, int, int]] = {}  # ticket -> (stratum, round, position in selection)
    strata: list[StratumOutcome] = []
    for stratum in sorted(quotas):
        pool = sorted(tickets_by_stratum.get(stratum, ()))
        take = min(quotas[stratum], len(pool))
        picked = rfc3797.select(rfc3797_key(seed, f"stratum:{stratum}"), pool, take)
        for position, ticket in enumerate(picked):
            chosen[ticket] = (stratum, 1, position)
        strata.append(StratumOutcome(stratum, len(pool), quotas[stratum], take, None))
    unused = sum(max(0, q - len(tickets_by_stratum.get(s, ()))) for s, q in quotas.items())
    if spillover == "redistribute-lowest-scores" and unused:
        stratum_of = {t: s for s, ts in tickets_by_stratum.items() for t in ts}
        rest = sorted(t for t in stratum_of if t not in chosen)
        picked = rfc3797.select(rfc3797_key(seed, "spillover"), rest, min(unused, len(rest)))
        for position, ticket in enumerate(picked):
            chosen[ticket] = (stratum_of[ticket], 2, position)
    order = sorted(chosen, key=lambda t: (chosen[t][1], chosen[t][2], chosen[t][0]))
    winners: list[Winner] = []
    position = 0
    for tier in tiers:
        for rank, ticket in enumerate(order[position:position + tier.count], start=position):
            stratum, rnd, _ = chosen[ticket]
            winners.append(Winner(ticket, stratum, tier.tier, tier.amount_fen, struct.pack(">Q", rank), rnd))
        position += tier.count
    return DrawOutcome(winners, strata, unused, None, winners_root(winners))
