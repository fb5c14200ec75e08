"""Who wins: properties of the stratified draw, checked against a plain reference of the spec.

The reference below re-derives each rule of lottery/selection.py's docstring from the score
definition (lottery/seed.py) with sorting instead of heaps, so a shortcut in the implementation
(the per-stratum `quota + spill` candidates, the tier slicing) is tested against the rule itself.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery import algorithms
from lottery.merkle import root_of
from lottery.seed import rank_key, score
from lottery.selection import (
    DrawOutcome,
    TierSpec,
    Winner,
    group_by_stratum,
    select,
    winner_leaf,
    winners_root,
)

REDISTRIBUTE = "redistribute-lowest-scores"
# seed, tickets by stratum, quotas, tiers
Case = tuple[bytes, dict[str, list[int]], dict[str, int], list[TierSpec]]


@st.composite
def draws(draw: st.DrawFn) -> Case:
    """A seed, 1-4 strata (some possibly empty, some under quota), positive quotas, and tiers
    whose counts add up to the quotas (as campaigns.validate insists)."""
    seed = draw(st.binary(min_size=32, max_size=32), label="seed")
    names = [f"s{i}" for i in range(draw(st.integers(1, 4), label="strata"))]
    quotas = {name: draw(st.integers(1, 12), label=f"quota {name}") for name in names}
    sizes = [draw(st.integers(0, 30), label=f"size {name}") for name in names]
    tickets = draw(st.lists(st.integers(0, 2**64 - 1), min_size=sum(sizes), max_size=sum(sizes),
                            unique=True), label="tickets")
    by_stratum: dict[str, list[int]] = {}
    start = 0
    for name, size in zip(names, sizes, strict=True):
        if size or draw(st.booleans(), label=f"list empty {name}"):
            by_stratum[name] = tickets[start:start + size]
        start += size
    total = sum(quotas.values())
    cuts = sorted(draw(st.sets(st.integers(1, total - 1), max_size=2), label="tier cuts")) if total > 1 else []
    bounds = [0, *cuts, total]
    tiers = [TierSpec(f"tier{k + 1}", 10_000 * (3 - k), bounds[k + 1] - bounds[k]) for k in range(len(bounds) - 1)]
    return seed, by_stratum, quotas, tiers


def key_of(seed: bytes, ticket: int) -> bytes:
    return rank_key(score(seed, ticket), ticket)


def reference_sha256(seed: bytes, by_stratum: dict[str, list[int]], quotas: dict[str, int],
                     spillover: str) -> tuple[dict[int, str], set[int], set[int]]:
    """(stratum of every ticket, round-1 winners, round-2 winners) from the written rules."""
    stratum_of = {t: s for s, ts in by_stratum.items() for t in ts}
    round1: set[int] = set()
    for stratum, quota in quotas.items():
        ranked = sorted(by_stratum.get(stratum, []), key=lambda t: key_of(seed, t))
        round1.update(ranked[:quota])
    unused = sum(max(0, q - len(by_stratum.get(s, []))) for s, q in quotas.items())
    rest = sorted((t for t in stratum_of if t not in round1), key=lambda t: key_of(seed, t))
    round2 = set(rest[:unused]) if spillover == REDISTRIBUTE else set()
    return stratum_of, round1, round2


def check_tiers(winners: list[Winner], tiers: list[TierSpec]) -> None:
    """Tiers take their counts in declared order from the head of the rank order."""
    remaining = len(winners)
    previous_max: bytes | None = None
    for tier in tiers:
        members = [w for w in winners if w.tier == tier.tier]
        assert len(members) == min(tier.count, remaining)
        remaining -= len(members)
        assert all(w.amount_fen == tier.amount_fen for w in members)
        if members:
            if previous_max is not None:
                assert min(w.rank_key for w in members) > previous_max
            previous_max = max(w.rank_key for w in members)
    assert remaining == 0


def check_common(outcome: DrawOutcome, by_stratum: dict[str, list[int]], quotas: dict[str, int],
                 tiers: list[TierSpec], spillover: str) -> None:
    stratum_of = {t: s for s, ts in by_stratum.items() for t in ts}
    tickets = [w.ticket for w in outcome.winners]
    assert len(tickets) == len(set(tickets)), "winners are distinct"
    assert all(stratum_of[w.ticket] == w.stratum for w in outcome.winners)
    registrants = len(stratum_of)
    unused = sum(max(0, q - len(by_stratum.get(s, []))) for s, q in quotas.items())
    assert outcome.unused_quota == unused
    round1_only = sum(min(q, len(by_stratum.get(s, []))) for s, q in quotas.items())
    if spillover == REDISTRIBUTE:
        assert len(outcome.winners) == min(sum(quotas.values()), registrants)
    else:
        assert len(outcome.winners) == round1_only
        assert all(w.round == 1 for w in outcome.winners)
    assert [s.stratum for s in outcome.strata] == sorted(quotas)
    for entry in outcome.strata:
        n = len(by_stratum.get(entry.stratum, []))
        assert (entry.registrants, entry.quota) == (n, quotas[entry.stratum])
        assert entry.winners_round1 == min(entry.quota, n)
        round1 = [w for w in outcome.winners if w.stratum == entry.stratum and w.round == 1]
        assert len(round1) == min(entry.quota, n)
    check_tiers(outcome.winners, tiers)
    ordered = sorted(outcome.winners, key=lambda w: w.ticket)
    assert outcome.winners_root == winners_root(outcome.winners)
    assert outcome.winners_root == root_of([winner_leaf(w.ticket, w.stratum, w.tier, w.amount_fen) for w in ordered])


@settings(max_examples=300, deadline=None)
@given(draws(), st.sampled_from([REDISTRIBUTE, "none"]))
def test_sha256_draw_follows_the_rules(case: Case, spillover: str) -> None:
    seed, by_stratum, quotas, tiers = case
    outcome = select(seed, by_stratum, quotas, tiers, spillover)
    check_common(outcome, by_stratum, quotas, tiers, spillover)
    stratum_of, round1, round2 = reference_sha256(seed, by_stratum, quotas, spillover)
    assert {w.ticket for w in outcome.winners if w.round == 1} == round1
    assert {w.ticket for w in outcome.winners if w.round == 2} == round2
    assert all(w.rank_key == key_of(seed, w.ticket) for w in outcome.winners)
    # Tiers in score order across all strata and both rounds.
    ranked = sorted(outcome.winners, key=lambda w: w.rank_key)
    tier_order = {t.tier: k for k, t in enumerate(tiers)}
    assert [tier_order[w.tier] for w in ranked] == sorted(tier_order[w.tier] for w in ranked)
    # Each stratum's cutoff is its last round-1 winner; every other registrant there scores above it.
    for entry in outcome.strata:
        members = by_stratum.get(entry.stratum, [])
        won = [w.rank_key for w in outcome.winners if w.stratum == entry.stratum and w.round == 1]
        if len(members) > entry.quota:
            assert entry.cutoff_key == max(won)
            assert all(key_of(seed, t) > entry.cutoff_key for t in members if t not in round1)
        else:
            assert entry.cutoff_key is None
    # The spill-over cutoff is the last round-2 winner's key, published whenever someone outside
    # round 1 lost (so every loser can check they scored above it); null when nobody lost it.
    round2_keys = [w.rank_key for w in outcome.winners if w.round == 2]
    losers = set(stratum_of) - {w.ticket for w in outcome.winners}
    if round2_keys and losers:
        assert outcome.spill_cutoff_key == max(round2_keys)
        assert all(key_of(seed, t) > outcome.spill_cutoff_key for t in losers)
    else:
        assert outcome.spill_cutoff_key is None


def test_spill_cutoff_is_given_whenever_someone_lost() -> None:
    # Stratum A: 12 registrants for 5 places; B: none for 5, so 5 places spill over to A's next 5
    # lowest keys, and A's last 2 lose: they need the cutoff to check they scored above it.
    seed = hashlib.sha256(b"spill").digest()
    outcome = select(seed, {"A": list(range(1, 13)), "B": []}, {"A": 5, "B": 5},
                     [TierSpec("t", 1, 10)], REDISTRIBUTE)
    assert len(outcome.winners) == 10
    assert outcome.spill_cutoff_key == max(w.rank_key for w in outcome.winners if w.round == 2)
    # With 10 registrants everyone wins and there is nothing to publish.
    outcome = select(seed, {"A": list(range(1, 11)), "B": []}, {"A": 5, "B": 5},
                     [TierSpec("t", 1, 10)], REDISTRIBUTE)
    assert len(outcome.winners) == 10 and outcome.spill_cutoff_key is None


@settings(max_examples=200, deadline=None)
@given(draws(), st.sampled_from([REDISTRIBUTE, "none"]))
def test_rfc3797_draw_quota_properties(case: Case, spillover: str) -> None:
    seed, by_stratum, quotas, tiers = case
    outcome = algorithms.run("rfc3797", seed, by_stratum, quotas, tiers, spillover)
    check_common(outcome, by_stratum, quotas, tiers, spillover)
    # Round 2 only takes tickets that did not win round 1, and the rank order puts round 1 first.
    ranked = sorted(outcome.winners, key=lambda w: w.rank_key)
    assert [w.rank_key for w in ranked] == [k.to_bytes(8, "big") for k in range(len(ranked))]
    rounds = [w.round for w in ranked]
    assert rounds == sorted(rounds)
    # RFC 3797 has no score to publish a cutoff in: ticket checks need the whole list.
    assert all(entry.cutoff_key is None for entry in outcome.strata)
    assert outcome.spill_cutoff_key is None


@settings(max_examples=50, deadline=None)
@given(draws(), st.sampled_from(algorithms.ALGORITHMS), st.sampled_from([REDISTRIBUTE, "none"]))
def test_deterministic_and_independent_of_input_order(case: Case, algorithm: str, spillover: str) -> None:
    seed, by_stratum, quotas, tiers = case
    first = algorithms.run(algorithm, seed, by_stratum, quotas, tiers, spillover)
    again = algorithms.run(algorithm, seed, by_stratum, quotas, tiers, spillover)
    reordered = {s: list(reversed(ts)) for s, ts in reversed(list(by_stratum.items()))}
    shuffled = algorithms.run(algorithm, seed, reordered, dict(reversed(list(quotas.items()))), tiers, spillover)
    assert first == again
    assert sorted(first.winners, key=lambda w: w.ticket) == sorted(shuffled.winners, key=lambda w: w.ticket)
    assert first.winners_root == shuffled.winners_root
    assert first.strata == shuffled.strata


@pytest.mark.parametrize("algorithm", algorithms.ALGORITHMS)
def test_another_seed_gives_another_outcome(algorithm: str) -> None:
    by_stratum = {"a": list(range(1, 101)), "b": list(range(101, 161))}
    quotas = {"a": 10, "b": 10}
    tiers = [TierSpec("first", 50_000, 5), TierSpec("second", 20_000, 15)]
    one = algorithms.run(algorithm, hashlib.sha256(b"seed one").digest(), by_stratum, quotas, tiers, REDISTRIBUTE)
    two = algorithms.run(algorithm, hashlib.sha256(b"seed two").digest(), by_stratum, quotas, tiers, REDISTRIBUTE)
    assert {w.ticket for w in one.winners} != {w.ticket for w in two.winners}
    assert one.winners_root != two.winners_root


def test_spill_over_takes_the_lowest_keys_among_non_winners() -> None:
    seed = hashlib.sha256(b"spill-over example").digest()
    by_stratum = {"big": list(range(1, 41)), "mid": list(range(200, 208)), "small": [100, 101], "empty": []}
    quotas = {"big": 5, "mid": 4, "small": 4, "empty": 3}
    tiers = [TierSpec("first", 5_000, 4), TierSpec("rest", 1_000, 12)]
    outcome = select(seed, by_stratum, quotas, tiers, REDISTRIBUTE)
    assert outcome.unused_quota == 2 + 3

    def lowest(tickets: list[int], n: int) -> list[int]:
        return sorted(tickets, key=lambda t: key_of(seed, t))[:n]

    round1 = set(lowest(by_stratum["big"], 5)) | set(lowest(by_stratum["mid"], 4)) | {100, 101}
    losers = [t for ts in by_stratum.values() for t in ts if t not in round1]
    expected_spill = lowest(losers, 5)
    assert {w.ticket for w in outcome.winners if w.round == 1} == round1
    assert {w.ticket for w in outcome.winners if w.round == 2} == set(expected_spill)
    assert outcome.spill_cutoff_key == key_of(seed, expected_spill[-1])
    assert all(key_of(seed, t) > outcome.spill_cutoff_key for t in set(losers) - set(expected_spill))
    first = lowest([w.ticket for w in outcome.winners], 4)
    assert {w.ticket for w in outcome.winners if w.tier == "first"} == set(first)

    none = select(seed, by_stratum, quotas, tiers, "none")
    assert len(none.winners) == 11 and none.unused_quota == 5 and none.spill_cutoff_key is None
    assert {w.ticket for w in none.winners} == round1


def test_ties_on_score_cannot_happen_but_the_ticket_breaks_them() -> None:
    # rank key = score || ticket: equal scores would order by ticket number, as bytes.
    assert rank_key(b"\x00" * 32, 1) < rank_key(b"\x00" * 32, 2) < rank_key(b"\x00" * 31 + b"\x01", 0)


def test_refuses_unknown_rules_and_strata() -> None:
    seed = bytes(32)
    with pytest.raises(ValueError, match="spill-over"):
        select(seed, {"a": [1]}, {"a": 1}, [TierSpec("t", 1, 1)], "lowest-first")
    for algorithm in algorithms.ALGORITHMS:
        with pytest.raises(ValueError, match="without a quota"):
            algorithms.run(algorithm, seed, {"a": [1], "x": [2]}, {"a": 1}, [TierSpec("t", 1, 1)], REDISTRIBUTE)
    with pytest.raises(ValueError, match="unknown draw algorithm"):
        algorithms.run("md5-v0", seed, {"a": [1]}, {"a": 1}, [TierSpec("t", 1, 1)], REDISTRIBUTE)


def test_group_by_stratum_keeps_order() -> None:
    assert group_by_stratum([5, 2, 9], ["b", "a", "b"]) == {"b": [5, 9], "a": [2]}
    with pytest.raises(ValueError):
        group_by_stratum([1, 2], ["a"])
