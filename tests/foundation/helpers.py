"""Helpers for the foundation tests: campaigns through the admin API and citizen tokens."""

from __future__ import annotations

import functools
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from kernel.sample import sample_campaign
from kernel.settings import Settings
from sandbox.citizens import claims_for, synthetic_citizen
from sandbox.idp_keys import Signer

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


@functools.cache
def _signer(data_dir: Path, issuer: str) -> Signer:
    # The session's provider never rotates its key (tests that rotate run their own provider).
    return Signer.from_data_dir(data_dir, issuer)


def citizen_token(settings: Settings, number: int, *, now: int | None = None, ttl_s: int = 3600,
                  **claims: Any) -> str:
    """An ID token from the session's sandbox provider for synthetic citizen `number`; `claims`
    (JWT claim names: sub, phone, district, ...) replace the citizen's own."""
    signer = _signer(settings.sandbox_idp_dir, settings.idp_issuer)
    return signer.sign({**claims_for(synthetic_citizen(number)), **claims},
                       audience=settings.idp_audience, ttl_s=ttl_s, now=now)


def window(opens_in_s: float, closes_in_s: float) -> dict[str, Any]:
    now = datetime.now(UTC)
    closes = now + timedelta(seconds=closes_in_s)
    return {
        "registration_opens_at": (now + timedelta(seconds=opens_in_s)).isoformat(),
        "registration_closes_at": closes.isoformat(),
        "claim_deadline": (closes + timedelta(days=1)).isoformat(),
        "spending_deadline": (closes + timedelta(days=2)).isoformat(),
    }
