"""Operator endpoints: register merchants (one, or a CSV file of thousands), suspend and
re-activate them, list them, and set where a campaign's packets may be spent.

A merchant's private key is in the answer that creates it and nowhere else, ever.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, post, put
from litestar.params import Parameter

from kernel.auth import Principal, require_role
from kernel.contract import OPERATOR, contract
from kernel.input_guard import BODY_MEDIA_TYPES
from kernel.input_types import Input
from kernel.services import Services
from merchants import csv_import, registry
from merchants.registry import Acceptance, IssuedKey, MerchantSpec, MerchantView

MerchantId = Parameter(pattern=registry.MERCHANT_ID_PATTERN.pattern, description="merchant id")
CampaignId = Parameter(pattern=r"^[a-z0-9][a-z0-9-]{2,39}$", description="campaign id")


class CreatedMerchant(msgspec.Struct, frozen=True):
    merchant: MerchantView
    key: IssuedKey


class StatusChange(Input, frozen=True):
    reason: str = ""


class MerchantPage(msgspec.Struct, frozen=True):
    merchants: list[MerchantView]
    next_after: str | None


@contract("invalid_merchant", "merchant_exists", roles=OPERATOR)
@post("/v1/admin/merchants", tags=["operator"], status_code=201,
      summary="Register a merchant; the answer holds its private key, shown this once")
async def create_merchant(services: Services, principal: Principal, data: MerchantSpec) -> CreatedMerchant:
    async with services.pool.acquire() as conn:
        merchant, key = await registry.create(conn, data, principal.actor)
    return CreatedMerchant(registry.view(merchant), key)


@contract("csv_invalid", body=str, body_media_type="text/csv", roles=OPERATOR)
@post("/v1/admin/merchants/import", tags=["operator"], status_code=201,
      request_max_body_size=csv_import.MAX_BYTES, opt={BODY_MEDIA_TYPES: ("text/csv",)},
      summary="Register merchants from a CSV file (all or none); the answer holds their private keys, once")
async def import_merchants(request: Request[Any, Any, Any], services: Services,
                           principal: Principal) -> csv_import.ImportResult:
    """Body: `text/csv`, header `id,name,category,district,settlement_account`. A bad line refuses
    the whole file: 422 `csv_invalid` with `errors: [{line, error}]`."""
    raw = await request.body()
    async with services.bulk_pool.acquire() as conn:
        return await csv_import.import_merchants(conn, raw, principal.actor)


async def _set_status(services: Services, principal: Principal, merchant_id: str, status: str,
                      data: StatusChange | None) -> MerchantView:
    async with services.pool.acquire() as conn:
        merchant = await registry.set_status(conn, merchant_id, status, principal.actor,
                                             data.reason if data else "")
    return registry.view(merchant)


@contract("merchant_not_found", "invalid_status", "reason_required", roles=OPERATOR)
@post("/v1/admin/merchants/{merchant_id:str}/suspend", tags=["operator"], status_code=200,
      summary="Suspend a merchant: its signed requests are refused from now on")
async def suspend_merchant(services: Services, principal: Principal, data: StatusChange | None = None,
                           merchant_id: str = MerchantId) -> MerchantView:
    return await _set_status(services, principal, merchant_id, registry.SUSPENDED, data)


@contract("merchant_not_found", "invalid_status", roles=OPERATOR)
@post("/v1/admin/merchants/{merchant_id:str}/activate", tags=["operator"], status_code=200,
      summary="Re-activate a suspended merchant")
async def activate_merchant(services: Services, principal: Principal, data: StatusChange | None = None,
                            merchant_id: str = MerchantId) -> MerchantView:
    return await _set_status(services, principal, merchant_id, registry.ACTIVE, data)


@get("/v1/admin/merchants", tags=["operator"], summary="Merchants in id order, filtered, a page at a time")
async def list_merchants(
        services: Services, principal: Principal,
        after: str = Parameter(default="", description="the last id of the previous page"),
        limit: int = Parameter(default=100, ge=1, le=registry.MAX_PAGE),
        status: str | None = Parameter(default=None),
        district: str | None = Parameter(default=None),
        category: str | None = Parameter(default=None)) -> MerchantPage:
    require_role(principal, "operator", "auditor")
    found = await registry.list_page(services.pool, after=after, limit=limit, status=status,
                                     district=district, category=category)
    return MerchantPage([registry.view(m) for m in found], found[-1].id if len(found) == limit else None)


@contract("merchant_not_found")
@get("/v1/admin/merchants/{merchant_id:str}", tags=["operator"], summary="One merchant (public key, status)")
async def show_merchant(services: Services, principal: Principal, merchant_id: str = MerchantId) -> MerchantView:
    require_role(principal, "operator", "auditor")
    return registry.view(await registry.fetch(services.pool, merchant_id))


@contract("campaign_not_found", "invalid_acceptance", roles=OPERATOR)
@put("/v1/admin/campaigns/{campaign_id:str}/acceptance", tags=["operator"],
     summary="Set which merchant categories and districts accept the campaign's packets (empty: any)")
async def put_acceptance(services: Services, principal: Principal, data: Acceptance,
                         campaign_id: str = CampaignId) -> Acceptance:
    async with services.pool.acquire() as conn:
        return await registry.set_acceptance(conn, campaign_id, data, principal.actor)


@contract("campaign_not_found")
@get("/v1/admin/campaigns/{campaign_id:str}/acceptance", tags=["operator"],
     summary="Which merchant categories and districts accept the campaign's packets")
async def get_acceptance(services: Services, principal: Principal, campaign_id: str = CampaignId) -> Acceptance:
    require_role(principal, "operator", "auditor")
    return await registry.acceptance(services.pool, campaign_id)


ROUTES = [create_merchant, import_merchants, suspend_merchant, activate_merchant, list_merchants,
          show_merchant, put_acceptance, get_acceptance]
