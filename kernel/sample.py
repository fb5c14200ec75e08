"""A sample campaign modelled on Changsha, May 2021, scaled to the number of citizens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

SAMPLE_CITY = "4301"  # Changsha's prefecture code
SAMPLE_DISTRICTS = ("430102", "430103", "430104", "430105", "430111", "430112")


def sample_campaign(campaign_id: str, winners: int = 3000, *, opens_at: datetime | None = None,
                    registration_s: int = 2 * 24 * 3600, participants: list[dict[str, str]] | None = None,
                    beacon: dict[str, Any] | None = None, claim_s: int = 2 * 24 * 3600,
                    spending_s: int = 7 * 24 * 3600) -> dict[str, Any]:
    """Two tiers (2/3 of winners x 100 yuan, 1/3 x 200 yuan), the six districts as strata.

    The claim deadline falls `claim_s` after registration closes, the spending deadline
    `spending_s` after that."""
    opens_at = opens_at or datetime.now(UTC) - timedelta(seconds=5)
    closes_at = opens_at + timedelta(seconds=registration_s)
    claim_deadline = closes_at + timedelta(seconds=claim_s)
    small = winners * 2 // 3
    large = winners - small
    n = len(SAMPLE_DISTRICTS)
    quotas = [winners // n + (1 if i < winners % n else 0) for i in range(n)]
    tiers: list[dict[str, Any]] = [{"tier": "A", "amount_fen": 20_000, "count": large},
             {"tier": "B", "amount_fen": 10_000, "count": small}]
    budget = sum(int(t["amount_fen"]) * int(t["count"]) for t in tiers)
    return {
        "id": campaign_id,
        "name": f"Sample consumption voucher campaign {campaign_id}",
        "budget_fen": budget,
        "tiers": tiers,
        "strata": [{"stratum": d, "quota": q, "name": f"district {d}"}
                   for d, q in zip(SAMPLE_DISTRICTS, quotas, strict=True)],
        "registration_opens_at": opens_at.isoformat(),
        "registration_closes_at": closes_at.isoformat(),
        "claim_deadline": claim_deadline.isoformat(),
        "spending_deadline": (claim_deadline + timedelta(seconds=spending_s)).isoformat(),
        "beacon": beacon or {"kind": "sandbox"},
        "participants": participants or [],
        "eligibility": {"city": SAMPLE_CITY, "require_mainland_phone": True,
                        "social_insurance_city": SAMPLE_CITY, "min_age": 18},
    }
