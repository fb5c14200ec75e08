"""Synthetic citizens of the sample city and the identity-token claims the sandbox provider gives them.

Citizens are deterministic in their number, so a load test can regenerate the same population;
every ID carries a valid GB 11643 check character. The claims are those the city's provider puts
in an OpenID Connect ID token: `sub` is the resident ID, plus phone, district, city and the city
of the citizen's social insurance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from kernel import resident_id
from kernel.sample import SAMPLE_CITY, SAMPLE_DISTRICTS


@dataclass(frozen=True)
class SyntheticCitizen:
    number: int
    resident_id: str
    phone: str
    district: str
    city: str
    social_insurance_city: str | None


def synthetic_citizen(number: int, districts: tuple[str, ...] = SAMPLE_DISTRICTS,
                      city: str = SAMPLE_CITY) -> SyntheticCitizen:
    """Citizen `number` (0-based): unique ID for numbers below 365 * 60 * 1000 * len(districts)."""
    district = districts[number % len(districts)]
    rest = number // len(districts)
    sequence, rest = rest % 1000, rest // 1000
    born = date(1950, 1, 1) + timedelta(days=rest % (365 * 55))
    rid = resident_id.make_id(district, born, sequence)
    phone = f"13{number % 1_000_000_000:09d}"
    return SyntheticCitizen(number, rid, phone, district, city, city)


def citizen_claims(*, subject: str, phone: str, district: str, city: str,
                   social_insurance_city: str | None, token_id: str = "") -> dict[str, Any]:
    """The identity claims of one citizen (no iss/aud/iat/exp: the signer adds those)."""
    claims: dict[str, Any] = {"sub": subject, "phone": phone, "district": district, "city": city}
    if social_insurance_city is not None:
        claims["si_city"] = social_insurance_city
    if token_id:
        claims["jti"] = token_id
    return claims


def claims_for(citizen: SyntheticCitizen) -> dict[str, Any]:
    return citizen_claims(subject=citizen.resident_id, phone=citizen.phone, district=citizen.district,
                          city=citizen.city, social_insurance_city=citizen.social_insurance_city,
                          token_id=f"sandbox-{citizen.number}")
