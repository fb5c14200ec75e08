"""The draw's HTTP surface: commitment and proofs, ceremony, beacon, draw, results and downloads."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.response import Stream

from kernel import approvals, artefact_http, artefacts
from kernel.approvals import Approval
from kernel.auth import Principal
from kernel.contract import OPERATOR, contract
from kernel.errors import InvalidInput, NotFound
from kernel.identity import Citizen
from kernel.input_types import Input
from kernel.services import Services
from lottery import actions, beacon, campaigns, ceremony, commitment, draw, published, results
from lottery.beacon import BeaconSubmission
from lottery.ceremony import CeremonyStatus, CommitRequest, ParticipantStatus, RevealRequest
from lottery.commitment import Commitment, InclusionProof
from lottery.results import DrawResult, TicketResult

# A drawn campaign's summary never changes (the draw runs once); each process keeps a few, so the
# result spike's page loads do not decode a bundle listing 300,000 winners every time.
SUMMARY_CACHE_ENTRIES = 64
_summaries: dict[str, bytes] = {}



@contract("approval_pending", "campaign_not_found", "wrong_campaign_state", roles=OPERATOR)
@post("/v1/admin/campaigns/{campaign_id:str}/commitment", tags=["operator"], status_code=202,
      summary="Request the commitment of the closed registrant list (needs a second operator's approval)")
async def request_commitment(services: Services, principal: Principal, campaign_id: str) -> Approval:
    async with services.pool.acquire() as conn:
        return await approvals.request(conn, actions.COMMIT, campaign_id, {}, principal.actor)


@contract("approval_pending", "campaign_not_found", "wrong_campaign_state", "already_drawn",
          "beacon_not_recorded:409", "ceremony_incomplete", roles=OPERATOR)
@post("/v1/admin/campaigns/{campaign_id:str}/draw", tags=["operator"], status_code=202,
      summary="Request the draw (needs a second operator's approval)")
async def request_draw(services: Services, principal: Principal, campaign_id: str) -> Approval:
    async with services.pool.acquire() as conn:
        return await approvals.request(conn, actions.RUN, campaign_id, {}, principal.actor)


@contract("campaign_not_found", "wrong_campaign_state", "not_committed", "beacon_exists", "beacon_invalid",
          "beacon_before_commitment", "beacon_before_reveals", "wrong_beacon_kind", "wrong_beacon_round",
          "invalid_beacon", "invalid_hex", "ceremony_incomplete", roles=OPERATOR)
@post("/v1/admin/campaigns/{campaign_id:str}/beacon", tags=["operator"], status_code=200,
      summary="Record a drand round submitted by hand (verified), when no relay can be reached")
async def record_beacon(services: Services, principal: Principal, campaign_id: str,
                        data: BeaconSubmission) -> dict[str, Any]:
    async with services.bulk_pool.acquire() as conn:  # held while the BLS signature is checked
        return await beacon.record(conn, services.settings, campaign_id, data, principal.actor)


class BeaconFetch(Input, frozen=True):
    fallback: bool = False  # ask for the next round, because the declared one never appeared


@contract("campaign_not_found", "wrong_campaign_state", "not_committed", "beacon_exists", "beacon_invalid",
          "beacon_before_commitment", "beacon_before_reveals", "wrong_beacon_round", "ceremony_incomplete",
          "beacon_not_yet_published", "beacon_unavailable", "sandbox_beacon_refused", roles=OPERATOR)
@post("/v1/admin/campaigns/{campaign_id:str}/beacon/fetch", tags=["operator"], status_code=200,
      summary="Fetch the campaign's drand round from the configured relays, verify and record it")
async def fetch_beacon(services: Services, principal: Principal, campaign_id: str,
                       data: BeaconFetch | None = None) -> dict[str, Any]:
    async with services.bulk_pool.acquire() as conn:  # held while the relays are asked and checked
        return await beacon.fetch_and_record(conn, services.settings, campaign_id, principal.actor,
                                             fallback=data.fallback if data else False)


@contract("campaign_not_found", "beacon_not_recorded:404")
@get("/v1/campaigns/{campaign_id:str}/beacon", tags=["public"], summary="The recorded beacon")
async def get_beacon(services: Services, campaign_id: str) -> dict[str, Any]:
    return await beacon.fetch(services.pool, campaign_id)


@contract("campaign_not_found", "not_committed")
@get("/v1/campaigns/{campaign_id:str}/commitment", tags=["public"],
     summary="The signed commitment: tree size, root, time, key id, signature")
async def get_commitment(services: Services, campaign_id: str) -> Commitment:
    return await commitment.fetch_commitment(services.pool, campaign_id)


@contract("campaign_not_found", "not_committed", "ticket_not_committed")
@get("/v1/campaigns/{campaign_id:str}/tickets/{ticket:int}/proof", tags=["public"],
     summary="Inclusion proof of a ticket in the committed tree (RFC 9162)")
async def ticket_proof(services: Services, campaign_id: str, ticket: int) -> InclusionProof:
    if not 0 <= ticket <= results.TICKET_MAX:  # no such ticket was stored; PostgreSQL's bigint cannot hold it
        await commitment.fetch_commitment(services.pool, campaign_id)
        raise NotFound(f"ticket {ticket} is not in campaign {campaign_id}'s committed list",
                       code="ticket_not_committed")
    return await commitment.inclusion_proof(services.pool, campaign_id, ticket)


@contract("campaign_not_found", "participant_not_found", "commitment_exists", "commitment_too_late",
          "invalid_hex", "bad_signature:400")
@post("/v1/campaigns/{campaign_id:str}/ceremony/{participant_id:str}/commitment", tags=["ceremony"],
      status_code=200, summary="A participant's signed commitment SHA-256(secret), before registration closes")
async def ceremony_commit(services: Services, campaign_id: str, participant_id: str,
                          data: CommitRequest) -> ParticipantStatus:
    async with services.pool.acquire() as conn:
        return await ceremony.submit_commitment(conn, campaign_id, participant_id, data)


@contract("campaign_not_found", "participant_not_found", "no_commitment", "reveal_not_open",
          "reveal_too_late", "reveal_mismatch", "invalid_secret", "invalid_hex", "bad_signature:400")
@post("/v1/campaigns/{campaign_id:str}/ceremony/{participant_id:str}/reveal", tags=["ceremony"],
      status_code=200, summary="A participant's signed reveal, after the commitment and before the beacon")
async def ceremony_reveal(services: Services, campaign_id: str, participant_id: str,
                          data: RevealRequest) -> ParticipantStatus:
    async with services.pool.acquire() as conn:
        return await ceremony.submit_reveal(conn, campaign_id, participant_id, data)


@contract("campaign_not_found")
@get("/v1/campaigns/{campaign_id:str}/ceremony", tags=["ceremony"], summary="Ceremony status")
async def ceremony_state(services: Services, campaign_id: str) -> CeremonyStatus:
    campaign = await campaigns.fetch(services.pool, campaign_id)
    return await ceremony.ceremony_status(services.pool, campaign)


@contract("campaign_not_found", "registration_not_found", "not_drawn:404", "ticket_not_committed")
@get("/v1/campaigns/{campaign_id:str}/result", tags=["citizen"],
     summary="Your own result: won or not, your score, your stratum's cutoff and the totals")
async def own_result(services: Services, citizen: Citizen, campaign_id: str) -> DrawResult:
    return await results.result_for(services.pool, campaign_id, citizen.id_hmac)


@contract("campaign_not_found", "not_drawn:404", answers=[(200, dict[str, Any], "application/json")])
@get("/v1/campaigns/{campaign_id:str}/bundle", tags=["public"], summary="The signed proof bundle")
async def get_bundle(services: Services, request: Request[Any, Any, Any], campaign_id: str) -> Response[bytes] | Stream:
    cache = artefacts.node_cache(services.settings.state_dir)
    name = published.bundle_name(campaign_id)
    sha_hex = await cache.resolve(services.pool, name)
    if sha_hex is None:  # drawn before bundles were stored as files: store it now
        signed = await draw.signed_bundle(services.bulk_pool, campaign_id)
        await published.backfill_bundle(services.bulk_pool, services.settings.state_dir / "work", campaign_id, signed)
        sha_hex = await cache.resolve(services.pool, name)
    return await _published(services, request, sha_hex, f"{campaign_id}-bundle.json")


async def _published(services: Services, request: Request[Any, Any, Any], sha_hex: str | None,
                     filename: str) -> Response[bytes] | Stream:
    artefact = await artefacts.node_cache(services.settings.state_dir).get(services.bulk_pool, sha_hex) \
        if sha_hex is not None else None
    if artefact is None:
        raise RuntimeError(f"published artefact {filename} is bound to {sha_hex}, which is not stored")
    return artefact_http.respond(artefact, request.headers, artefact_http.REVALIDATE,
                                 {"Content-Disposition": f'attachment; filename="{filename}"'})


@contract("artefact_not_found", answers=[(200, str, "application/octet-stream")])
@get("/v1/artefacts/{sha256:str}", tags=["public"],
     summary="A published file (registrant list, signed bundle) by the SHA-256 of its bytes: immutable, "
             "with ETag and byte ranges")
async def get_artefact(services: Services, request: Request[Any, Any, Any], sha256: str) -> Response[bytes] | Stream:
    artefact = await artefacts.node_cache(services.settings.state_dir).get(services.bulk_pool, sha256) \
        if artefacts.SHA256_HEX.fullmatch(sha256) else None
    if artefact is None:
        raise NotFound(f"no published artefact has SHA-256 {sha256}", code="artefact_not_found")
    return artefact_http.respond(artefact, request.headers, artefact_http.IMMUTABLE)


def draw_summary(signed: bytes) -> bytes:
    """The signed bundle without its winners list: everything a citizen's browser needs to recompute
    the seed and check one ticket against its stratum's cutoff, plus the hash of the full file."""
    envelope = msgspec.json.decode(signed)
    bundle = envelope["bundle"]
    draw_section = {k: v for k, v in bundle["draw"].items() if k != "winners"}
    return msgspec.json.encode({
        "campaign_id": bundle["campaign"]["id"], "bundle_sha256_hex": hashlib.sha256(signed).hexdigest(),
        "bundle_bytes": len(signed), "key_id": envelope["key_id"], "winners_omitted": True,
        "bundle": {**bundle, "draw": draw_section}})


