"""The load scenarios: which locustfile, at what scale, with what prepared beforehand.

Each scenario names the plan sections its users read (see `loadtests.prepare`) and the API
endpoints it cannot run without, so a run against a build that lacks one stops before it starts
with a sentence saying which, rather than drowning in 404s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LOCUSTFILES = Path(__file__).with_name("locustfiles")

CLAIM_ENDPOINT = ("post", "/v1/campaigns/{campaign_id}/claim")
REDEMPTION_ENDPOINT = ("post", "/v1/merchants/{merchant_id}/redemptions")


@dataclass(frozen=True)
class Scale:
    """How big a run is: peak users, seconds, and the populations prepared for it."""

    users: int
    duration_s: int
    citizens: int = 0        # fresh identities for registration (0: enough for the run)
    registrants: int = 0     # registered and drawn before the run (result checks, auditors)
    winners: int = 0         # of those, winners (claims); 0: a twentieth of the registrants
    merchants: int = 0       # merchants registered for redemptions
    claimed: int = 0         # packets claimed and issued before the run, for merchants to redeem


@dataclass(frozen=True)
class Scenario:
    name: str
    locustfile: str
    summary: str
    sections: tuple[str, ...]
    full: Scale
    smoke: Scale
    needs: tuple[tuple[str, str], ...] = field(default=())
    # Sections prepared only when the build has their endpoint; the others run without them.
    optional: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return LOCUSTFILES / self.locustfile


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(
        "registration-surge", "registration_surge.py",
        "registration opens: citizens read the campaign, register, re-read their receipt",
        ("registration",),
        full=Scale(users=720, duration_s=300),
        smoke=Scale(users=20, duration_s=6),
    ),
    Scenario(
        "result-spike", "result_spike.py",
        "results are published: every registrant checks, some verify their inclusion; an auditor downloads",
        ("results", "audit"),
        full=Scale(users=1000, duration_s=240, registrants=100_000),
        smoke=Scale(users=20, duration_s=6, registrants=120),
    ),
    Scenario(
        "claim-rush", "claim_rush.py",
        "every winner binds a wallet and claims once; issuance credits the operator banks",
        ("claims",),
        full=Scale(users=500, duration_s=3600, registrants=300_000, winners=300_000),
        smoke=Scale(users=30, duration_s=20, registrants=30, winners=30),
        needs=(CLAIM_ENDPOINT,),
    ),
    Scenario(
        "redemption-steady", "redemption_steady.py",
        "merchants' tills send signed redemptions for packets citizens spend",
        ("redemptions",),
        full=Scale(users=300, duration_s=300, registrants=20_000, winners=20_000, merchants=200,
                   claimed=20_000),
        smoke=Scale(users=10, duration_s=6, registrants=60, winners=60, merchants=4, claimed=60),
        needs=(CLAIM_ENDPOINT, REDEMPTION_ENDPOINT),
    ),
    Scenario(
        "soak", "soak.py",
        "all populations at once, in slow waves, for at least half an hour",
        ("registration", "results", "audit", "claims", "redemptions"),
        full=Scale(users=400, duration_s=1800, registrants=40_000, winners=10_000, merchants=100,
                   claimed=2_000),
        smoke=Scale(users=20, duration_s=6, registrants=120, winners=60, merchants=4, claimed=20),
        optional={"claims": CLAIM_ENDPOINT, "redemptions": REDEMPTION_ENDPOINT},
    ),
)}
