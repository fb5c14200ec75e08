"""Helpers for the foundation tests: campaigns through the admin API and citizen tokens."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from stimulus.identity import issue_token
from stimulus.sample import sample_campaign
from stimulus.sandbox_idp import synthetic_citizen, token_for
from stimulus.settings import Settings

_ids = itertools.count(1)


def new_campaign_id(prefix: str = "t") -> str:
    return f"{prefix}-{datetime.now(UTC):%H%M%S}-{next(_ids)}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def open_campaign(http: httpx.AsyncClient, operator_token: str, winners: int = 60,
                        **overrides: Any) -> str:
    campaign_id = new_campaign_id()
    spec = sample_campaign(campaign_id, winners)
    spec.update(overrides)
    response = await http.post("/v1/admin/campaigns", json=spec, headers=auth(operator_token))
    assert response.status_code == 201, response.text
    response = await http.post(f"/v1/admin/campaigns/{campaign_id}/open", headers=auth(operator_token))
    assert response.status_code == 200, response.text
    return campaign_id


def citizen_token(settings: Settings, number: int, **claims: Any) -> str:
    citizen = synthetic_citizen(number)
    if not claims:
        return token_for(settings.idp_key, citizen, issuer=settings.idp_issuer,
                         audience=settings.idp_audience)
    fields: dict[str, Any] = {
        "subject": citizen.resident_id, "phone": citizen.phone, "district": citizen.district,
        "city": citizen.city, "social_insurance_city": citizen.social_insurance_city,
        "issuer": settings.idp_issuer, "audience": settings.idp_audience,
    }
    fields.update(claims)
    return issue_token(settings.idp_key, **fields)


def window(opens_in_s: float, closes_in_s: float) -> dict[str, Any]:
    now = datetime.now(UTC)
    closes = now + timedelta(seconds=closes_in_s)
    return {
        "registration_opens_at": (now + timedelta(seconds=opens_in_s)).isoformat(),
        "registration_closes_at": closes.isoformat(),
        "claim_deadline": (closes + timedelta(days=1)).isoformat(),
        "spending_deadline": (closes + timedelta(days=2)).isoformat(),
    }
