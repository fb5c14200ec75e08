"""The circuit breaker's state machine and the backoff's bounds, on a fake clock."""

from __future__ import annotations

import random

import pytest

from wallet_adapter.backoff import Backoff
from wallet_adapter.bank_protocol import idempotency_key_for
from wallet_adapter.circuit_breaker import (
    BreakerOpen,
    BreakerOptions,
    BreakerState,
    CircuitBreaker,
)


def state_of(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # a call, so the type checker does not narrow it between steps


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _breaker(**options: float) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    settings = {"consecutive_failures": 3, "window_size": 10, "window_min_calls": 6,
                "failure_rate": 0.5, "cool_down_s": 1.0, "max_cool_down_s": 4.0, **options}
    return CircuitBreaker("test", BreakerOptions(**settings), clock), clock  # type: ignore[arg-type]


def test_consecutive_failures_open_then_a_probe_closes() -> None:
    breaker, clock = _breaker()
    for _ in range(3):
        breaker.record_failure(breaker.acquire())
    assert state_of(breaker) is BreakerState.OPEN
    with pytest.raises(BreakerOpen) as caught:
        breaker.acquire()
    assert caught.value.retry_after_s == pytest.approx(1.0)
    clock.now += 1.0
    probe = breaker.acquire()
    assert probe.probe and state_of(breaker) is BreakerState.HALF_OPEN
    with pytest.raises(BreakerOpen):
        breaker.acquire()  # one probe at a time
    breaker.record_success(probe)
    assert state_of(breaker) is BreakerState.CLOSED


def test_a_failed_probe_doubles_the_cool_down_up_to_its_cap() -> None:
    breaker, clock = _breaker()
    for _ in range(3):
        breaker.record_failure(breaker.acquire())
    for expected in (2.0, 4.0, 4.0):
        clock.now += 10
        breaker.record_failure(breaker.acquire())
        assert state_of(breaker) is BreakerState.OPEN
        assert breaker.retry_after_s() == pytest.approx(expected)


def test_failure_rate_over_the_window_opens() -> None:
    breaker, _ = _breaker(consecutive_failures=100)
    for ok in (True, False, True, False, True, False):
        permit = breaker.acquire()
        (breaker.record_success if ok else breaker.record_failure)(permit)
    assert state_of(breaker) is BreakerState.OPEN


def test_results_of_calls_from_before_a_transition_are_ignored() -> None:
    breaker, clock = _breaker()
    stale = breaker.acquire()
    for _ in range(3):
        breaker.record_failure(breaker.acquire())
    clock.now += 1.0
    probe = breaker.acquire()
    breaker.record_success(stale)  # started while closed: says nothing about now
    assert state_of(breaker) is BreakerState.HALF_OPEN
    breaker.record_neutral(probe)  # a cancelled probe frees its slot
    breaker.record_success(breaker.acquire())
    assert state_of(breaker) is BreakerState.CLOSED


def test_backoff_is_capped_full_jitter() -> None:
    backoff = Backoff(base_s=0.1, cap_s=1.0)
    assert [backoff.ceiling_s(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.ceiling_s(10_000) == 1.0
    rng = random.Random(1)
    delays = [backoff.delay_s(5, rng) for _ in range(2_000)]
    assert 0.0 <= min(delays) < 0.05 and 0.95 < max(delays) <= 1.0


def test_idempotency_keys_are_stable_and_unambiguous() -> None:
    key = idempotency_key_for("spring-2026", "42")
    assert key == idempotency_key_for("spring-2026", "42")
    assert key.startswith("pkt-") and len(key) == 36
    assert idempotency_key_for("ab", "c") != idempotency_key_for("a", "bc")
