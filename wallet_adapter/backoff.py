"""Capped exponential backoff with full jitter, for retrying calls to the operator banks.

Full jitter (a uniform draw between zero and the capped exponential) spreads the retries of many
workers that failed together, so a bank coming back from an outage is not hit by them in step.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

MAX_EXPONENT = 32  # 2**32 times any sane base is far past any cap


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.05
    cap_s: float = 2.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("backoff needs 0 < base_s <= cap_s")

    def ceiling_s(self, attempt: int) -> float:
        """The largest delay after the `attempt`-th failure (0-based)."""
        return min(self.cap_s, math.ldexp(self.base_s, min(max(attempt, 0), MAX_EXPONENT)))

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """A delay drawn uniformly from [0, ceiling_s(attempt)]."""
        return (rng or random).uniform(0.0, self.ceiling_s(attempt))
