"""Winning must not depend on the ticket: no modulo bias, no drift with ticket order.

The DV-2012 visa lottery was voided because winners came mostly from the first days of
registration. Here one stratum of 40 tickets draws 10 places under many seeds (seed i is
SHA-256 of i, so the run is deterministic) and the win counts are tested for uniformity.

Sampling 10 of 40 without replacement makes each ticket's count over n seeds have variance
n*p*(1-p) (p = 10/40) and the counts covary by -n*p*(1-p)/(k-1); the statistic
    X = (k-1)/(k * n*p*(1-p)) * sum_i (count_i - n*p)^2
is then chi-square with k-1 degrees of freedom (k = 40). The critical values are computed below
from the regularised gamma function and cross-checked with the published table value.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import pytest

from lottery import algorithms, rfc3797
from lottery.selection import TierSpec

TICKETS = 40
QUOTA = 10
P = QUOTA / TICKETS


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for chi-square with `dof` degrees of freedom (series for the lower gamma)."""
    a, z = dof / 2, x / 2
    term = total = 1 / a
    n = 1
    while term > 1e-17 * total:
        term *= z / (a + n)
        total += term
        n += 1
    return 1 - total * math.exp(-z + a * math.log(z) - math.lgamma(a))


def chi2_critical(dof: int, alpha: float) -> float:
    lo, hi = 0.0, 10.0 * dof + 100
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if chi2_sf(mid, dof) > alpha else (lo, mid)
    return lo


def test_critical_values_match_the_published_table() -> None:
    # NIST/SEMATECH e-Handbook 1.3.6.7.4, upper 0.1% points: 39 dof -> 72.055, 19 dof -> 43.820.
    assert chi2_critical(39, 0.001) == pytest.approx(72.055, abs=0.001)
    assert chi2_critical(19, 0.001) == pytest.approx(43.820, abs=0.001)


def win_counts(algorithm: str, seeds: int, tickets: Sequence[int]) -> list[int]:
    counts = dict.fromkeys(tickets, 0)
    tiers = [TierSpec("t", 1, QUOTA)]
    for i in range(seeds):
        seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
        outcome = algorithms.run(algorithm, seed, {"s": tickets}, {"s": QUOTA}, tiers, "none")
        assert len(outcome.winners) == QUOTA
        for winner in outcome.winners:
            counts[winner.ticket] += 1
    return [counts[t] for t in tickets]


def statistic(counts: list[int], seeds: int) -> float:
    k = len(counts)
    expected = seeds * P
    variance = seeds * P * (1 - P)
    return (k - 1) / (k * variance) * sum((c - expected) ** 2 for c in counts)


def check_order_independence(counts: list[int], seeds: int) -> None:
    """First half against second half of the tickets, and the mean position of a win."""
    half = len(counts) // 2
    first = sum(counts[:half])
    # Winners per seed in the first half: hypergeometric, variance at most the binomial 10*p*(1-p).
    sigma = math.sqrt(seeds * QUOTA * 0.5 * 0.5)
    assert abs(first - seeds * QUOTA / 2) < 4.5 * sigma, (first, sigma)
    wins = sum(counts)
    mean_position = sum(i * c for i, c in enumerate(counts, start=1)) / wins
    # Position of one win is uniform on 1..40 (variance (40^2-1)/12); wins within a seed are
    # negatively correlated, so the independent-draws sigma is an upper bound.
    sigma_mean = math.sqrt((len(counts) ** 2 - 1) / 12 / wins)
    assert abs(mean_position - (len(counts) + 1) / 2) < 4.5 * sigma_mean, (mean_position, sigma_mean)


ORDERINGS: dict[str, Callable[[], list[int]]] = {
    # Consecutive tickets, as registration hands them out.
    "consecutive": lambda: list(range(1, TICKETS + 1)),
    # Far apart and spanning the 64-bit range: the score must not care about magnitude.
    "sparse": lambda: sorted({int.from_bytes(hashlib.sha256(b"t%d" % i).digest()[:8], "big") for i in range(TICKETS)}),
}


@pytest.mark.parametrize("ordering", sorted(ORDERINGS))
def test_sha256_score_wins_are_uniform_over_tickets(ordering: str) -> None:
    seeds = 4000
    tickets = ORDERINGS[ordering]()
    counts = win_counts("sha256-score-v1", seeds, tickets)
    assert sum(counts) == seeds * QUOTA
    assert statistic(counts, seeds) < chi2_critical(TICKETS - 1, 0.001)
    check_order_independence(counts, seeds)


def test_rfc3797_wins_are_uniform_over_tickets() -> None:
    seeds = 2000
    tickets = ORDERINGS["consecutive"]()
    counts = win_counts("rfc3797", seeds, tickets)
    assert statistic(counts, seeds) < chi2_critical(TICKETS - 1, 0.001)
    check_order_independence(counts, seeds)


def test_rfc3797_first_pick_is_uniform_over_positions() -> None:
    # The RFC reduces a 128-bit value modulo the pool size; the bias is below 2^-120, so the
    # first pick must be uniform over a pool of 20 positions (multinomial: 19 dof).
    seeds, pool = 4000, 20
    counts = [0] * pool
    for i in range(seeds):
        key = rfc3797.canonical_key([hashlib.sha256(i.to_bytes(8, "big")).hexdigest(), "first-pick"])
        counts[rfc3797.select_positions(key, pool, 1)[0] - 1] += 1
    expected = seeds / pool
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < chi2_critical(pool - 1, 0.001)


def test_the_statistic_catches_a_biased_draw() -> None:
    # A draw that favoured the lowest ticket numbers by one place in ten would be rejected: the
    # test has the power it claims (counts as a modulo-biased draw of this size would give).
    seeds = 4000
    counts = [int(seeds * P * (1.1 if i < TICKETS // 2 else 0.9)) for i in range(TICKETS)]
    assert statistic(counts, seeds) > chi2_critical(TICKETS - 1, 0.001)
    with pytest.raises(AssertionError):
        check_order_independence(counts, seeds)
