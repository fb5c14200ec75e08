"""HTTP: a winner claims their packet by binding a wallet; operators start bulk issuance and
watch its progress.

A claim is acknowledged (202, with the status URL in `Location`) only after the wallet binding
and the outbox row have committed; the credit itself happens in the workers. The same claim
again is a no-op answered with the packet's current state; another wallet once one is bound is
409. `Idempotency-Key` replays the first answer to a retried request.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import Parameter

from kernel import approvals
from kernel.approvals import Approval
from kernel.auth import Principal, require_role
from kernel.contract import OPERATOR, contract
from kernel.errors import InvalidInput, NotFound
from kernel.idempotency import StoredResponse, answer_once
from kernel.identity import Citizen
from kernel.input_types import Input
from kernel.ratelimit import Limit
from kernel.services import Services
from kernel.wallet_rule import check_wallet
from lottery import campaigns
from lottery.registration import find_own
from wallet_adapter import issuance, packets
from wallet_adapter.packets import PacketView, Wallet
from wallet_adapter.progress import IssuanceProgress, issuance_progress

MEDIA_TYPE = "application/json"
CampaignId = Parameter(pattern=r"^[a-z0-9][a-z0-9-]{2,39}$", description="campaign id")


class ClaimRequest(Input, frozen=True):
    wallet: Wallet


def _status_url(campaign_id: str) -> str:
    return f"/v1/campaigns/{campaign_id}/claim"


def parse_claim(body: bytes) -> ClaimRequest:
    try:
        return msgspec.json.decode(body, type=ClaimRequest)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc), code="validation_failed") from exc
    except msgspec.DecodeError as exc:
        raise InvalidInput("the body is not valid JSON", code="malformed_json") from exc


async def _rate_limit(services: Services, citizen: Citizen) -> None:
    per_min = services.settings.rate_limit_identity_per_min
    if per_min:
        await services.limiter.check([Limit("claim:" + citizen.id_hmac.hex()[:32], per_min,
                                            max(1, per_min // 6))], int(time.time() * 1000))


@contract("campaign_not_found", "registration_not_found", "not_a_winner", "not_drawn:409", "wrong_campaign_state",
          "claim_deadline_passed", "packet_cancelled", "wallet_already_bound", "invalid_wallet", "unknown_bank",
          "malformed_json", "invalid_idempotency_key", "idempotency_key_in_use", "idempotency_key_reused",
          "rate_limited", body=ClaimRequest, answers=[(202, PacketView, MEDIA_TYPE)])
@post("/v1/campaigns/{campaign_id:str}/claim", tags=["citizen"], status_code=202,
      summary="Claim your red packet by binding a wallet (operator bank code + wallet id)")
async def claim(request: Request[Any, Any, Any], services: Services, citizen: Citizen,
                campaign_id: str = CampaignId) -> Response[bytes]:
    """Binds the wallet and queues the credit; 202 with the packet and its status URL.

    The same claim again answers the same way; another wallet after one is bound is 409
    `wallet_already_bound`; after the claim deadline 409 `claim_deadline_passed`; a registrant
    who did not win 404 `not_a_winner`.
    """
    await _rate_limit(services, citizen)
    body = await request.body()

    async def act() -> StoredResponse:
        content = msgspec.json.encode(await _claim(services, citizen, campaign_id, body))
        return StoredResponse(202, content, {"Location": _status_url(campaign_id)})

    return await answer_once(services.idempotency, request, "citizen:" + citizen.id_hmac.hex(), MEDIA_TYPE, act)


async def _claim(services: Services, citizen: Citizen, campaign_id: str, body: bytes) -> PacketView:
    wallet = parse_claim(body).wallet
    check_wallet(services.settings.bank_codes, wallet.bank_code, wallet.wallet_id)
    async with services.pool.acquire() as conn:
        outcome = await issuance.claim(conn, campaign_id, citizen.id_hmac, wallet)
    if outcome.created:
        await issuance.ensure_issuing(services.pool, campaign_id, outcome.campaign_state, "system:claims")
    return outcome.view


@contract("campaign_not_found", "registration_not_found", "not_a_winner")
@get("/v1/campaigns/{campaign_id:str}/claim", tags=["citizen"], summary="Your packet: state, wallet, amounts")
async def claim_status(services: Services, citizen: Citizen, campaign_id: str = CampaignId) -> PacketView:
    own = await find_own(services.pool, campaign_id, citizen.id_hmac)
    row = await packets.find(services.pool, campaign_id, own.ticket)
    if row is None:
        raise NotFound("this registration did not win a packet", code="not_a_winner")
    return packets.view_from_row(row)


@contract("approval_pending", "campaign_not_found", "not_drawn:409", "claim_deadline_passed", "nothing_to_issue", roles=OPERATOR)
@post("/v1/admin/campaigns/{campaign_id:str}/issuance", tags=["operator"], status_code=202,
      summary="Request bulk issuance to the wallets given at registration (a second operator approves)")
async def request_bulk(services: Services, principal: Principal, campaign_id: str = CampaignId) -> Approval:
    async with services.pool.acquire() as conn:
        return await approvals.request(conn, issuance.BULK_START, campaign_id, {}, principal.actor)


@contract("campaign_not_found")
@get("/v1/admin/campaigns/{campaign_id:str}/issuance", tags=["operator"],
     summary="Issuance progress: issued / failed / pending per bank, rate and ETA")
async def progress(services: Services, principal: Principal, campaign_id: str = CampaignId) -> IssuanceProgress:
    require_role(principal, "operator", "auditor")
    await campaigns.fetch(services.pool, campaign_id)
    return await issuance_progress(services.pool, campaign_id)


ROUTES = [claim, claim_status, request_bulk, progress]
