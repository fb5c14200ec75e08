"""Recording the draw's public randomness: a verified drand quicknet round, or a marked sandbox value.

A drand round is accepted only if its BLS signature verifies against the pinned chain key, it is
the round the campaign declared (or, under the declared `next-round` fallback, the one after), and it
was published after the list was committed. The randomness is recomputed as SHA-256 of the
signature; a relay's `randomness` field is never read. The sandbox beacon is the service's
Ed25519 signature over (campaign, round, root): deterministic, so predictable by the key holder,
and marked as such everywhere it appears.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import asyncpg

from lottery import campaigns, ceremony, drand
from lottery.bundle import SANDBOX_WARNING
from lottery.statements import sandbox_beacon_statement, timestamp
from stimulus import audit_log
from stimulus.errors import Conflict, InvalidInput, NotFound, WrongState
from stimulus.input_types import Input, Int64
from stimulus.settings import Settings


class BeaconSubmission(Input, frozen=True):
    kind: str
    round: Int64 | None = None
    signature_hex: str | None = None
    fallback: bool = False  # use the next round because the declared one never appeared


async def record(conn: asyncpg.Connection, settings: Settings, campaign_id: str, submission: BeaconSubmission,
                 actor: str) -> dict[str, Any]:
    campaign = await campaigns.fetch(conn, campaign_id)
    if submission.kind != campaign.beacon.kind:
        raise InvalidInput(f"this campaign's beacon is {campaign.beacon.kind}", code="wrong_beacon_kind")
    async with conn.transaction():
        state = await conn.fetchval("SELECT state FROM campaigns WHERE id = $1 FOR UPDATE", campaign_id)
        if state != "committed":
            raise WrongState("the beacon is recorded after the commitment and before the draw",
                             code="wrong_campaign_state", state=state)
        existing = await conn.fetchval("SELECT record FROM beacons WHERE campaign_id = $1", campaign_id)
        commitment = await conn.fetchrow("SELECT root, committed_at FROM commitments WHERE campaign_id = $1",
                                         campaign_id)
        if commitment is None:
            raise NotFound("the list is not committed yet", code="not_committed")
        if submission.kind == "drand-quicknet":
            beacon = _drand_record(campaign, submission, commitment["committed_at"])
        else:
            status = await ceremony.ceremony_status(conn, campaign)
            if not status.ready:
                raise WrongState(f"the ceremony is not complete: {status.reason}", code="ceremony_incomplete")
            beacon = _sandbox_record(settings, campaign_id, bytes(commitment["root"]).hex())
        if existing is not None:
            if existing["signature_hex"] == beacon["signature_hex"]:
                return dict(existing)
            raise Conflict("a different beacon is already recorded for this campaign", code="beacon_exists")
        latest_reveal = await conn.fetchval(
            "SELECT max(revealed_at) FROM ceremony_reveals WHERE campaign_id = $1", campaign_id)
        if latest_reveal is not None and beacon["kind"] == "drand-quicknet" \
                and drand.round_time(beacon["round"]) <= latest_reveal:
            raise InvalidInput("a reveal came after this round was published", code="beacon_before_reveals")
        await conn.execute(
            """INSERT INTO beacons (campaign_id, kind, round, signature, randomness, record, recorded_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            campaign_id, beacon["kind"], beacon["round"], bytes.fromhex(beacon["signature_hex"]),
            bytes.fromhex(beacon["randomness_hex"]), beacon, actor)
        await audit_log.append(conn, actor=actor, action="draw.beacon", subject=campaign_id,
                               details={k: beacon[k] for k in ("kind", "round", "randomness_hex")})
    return beacon


def _drand_record(campaign: campaigns.Campaign, submission: BeaconSubmission, committed_at: datetime) -> dict[str, Any]:
    declared = campaign.beacon.round
    if submission.round is None or submission.signature_hex is None:
        raise InvalidInput("a drand beacon needs round and signature_hex", code="invalid_beacon")
    if submission.round != declared and not (
            submission.fallback and campaign.beacon.fallback == "next-round" and declared is not None
            and submission.round == declared + 1):
        raise InvalidInput(f"the campaign declared round {declared}", code="wrong_beacon_round")
    try:
        signature = bytes.fromhex(submission.signature_hex)
    except ValueError:
        raise InvalidInput("signature_hex must be hex", code="invalid_hex") from None
    if not drand.verify_round(submission.round, signature):
        raise InvalidInput(f"the signature is not quicknet's for round {submission.round}", code="beacon_invalid")
    published = drand.round_time(submission.round)
    if published <= committed_at:
        raise InvalidInput("this round was published before the list was committed",
                           code="beacon_before_commitment")
    return {"kind": "drand-quicknet", "chain_hash": drand.CHAIN_HASH, "round": submission.round,
            "signature_hex": signature.hex(), "randomness_hex": drand.randomness(signature).hex(),
            "round_time": timestamp(published),
            "path": "declared-round" if submission.round == declared else "next-round-fallback"}


def _sandbox_record(settings: Settings, campaign_id: str, root_hex: str) -> dict[str, Any]:
    key = settings.service_key
    signature = key.sign(sandbox_beacon_statement(campaign_id, 1, root_hex))
    return {"kind": "sandbox", "round": 1, "signature_hex": signature.hex(),
            "randomness_hex": hashlib.sha256(signature).hexdigest(),
            "generated_at": timestamp(datetime.now(UTC)), "key_id": key.key_id,
            "public_key_hex": key.public_bytes.hex(), "warning": SANDBOX_WARNING}


async def fetch(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> dict[str, Any]:
    record_ = await conn.fetchval("SELECT record FROM beacons WHERE campaign_id = $1", campaign_id)
    if record_ is None:
        raise NotFound("no beacon recorded yet", code="beacon_not_recorded")
    return dict(record_)