@contract("campaign_not_found", "not_drawn:404", answers=[(200, dict[str, Any], "application/json")])
@get("/v1/campaigns/{campaign_id:str}/draw", tags=["public"],
     summary="The published draw without its winners list: parameters, commitment, ceremony, beacon, seed, "
             "per-stratum cutoffs, spill-over, winners' root and count, and the SHA-256 of the signed bundle")
async def get_draw_summary(services: Services, campaign_id: str) -> Response[bytes]:
    summary = _summaries.get(campaign_id)
    if summary is None:
        try:
            signed = await draw.signed_bundle(services.bulk_pool, campaign_id)  # once per process
        except NotFound:
            await campaigns.fetch(services.pool, campaign_id)  # an unknown campaign is campaign_not_found
            raise
        summary = draw_summary(signed)
        if len(_summaries) >= SUMMARY_CACHE_ENTRIES:
            _summaries.clear()
        _summaries[campaign_id] = summary
    return Response(summary, media_type="application/json")


@contract("campaign_not_found", "not_drawn:404", "ticket_not_committed")
@get("/v1/campaigns/{campaign_id:str}/tickets/{ticket:int}/result", tags=["public"],
     summary="A committed ticket's line of the published result: won or not, tier, amount and round")
async def ticket_result(services: Services, campaign_id: str, ticket: int) -> TicketResult:
    return await results.ticket_result(services.pool, campaign_id, ticket)


