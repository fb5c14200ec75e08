"""The load over time for each peak the system must survive.

Every shape scales with the run: `-u` is the peak number of users and `-t` the run time, and
the stages are fractions of both, so the same shape serves a 20-second smoke run and an
hour-long rehearsal. A shape ends the run itself when its time is up.

The stages follow what the real campaigns showed: registration is busiest in its first hour and
tails off; the result check is a spike the moment results are published; winners claim in a
rush that holds until most have claimed; spending is a steady stream.
"""

from __future__ import annotations

import math

from locust import LoadTestShape

DEFAULT_PEAK_USERS = 100
DEFAULT_DURATION_S = 120


class ScaledShape(LoadTestShape):
    """Stages of (end as a fraction of the run, users as a fraction of the peak, ramp fraction)."""

    abstract = True
    use_common_options = True
    stages: tuple[tuple[float, float, float], ...] = ((1.0, 1.0, 0.05),)

    def scale(self) -> tuple[int, float]:
        options = self.runner.environment.parsed_options if self.runner else None
        peak = int(getattr(options, "num_users", 0) or DEFAULT_PEAK_USERS)
        duration_s = float(getattr(options, "run_time", 0) or DEFAULT_DURATION_S)
        return peak, duration_s

    def tick(self) -> tuple[int, float] | None:
        peak, duration_s = self.scale()
        now = self.get_run_time()
        if now >= duration_s:
            return None
        previous = 0
        for end, level, ramp in self.stages:
            users = max(1, round(level * peak))
            if now < end * duration_s:
                ramp_s = max(1.0, ramp * duration_s)
                return users, max(1.0, abs(users - previous) / ramp_s)
            previous = users
        return None


class RegistrationSurge(ScaledShape):
    """Doors open: early birds, then the rush of the opening hour, then the long tail."""

    stages = (
        (0.05, 0.2, 0.02),
        (0.60, 1.0, 0.08),
        (0.80, 0.6, 0.05),
        (1.00, 0.35, 0.05),
    )


class ResultSpike(ScaledShape):
    """A quiet minute, then results are published and everyone looks at once."""

    stages = (
        (0.10, 0.05, 0.02),
        (0.55, 1.0, 0.03),
        (0.80, 0.5, 0.05),
        (1.00, 0.2, 0.05),
    )


class ClaimRush(ScaledShape):
    """Winners bind wallets as soon as they see the notice, and keep coming until all have."""

    stages = (
        (0.05, 0.5, 0.03),
        (1.00, 1.0, 0.03),
    )


class RedemptionSteady(ScaledShape):
    """Shops open: tills ramp up, then a steady stream of payments."""

    stages = (
        (0.10, 1.0, 0.08),
        (1.00, 1.0, 0.05),
    )


class Soak(ScaledShape):
    """Everything at once for a long time, in slow waves: finds leaks, growth and drift."""

    wave_s = 600.0

    def tick(self) -> tuple[int, float] | None:
        peak, duration_s = self.scale()
        now = self.get_run_time()
        if now >= duration_s:
            return None
        ramp = min(1.0, now / max(1.0, min(120.0, 0.1 * duration_s)))
        wave = 0.75 + 0.25 * math.sin(2 * math.pi * now / self.wave_s)
        # Steps of 5 % of the peak, so the runner is not re-told the count every second.
        users = max(1, round(ramp * wave * 20) * peak // 20)
        return users, max(1.0, peak / 60)
