"""The sandbox identity provider: synthetic citizens and their tokens, for demos, tests and load tests.

Only mounted (HTTP) when sandbox mode is on. Citizens are deterministic in their number, so a
load test can regenerate the same population; every ID carries a valid GB 11643 check character.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from stimulus import resident_id
from stimulus.identity import issue_token
from stimulus.signing import SigningKey

SANDBOX_CITY = "4301"  # Changsha's prefecture code
SANDBOX_DISTRICTS = ("430102", "430103", "430104", "430105", "430111", "430112")
MAX_TOKENS_PER_REQUEST = 1000


@dataclass(frozen=True)
class SyntheticCitizen:
    number: int
    resident_id: str
    phone: str
    district: str
    city: str
    social_insurance_city: str | None


def synthetic_citizen(number: int, districts: tuple[str, ...] = SANDBOX_DISTRICTS,
                      city: str = SANDBOX_CITY) -> SyntheticCitizen:
    """Citizen `number` (0-based): unique ID for numbers below 365 * 60 * 1000 * len(districts)."""
    district = districts[number % len(districts)]
    rest = number // len(districts)
    sequence, rest = rest % 1000, rest // 1000
    born = date(1950, 1, 1) + timedelta(days=rest % (365 * 55))
    rid = resident_id.make_id(district, born, sequence)
    phone = f"13{number % 1_000_000_000:09d}"
    return SyntheticCitizen(number, rid, phone, district, city, city)


def token_for(key: SigningKey, citizen: SyntheticCitizen, *, issuer: str, audience: str,
              ttl_s: int = 24 * 3600, now: int | None = None) -> str:
    return issue_token(
        key, subject=citizen.resident_id, phone=citizen.phone, district=citizen.district,
        city=citizen.city, social_insurance_city=citizen.social_insurance_city,
        issuer=issuer, audience=audience, ttl_s=ttl_s, now=now, token_id=f"sandbox-{citizen.number}",
    )