@contract("campaign_not_found", "not_committed", "invalid_format",
          answers=[(200, str, "application/x-ndjson"), (200, str, "text/csv")])
@get("/v1/campaigns/{campaign_id:str}/registrants", tags=["public"],
     summary="The committed registrant list (ticket, pseudonym, stratum), streamed as NDJSON or CSV")
async def get_registrants(services: Services, request: Request[Any, Any, Any], campaign_id: str,
                          format: str = "ndjson") -> Response[bytes] | Stream:
    if format not in published.FORMATS:
        raise InvalidInput("format is ndjson or csv", code="invalid_format")
    cache = artefacts.node_cache(services.settings.state_dir)
    name = published.list_name(campaign_id, format)
    sha_hex = await cache.resolve(services.pool, name)
    if sha_hex is None:
        await commitment.fetch_commitment(services.pool, campaign_id)  # not found / not committed
        # Committed before lists were stored as files: store them now, once.
        await published.backfill_lists(services.bulk_pool, services.settings.state_dir / "work", campaign_id)
        sha_hex = await cache.resolve(services.pool, name)
    return await _published(services, request, sha_hex, f"{campaign_id}-registrants.{format}")


ROUTES = [request_commitment, request_draw, record_beacon, fetch_beacon, get_beacon, get_commitment, ticket_proof,
          ceremony_commit, ceremony_reveal, ceremony_state, own_result, get_bundle, get_draw_summary, ticket_result,
          get_registrants, get_artefact]
