"""A circuit breaker per operator bank: stop calling a bank that is failing, probe it later.

Closed: calls go through; the breaker opens after `consecutive_failures` failures in a row, or
when at least `failure_rate` of the last `window_size` calls failed (once `window_min_calls`
calls are in the window). Open: calls are refused at once (`BreakerOpen`) for a cool-down.
Half-open: after the cool-down up to `half_open_probes` calls go through as probes; a probe that
succeeds closes the breaker, one that fails opens it again with a doubled cool-down (capped).

Under a burst of concurrent calls, failures that are answered at once (a 503 before any work)
come back before the successes that wait for a commit, so a window of the last few completions
overstates the failure rate: the thresholds are set well above the concurrency of a burst's
fast failures at a normal error rate.

A caller takes a `Permit` before each call and reports how the call went. Permits carry the
breaker's generation, so a slow call that started before the last state change cannot move the
breaker with a stale result (only probes of the current half-open state count).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerOpen(Exception):
    """The breaker refuses calls for now; `retry_after_s` until the next probe is allowed."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(f"circuit {name} is open; next probe in {retry_after_s:.2f}s")
        self.name = name
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class BreakerOptions:
    consecutive_failures: int = 10
    window_size: int = 50
    window_min_calls: int = 20
    failure_rate: float = 0.5
    cool_down_s: float = 5.0
    max_cool_down_s: float = 60.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1 or self.window_size < 1 or self.half_open_probes < 1:
            raise ValueError("breaker thresholds must be positive")
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be in (0, 1]")
        if self.cool_down_s <= 0 or self.max_cool_down_s < self.cool_down_s:
            raise ValueError("breaker needs 0 < cool_down_s <= max_cool_down_s")


@dataclass(frozen=True, slots=True)
class Permit:
    generation: int
    probe: bool


class CircuitBreaker:
    """Not thread-safe: one breaker lives on one event loop, like the client that owns it."""

    def __init__(self, name: str, options: BreakerOptions | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.options = options or BreakerOptions()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._window: deque[bool] = deque(maxlen=self.options.window_size)
        self._consecutive = 0
        self._opened_at = 0.0
        self._cool_down_s = self.options.cool_down_s
        self._probes_in_flight = 0
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self._cool_down_s:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    def retry_after_s(self) -> float:
        if self.state is BreakerState.CLOSED:
            return 0.0
        return max(0.0, self._opened_at + self._cool_down_s - self._clock())

    def acquire(self) -> Permit:
        """A permit to make one call, or `BreakerOpen`."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(self._generation, probe=False)
        if state is BreakerState.HALF_OPEN and self._probes_in_flight < self.options.half_open_probes:
            self._probes_in_flight += 1
            return Permit(self._generation, probe=True)
        raise BreakerOpen(self.name, self.retry_after_s())

    def record_success(self, permit: Permit) -> None:
        if not self._release(permit):
            return
        if permit.probe:
            self._cool_down_s = self.options.cool_down_s
            self._transition(BreakerState.CLOSED)
            return
        self._consecutive = 0
        self._window.append(True)

    def record_failure(self, permit: Permit) -> None:
        if not self._release(permit):
            return
        if permit.probe:
            self._cool_down_s = min(self._cool_down_s * 2, self.options.max_cool_down_s)
            self._transition(BreakerState.OPEN)
            return
        self._consecutive += 1
        self._window.append(False)
        failures = self._window.count(False)
        if self._consecutive >= self.options.consecutive_failures or (
                len(self._window) >= self.options.window_min_calls
                and failures >= self.options.failure_rate * len(self._window)):
            self._transition(BreakerState.OPEN)

    def record_neutral(self, permit: Permit) -> None:
        """The call told nothing about the bank's health (cancelled, rate limited)."""
        self._release(permit)

    def _release(self, permit: Permit) -> bool:
        """Free a probe slot; whether the permit belongs to the current state."""
        if permit.generation != self._generation:
            return False
        if permit.probe:
            self._probes_in_flight -= 1
        return True

    def _transition(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._probes_in_flight = 0
        self._consecutive = 0
        self._window.clear()
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
            self.opened_count += 1
