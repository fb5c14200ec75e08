"""Who wins: per-stratum quotas by lowest score, the pre-declared spill-over, tiers in score order.

Round 1: in each stratum the `quota` lowest rank keys win (rank key = score || ticket, compared as
bytes: lower score first, lower ticket on a tie). A stratum with fewer registrants than its quota
leaves `unused = quota - registrants` places. Round 2 (spill-over rule
"redistribute-lowest-scores"): the `sum(unused)` lowest rank keys among all registrants who did not
win in round 1, across every stratum, win too. Rule "none": unused places stay empty.
Tiers (scope "global"): all winners in rank-key order; the campaign's tiers, in the order declared,
take `count` winners each. Every quota is at least 1 and the quotas add up to the tiers' total
(`check_places`), so every winner gets a tier and the cutoff of a stratum always exists.
Imports only the standard library: the offline verifier runs this.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from lottery.merkle import MerkleTree
from lottery.seed import SCORE_DOMAIN

SPILLOVER_RULES = ("none", "redistribute-lowest-scores")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True)
class TierSpec:
    tier: str
    amount_fen: int
    count: int


@dataclass(frozen=True)
class Winner:
    ticket: int
    stratum: str
    tier: str
    amount_fen: int
    rank_key: bytes
    round: int


@dataclass(frozen=True)
class StratumOutcome:
    stratum: str
    registrants: int
    quota: int
    winners_round1: int
    cutoff_key: bytes | None  # the last round-1 winner's rank key; None when every registrant won


@dataclass(frozen=True)
class DrawOutcome:
    winners: list[Winner]
    strata: list[StratumOutcome]
    unused_quota: int
    spill_cutoff_key: bytes | None
    winners_root: bytes

    @property
    def by_ticket(self) -> dict[int, Winner]:
        return {w.ticket: w for w in self.winners}


def winner_leaf(ticket: int, stratum: str, tier: str, amount_fen: int) -> bytes:
    s, t = stratum.encode(), tier.encode()
    return b"\x02" + _U64.pack(ticket) + struct.pack(">H", len(s)) + s + struct.pack(">H", len(t)) + t \
        + _U64.pack(amount_fen)


def winners_root(winners: Iterable[Winner]) -> bytes:
    ordered = sorted(winners, key=lambda w: w.ticket)
    return MerkleTree.from_leaves(winner_leaf(w.ticket, w.stratum, w.tier, w.amount_fen)
                                  for w in ordered).root


def _rank_keys(seed: bytes, tickets: Sequence[int]) -> Iterator[bytes]:
    prefix = SCORE_DOMAIN + seed
    sha = hashlib.sha256
    return (sha(prefix + p).digest() + p for p in map(_U64.pack, tickets))


def lowest_keys(seed: bytes, tickets: Sequence[int], count: int) -> list[bytes]:
    """The `count` lowest rank keys among `tickets`, ascending (one stratum's share of the work)."""
    return heapq.nsmallest(count, _rank_keys(seed, tickets))


def check_places(quotas: Mapping[str, int], tiers: Sequence[TierSpec]) -> None:
    """Refuse parameters under which a winner would get no tier or a stratum no place (spec R9.2.1)."""
    if any(q < 1 for q in quotas.values()):
        raise ValueError("every stratum's quota must be at least 1")
    if sum(quotas.values()) != sum(t.count for t in tiers):
        raise ValueError(f"quotas add up to {sum(quotas.values())} but the tiers to {sum(t.count for t in tiers)}")


def select(seed: bytes, tickets_by_stratum: Mapping[str, Sequence[int]], quotas: dict[str, int],
           tiers: Sequence[TierSpec], spillover: str, pool: Executor | None = None) -> DrawOutcome:
    """The whole draw from the seed and each stratum's tickets; `pool` spreads strata over processes."""
    if spillover not in SPILLOVER_RULES:
        raise ValueError(f"unknown spill-over rule {spillover!r}")
    check_places(quotas, tiers)
    unknown = set(tickets_by_stratum) - set(quotas)
    if unknown:
        raise ValueError(f"registrants in strata without a quota: {sorted(unknown)}")
    unused = sum(max(0, q - len(tickets_by_stratum.get(s, ()))) for s, q in quotas.items())
    spill = unused if spillover == "redistribute-lowest-scores" else 0
    order = sorted(quotas)
    # The spill-over winners can only come from each stratum's next `spill` lowest keys.
    jobs = [(seed, tickets_by_stratum.get(s, ()), quotas[s] + spill) for s in order]
    if pool is None:
        bests = [lowest_keys(*job) for job in jobs]
    else:
        bests = list(pool.map(lowest_keys, *zip(*jobs, strict=True)))
    round1: list[tuple[bytes, str]] = []
    extra: list[tuple[bytes, str]] = []
    strata: list[StratumOutcome] = []
    for stratum, best in zip(order, bests, strict=True):
        quota = quotas[stratum]
        registrants = len(tickets_by_stratum.get(stratum, ()))
        chosen = best[:quota]
        round1.extend((k, stratum) for k in chosen)
        extra.extend((k, stratum) for k in best[quota:])
        cutoff = chosen[-1] if registrants > quota and chosen else None
        strata.append(StratumOutcome(stratum, registrants, quota, len(chosen), cutoff))
    round2 = heapq.nsmallest(spill, extra) if spill else []
    # Published whenever someone outside round 1 lost the spill-over, so they can check why.
    outside_round1 = sum(len(tickets_by_stratum.get(s, ())) for s in order) - len(round1)
    spill_cutoff = round2[-1][0] if round2 and outside_round1 > len(round2) else None
    ranked = sorted([(k, s, 1) for k, s in round1] + [(k, s, 2) for k, s in round2])
    winners: list[Winner] = []
    position = 0
    for tier in tiers:
        for key, stratum, rnd in ranked[position:position + tier.count]:
            winners.append(Winner(_U64.unpack(key[32:])[0], stratum, tier.tier, tier.amount_fen, key, rnd))
        position += tier.count
    return DrawOutcome(winners, strata, unused, spill_cutoff, winners_root(winners))


def group_by_stratum(tickets: Iterable[int], strata: Iterable[str]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for ticket, stratum in zip(tickets, strata, strict=True):
        grouped.setdefault(stratum, []).append(ticket)
    return grouped
