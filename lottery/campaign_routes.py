"""Operator endpoints for campaigns (create, open, close, read) and the public campaign view."""

from __future__ import annotations

import time
from datetime import datetime

import msgspec
from litestar import get, post
from litestar.params import Parameter

from kernel.auth import Principal, require_role
from kernel.contract import OPERATOR, contract
from kernel.services import Services
from lottery import campaigns, registration_counts
from lottery.campaigns import Campaign, CampaignSpec
from lottery.registration_counts import CampaignCounts
from lottery.services import LotteryServices


class AdminCampaignView(msgspec.Struct, frozen=True):
    campaign: Campaign
    counts: CampaignCounts
    ledger_fen: dict[str, int]


class PublicCampaignView(msgspec.Struct, frozen=True):
    id: str
    name: str
    state: str
    budget_fen: int
    tiers: list[campaigns.Tier]
    strata: list[campaigns.Stratum]
    registration_opens_at: datetime
    registration_closes_at: datetime
    claim_deadline: datetime
    spending_deadline: datetime
    beacon: campaigns.Beacon
    participants: list[campaigns.Participant]
    eligibility: campaigns.Eligibility
    draw_rules: campaigns.DrawRules
    registrations: int


# The public list is what every citizen's app opens on: each process renders it at most once a
# second (the counts in it are a second old at most anyway, registration_counts).
LISTING_TTL_S = 1.0
_listing: tuple[float, list[PublicCampaignView]] | None = None

CampaignId = Parameter(pattern=r"^[a-z0-9][a-z0-9-]{2,39}$", description="campaign id")


@contract("campaign_exists", "invalid_beacon", "invalid_budget", "invalid_campaign_id", "invalid_draw_rules",
          "invalid_eligibility", "invalid_label", "invalid_name", "invalid_participants", "invalid_strata",
          "invalid_tiers", "naive_datetime", "quotas_mismatch", "tiers_exceed_budget", "windows_out_of_order", roles=OPERATOR)
@post("/v1/admin/campaigns", tags=["operator"], summary="Create a campaign (draft)")
async def create_campaign(services: Services, principal: Principal, data: CampaignSpec) -> Campaign:
    async with services.pool.acquire() as conn:
        return await campaigns.create(conn, data, principal.actor)


async def _transition(services: Services, lottery_services: LotteryServices, principal: Principal,
                      campaign_id: str, target: str, expected: str) -> Campaign:
    async with services.pool.acquire() as conn:
        campaign = await campaigns.transition(conn, campaign_id, target, principal.actor, expected=expected)
    lottery_services.campaign_cache.forget(campaign_id)
    return campaign


@contract("campaign_not_found", "wrong_campaign_state", roles=OPERATOR)
@post("/v1/admin/campaigns/{campaign_id:str}/open", tags=["operator"], status_code=200,
      summary="Open registration")
async def open_campaign(services: Services, lottery_services: LotteryServices, principal: Principal,
                        campaign_id: str) -> Campaign:
    return await _transition(services, lottery_services, principal, campaign_id, "open", "draft")


@contract("campaign_not_found", "wrong_campaign_state", roles=OPERATOR)
@post("/v1/admin/campaigns/{campaign_id:str}/close", tags=["operator"], status_code=200,
      summary="Close registration")
async def close_campaign(services: Services, lottery_services: LotteryServices, principal: Principal,
                         campaign_id: str) -> Campaign:
    return await _transition(services, lottery_services, principal, campaign_id, "closed", "open")


@contract("campaign_not_found")
@get("/v1/admin/campaigns/{campaign_id:str}", tags=["operator"], summary="Campaign with counts and ledger")
async def admin_campaign(services: Services, principal: Principal, campaign_id: str) -> AdminCampaignView:
    require_role(principal, "operator", "auditor")
    from kernel import ledger

    campaign = await campaigns.fetch(services.pool, campaign_id)
    async with services.pool.acquire() as conn:
        balances = await ledger.balances(conn, campaign_id)
    return AdminCampaignView(campaign, await registration_counts.counts(services.bulk_pool, campaign_id), balances)


def _public(campaign: Campaign, registrations: int) -> PublicCampaignView:
    fields = {f: getattr(campaign, f) for f in PublicCampaignView.__struct_fields__ if f != "registrations"}
    return PublicCampaignView(**fields, registrations=registrations)


@get("/v1/campaigns", tags=["public"], summary="List campaigns")
async def list_campaigns(services: Services) -> list[PublicCampaignView]:
    global _listing
    now = time.monotonic()
    if _listing is not None and now - _listing[0] < LISTING_TTL_S:
        return _listing[1]
    items = await campaigns.list_all(services.pool)
    counts = await registration_counts.live_by_campaign(services.pool, [c.id for c in items])
    views = [_public(c, counts[c.id]) for c in items]
    _listing = (now, views)
    return views


@contract("campaign_not_found")
@get("/v1/campaigns/{campaign_id:str}", tags=["public"], summary="Public campaign parameters and status")
async def public_campaign(services: Services, campaign_id: str) -> PublicCampaignView:
    campaign = await campaigns.fetch(services.pool, campaign_id)
    return _public(campaign, await registration_counts.public_count(services.pool, campaign_id))


ROUTES = [create_campaign, open_campaign, close_campaign, admin_campaign, list_campaigns, public_campaign]
