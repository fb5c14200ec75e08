"""The `rfc3797` draw algorithm is RFC 3797 selection applied exactly as lottery/algorithms.py says.

Per stratum (in id order) the key is canonical_key(["<seed hex>", "stratum:<id>"]) over the
stratum's tickets sorted ascending; the spill-over uses "spillover" over every ticket not yet
selected; round 1 ranks before round 2, then position in its selection, then stratum id. A naive
transcription of the RFC's reference procedure (list.pop) cross-checks rfc3797.select.
"""

from __future__ import annotations

import hashlib
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from lottery import algorithms, rfc3797
from lottery.selection import TierSpec

REDISTRIBUTE = "redistribute-lowest-scores"
# seed, tickets by stratum, quotas, tiers
Case = tuple[bytes, dict[str, list[int]], dict[str, int], list[TierSpec]]


def naive_rfc3797(key: str, pool: list[int], count: int) -> list[int]:
    """RFC 3797 section 4 as its reference code does it: MD5(j || key || j) mod remaining, pop."""
    remaining = list(pool)
    picked = []
    for j in range(count):
        bracket = j.to_bytes(2, "big")
        value = int.from_bytes(hashlib.md5(bracket + key.encode() + bracket, usedforsecurity=False).digest(), "big")
        picked.append(remaining.pop(value % len(remaining)))
    return picked


def test_documented_key_string() -> None:
    seed = bytes(range(32))
    assert algorithms.rfc3797_key(seed, "stratum:north") == seed.hex() + "/stratum:north/"
    assert rfc3797.canonical_key([seed.hex(), "spillover"]) == seed.hex() + "/spillover/"


@st.composite
def cases(draw: st.DrawFn) -> Case:
    seed = draw(st.binary(min_size=32, max_size=32))
    names = draw(st.lists(st.sampled_from(["north", "south", "east", "west", "z-9"]), min_size=1, max_size=4,
                          unique=True))
    quotas = {n: draw(st.integers(1, 15)) for n in names}
    tickets = draw(st.lists(st.integers(1, 10**9), unique=True, max_size=90))
    by_stratum: dict[str, list[int]] = {n: [] for n in names}
    for t in tickets:
        by_stratum[draw(st.sampled_from(names))].append(t)  # unsorted, as rows might arrive
    total = sum(quotas.values())
    first = draw(st.integers(1, total))
    tiers = [TierSpec("first", 8_000, first)] + ([TierSpec("second", 2_000, total - first)] if total > first else [])
    return seed, by_stratum, quotas, tiers


@settings(max_examples=150, deadline=None)
@given(cases(), st.sampled_from([REDISTRIBUTE, "none"]))
def test_run_equals_rfc3797_select_with_the_documented_keys(case: Case, spillover: str) -> None:
    seed, by_stratum, quotas, tiers = case
    outcome = algorithms.run("rfc3797", seed, by_stratum, quotas, tiers, spillover)

    order: list[tuple[int, int, str, int]] = []  # (round, position, stratum, ticket)
    selected: set[int] = set()
    for stratum in sorted(quotas):
        pool = sorted(by_stratum[stratum])
        take = min(quotas[stratum], len(pool))
        key = rfc3797.canonical_key([seed.hex(), f"stratum:{stratum}"])
        picked = rfc3797.select(key, pool, take)
        assert picked == naive_rfc3797(key, pool, take)
        assert {w.ticket for w in outcome.winners if w.stratum == stratum and w.round == 1} == set(picked)
        order += [(1, i, stratum, t) for i, t in enumerate(picked)]
        selected.update(picked)
    unused = sum(max(0, q - len(by_stratum[s])) for s, q in quotas.items())
    if spillover == REDISTRIBUTE and unused:
        rest = sorted(t for ts in by_stratum.values() for t in ts if t not in selected)
        key = rfc3797.canonical_key([seed.hex(), "spillover"])
        picked = rfc3797.select(key, rest, min(unused, len(rest)))
        assert picked == naive_rfc3797(key, rest, min(unused, len(rest)))
        stratum_of = {t: s for s, ts in by_stratum.items() for t in ts}
        order += [(2, i, stratum_of[t], t) for i, t in enumerate(picked)]
    order.sort()

    ranked = sorted(outcome.winners, key=lambda w: w.rank_key)
    assert [(w.round, w.stratum, w.ticket) for w in ranked] == [(r, s, t) for r, _, s, t in order]
    assert [w.rank_key for w in ranked] == [struct.pack(">Q", i) for i in range(len(order))]
    expected_tiers = [t.tier for t in tiers for _ in range(t.count)][:len(order)]
    assert [w.tier for w in ranked] == expected_tiers


def test_a_small_draw_by_hand() -> None:
    seed = hashlib.sha256(b"rfc3797 by hand").digest()
    by_stratum = {"a": [30, 10, 20, 40, 50], "b": [7]}
    quotas = {"a": 2, "b": 3}
    tiers = [TierSpec("gold", 100, 1), TierSpec("silver", 10, 4)]
    outcome = algorithms.run("rfc3797", seed, by_stratum, quotas, tiers, REDISTRIBUTE)
    a = naive_rfc3797(f"{seed.hex()}/stratum:a/", [10, 20, 30, 40, 50], 2)
    b = naive_rfc3797(f"{seed.hex()}/stratum:b/", [7], 1)
    spill = naive_rfc3797(f"{seed.hex()}/spillover/", sorted({10, 20, 30, 40, 50} - set(a)), 2)
    ranked = sorted(outcome.winners, key=lambda w: w.rank_key)
    # Round 1 position 0 of a, then of b, then position 1 of a; then the spill-over in its order.
    assert [w.ticket for w in ranked] == [a[0], b[0], a[1], *spill]
    assert [w.tier for w in ranked] == ["gold", "silver", "silver", "silver", "silver"]
    assert outcome.unused_quota == 2
    assert [(s.stratum, s.registrants, s.winners_round1) for s in outcome.strata] == [("a", 5, 2), ("b", 1, 1)]
