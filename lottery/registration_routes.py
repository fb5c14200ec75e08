"""Citizen registration endpoints: register, read own registration, withdraw."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import Parameter
from prometheus_client import Counter

from kernel.contract import contract
from kernel.errors import WrongState
from kernel.idempotency import StoredResponse, answer_once
from kernel.identity import Citizen
from kernel.ratelimit import Limit
from kernel.services import Services, client_address
from lottery import eligibility
from lottery.registration import (
    NewRegistration,
    Receipt,
    RegistrationRequest,
    count_ineligible,
    find_own,
    make_receipt,
    parse_request,
    payload_hash,
    pseudonym_for,
    withdraw,
)
from lottery.services import LotteryServices, get_lottery_services

REGISTRATIONS = Counter("stimulus_registrations_total", "Registrations accepted", ["result"])
INELIGIBLE = Counter("stimulus_registrations_ineligible_total", "Ineligible attempts", ["code"])
RECEIPT_MEDIA_TYPE = "application/json"


class OwnRegistrationView(msgspec.Struct, frozen=True):
    campaign_id: str
    ticket: int
    stratum: str
    pseudonym: str
    registered_at: datetime
    wallet_bank: str | None
    wallet_id: str | None
    receipt: Receipt


class Withdrawn(msgspec.Struct, frozen=True):
    campaign_id: str
    ticket: int
    withdrawn: bool = True


async def _rate_limit(services: Services, request: Request[Any, Any, Any], citizen: Citizen) -> None:
    settings = services.settings
    limits = [Limit("id:" + citizen.id_hmac.hex()[:32], settings.rate_limit_identity_per_min,
                    max(1, settings.rate_limit_identity_per_min // 6))]
    address = client_address(request, settings)
    if address not in settings.rate_limit_exempt_addresses:
        limits.append(Limit("ip:" + address, settings.rate_limit_address_per_min,
                            max(1, settings.rate_limit_address_per_min // 6)))
    await services.limiter.check(limits, int(time.time() * 1000))


def _encode(receipt: Receipt) -> bytes:
    return msgspec.json.encode(receipt)


@contract("campaign_not_found", "registration_not_open", "registration_closed", "registration_conflict",
          "ineligible_district", "ineligible_location", "ineligible_phone", "ineligible_social_insurance",
          "ineligible_too_young", "ineligible_too_old", "invalid_wallet", "unknown_bank", "malformed_json",
          "invalid_idempotency_key", "idempotency_key_in_use", "idempotency_key_reused", "rate_limited",
          body=RegistrationRequest, answers=[(201, Receipt, RECEIPT_MEDIA_TYPE), (200, Receipt, RECEIPT_MEDIA_TYPE)])
@post("/v1/campaigns/{campaign_id:str}/registrations", tags=["citizen"], status_code=201,
      summary="Register for a campaign's lottery", responses=None)
async def register(request: Request[Any, Any, Any], services: Services, citizen: Citizen,
                   campaign_id: str) -> Response[bytes]:
    """Register the token's holder. Returns a signed receipt (201 new, 200 same as before)."""
    # Not a `lottery_services` dependency, on the hot path: Litestar resolves two dependencies of
    # the same depth (it and `services`) in an anyio task group, two tasks on every request.
    lottery_services = get_lottery_services(request.app.state)
    await _rate_limit(services, request, citizen)
    body = await request.body()

    async def act() -> StoredResponse:
        status, content = await _register(services, lottery_services, citizen, campaign_id, body)
        return StoredResponse(status, content, {"Location": f"/v1/campaigns/{campaign_id}/registrations/me"})

    return await answer_once(services.idempotency, request, "citizen:" + citizen.id_hmac.hex(),
                             RECEIPT_MEDIA_TYPE, act)


async def _register(services: Services, lottery_services: LotteryServices, citizen: Citizen, campaign_id: str,
                    body: bytes) -> tuple[int, bytes]:
    cache, writer = lottery_services.campaign_cache, lottery_services.registration_writer
    parsed = parse_request(body, services.settings.bank_codes)
    cached = await cache.get(campaign_id)
    campaign = cached.campaign
    now = datetime.now(UTC)
    if campaign.state != "open" or not (campaign.registration_opens_at <= now < campaign.registration_closes_at):
        not_yet = campaign.state == "draft" or now < campaign.registration_opens_at
        code = "registration_not_open" if not_yet else "registration_closed"
        raise WrongState("registration is not open for this campaign", code=code, state=campaign.state)
    try:
        eligibility.check(campaign, citizen, now.date())
    except eligibility.Ineligible as exc:
        INELIGIBLE.labels(exc.code).inc()
        await count_ineligible(services.pool, campaign_id, exc.code)
        raise
    pseudonym = pseudonym_for(cached.pseudonym_key, citizen.id_hmac)
    wallet = parsed.wallet
    result = await writer.register(NewRegistration(
        campaign_id=campaign_id, id_hmac=citizen.id_hmac, pseudonym=pseudonym,
        stratum=citizen.district, payload_hash=payload_hash(parsed),
        wallet_bank=wallet.bank_code if wallet else None, wallet_id=wallet.wallet_id if wallet else None,
    ))
    REGISTRATIONS.labels("created" if result.created else "repeat").inc()
    receipt = make_receipt(services.settings.service_key, campaign_id, result.ticket, pseudonym,
                           citizen.district, result.registered_at)
    return (201 if result.created else 200), _encode(receipt)


@contract("campaign_not_found", "registration_not_found")
@get("/v1/campaigns/{campaign_id:str}/registrations/me", tags=["citizen"],
     summary="Read own registration and its receipt")
async def read_own(services: Services, citizen: Citizen,
                   campaign_id: str = Parameter(max_length=40)) -> OwnRegistrationView:
    own = await find_own(services.pool, campaign_id, citizen.id_hmac)
    receipt = make_receipt(services.settings.service_key, campaign_id, own.ticket, own.pseudonym,
                           own.stratum, own.registered_at)
    return OwnRegistrationView(campaign_id, own.ticket, own.stratum, own.pseudonym, own.registered_at,
                               own.wallet_bank, own.wallet_id, receipt)


@contract("campaign_not_found", "registration_not_found", "registration_not_open", "registration_closed")
@delete("/v1/campaigns/{campaign_id:str}/registrations/me", tags=["citizen"], status_code=200,
        summary="Withdraw own registration before registration closes")
async def withdraw_own(services: Services, citizen: Citizen,
                       campaign_id: str = Parameter(max_length=40)) -> Withdrawn:
    ticket = await withdraw(services.pool, campaign_id, citizen.id_hmac)
    return Withdrawn(campaign_id, ticket)


ROUTES = [register, read_own, withdraw_own]
