"""Registrations over time, for the operators' dashboard."""

from __future__ import annotations

from litestar import get
from litestar.params import Parameter

from kernel.auth import Principal, require_role
from kernel.contract import contract
from kernel.services import Services
from lottery import campaigns, registration_counts
from lottery.registration_counts import Timeline


@contract("campaign_not_found")
@get("/v1/admin/campaigns/{campaign_id:str}/registrations/timeline", tags=["operator"],
     summary="Registrations per minute, hour or day; withdrawals and refused attempts by code")
async def registration_timeline(services: Services, principal: Principal, campaign_id: str,
                                bucket: str = Parameter(default="minute", pattern="^(minute|hour|day)$")) -> Timeline:
    require_role(principal, "operator", "auditor")
    await campaigns.fetch(services.pool, campaign_id)
    return await registration_counts.timeline(services.bulk_pool, campaign_id, bucket)


ROUTES = [registration_timeline]
