"""The commit-reveal ceremony: named participants add secrets nobody else can choose after the fact.

A participant commits SHA-256(secret), signed with their key, before registration closes; after
the list is committed they reveal the secret, signing it together with the committed root and size,
before the beacon. The draw waits until every participant has revealed, or until the campaign's
reveal deadline when its rule lets it proceed without the missing secrets.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from kernel import audit_log
from kernel.errors import Conflict, InvalidInput, NotFound, WrongState
from kernel.input_types import Input
from lottery import campaigns, drand
from lottery.campaigns import Campaign
from lottery.statements import (
    ceremony_commit_statement,
    ceremony_reveal_statement,
    ed25519_ok,
    timestamp,
)

MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 64


class CommitRequest(Input, frozen=True):
    commitment_hex: str
    signature_hex: str


class RevealRequest(Input, frozen=True):
    secret_hex: str
    signature_hex: str


class ParticipantStatus(msgspec.Struct, frozen=True):
    participant_id: str
    name: str
    committed_at: datetime | None
    commitment_hex: str | None
    revealed_at: datetime | None
    secret_hex: str | None


class CeremonyStatus(msgspec.Struct, frozen=True):
    campaign_id: str
    participants: list[ParticipantStatus]
    reveal_deadline: datetime | None
    missing_reveal_rule: str
    ready: bool
    reason: str


def _hex(value: str, field: str, size: int | None = None) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InvalidInput(f"{field} must be hex", code="invalid_hex", field=field) from None
    if size is not None and len(raw) != size:
        raise InvalidInput(f"{field} must be {size} bytes", code="invalid_hex", field=field)
    return raw


def _participant_key(campaign: Campaign, participant_id: str) -> bytes:
    for p in campaign.participants:
        if p.id == participant_id:
            return bytes.fromhex(p.public_key_hex)
    raise NotFound(f"{participant_id!r} is not a participant of {campaign.id}", code="participant_not_found")


async def submit_commitment(conn: asyncpg.Connection, campaign_id: str, participant_id: str,
                            request: CommitRequest) -> ParticipantStatus:
    campaign = await campaigns.fetch(conn, campaign_id)
    key = _participant_key(campaign, participant_id)
    commitment = _hex(request.commitment_hex, "commitment_hex", 32)
    signature = _hex(request.signature_hex, "signature_hex", 64)
    now = datetime.now(UTC)
    if campaign.state not in ("draft", "open") or now >= campaign.registration_closes_at:
        raise WrongState("commitments are accepted only before registration closes", code="commitment_too_late")
    if not ed25519_ok(key, signature, ceremony_commit_statement(campaign_id, participant_id, commitment.hex())):
        raise InvalidInput("the signature does not verify with the participant's key", code="bad_signature")
    async with conn.transaction():
        existing = await conn.fetchval(
            "SELECT commitment FROM ceremony_commitments WHERE campaign_id = $1 AND participant_id = $2 FOR UPDATE",
            campaign_id, participant_id)
        if existing is not None:
            if bytes(existing) != commitment:
                raise Conflict("this participant already committed to a different value",
                               code="commitment_exists")
        else:
            await conn.execute(
                """INSERT INTO ceremony_commitments (campaign_id, participant_id, commitment, signature)
                   VALUES ($1, $2, $3, $4)""", campaign_id, participant_id, commitment, signature)
            await audit_log.append(conn, actor=f"participant:{participant_id}", action="ceremony.commit",
                                   subject=campaign_id, details={"commitment_hex": commitment.hex()})
    return await participant_status(conn, campaign, participant_id)


def reveal_deadline(campaign: Campaign) -> datetime | None:
    """Reveals must land before this; for drand also before the beacon round is published."""
    deadlines = [d for d in (campaign.draw_rules.reveal_deadline,) if d is not None]
    if campaign.beacon.kind == "drand-quicknet" and campaign.beacon.round:
        deadlines.append(drand.round_time(campaign.beacon.round))
    return min(deadlines) if deadlines else None


async def submit_reveal(conn: asyncpg.Connection, campaign_id: str, participant_id: str,
                        request: RevealRequest) -> ParticipantStatus:
    campaign = await campaigns.fetch(conn, campaign_id)
    key = _participant_key(campaign, participant_id)
    secret = _hex(request.secret_hex, "secret_hex")
    if not MIN_SECRET_BYTES <= len(secret) <= MAX_SECRET_BYTES:
        raise InvalidInput(f"secrets are {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes", code="invalid_secret")
    signature = _hex(request.signature_hex, "signature_hex", 64)
    async with conn.transaction():
        state = await conn.fetchval("SELECT state FROM campaigns WHERE id = $1 FOR SHARE", campaign_id)
        if state != "committed":
            raise WrongState("reveals are accepted after the list is committed and before the draw",
                             code="reveal_not_open", state=state)
        if await conn.fetchval("SELECT 1 FROM beacons WHERE campaign_id = $1", campaign_id):
            raise WrongState("the beacon is already recorded; reveals are closed", code="reveal_too_late")
        deadline = reveal_deadline(campaign)
        if deadline is not None and datetime.now(UTC) >= deadline:
            raise WrongState(f"the reveal deadline {timestamp(deadline)} has passed", code="reveal_too_late")
        commit = await conn.fetchval(
            "SELECT commitment FROM ceremony_commitments WHERE campaign_id = $1 AND participant_id = $2",
            campaign_id, participant_id)
        if commit is None:
            raise WrongState("no commitment was registered for this participant before close",
                             code="no_commitment")
        if hashlib.sha256(secret).digest() != bytes(commit):
            raise InvalidInput("SHA-256 of the secret does not match the commitment", code="reveal_mismatch")
        root, size = await conn.fetchrow("SELECT root, tree_size FROM commitments WHERE campaign_id = $1",
                                         campaign_id)
        statement = ceremony_reveal_statement(campaign_id, participant_id, secret.hex(), bytes(root).hex(), size)
        if not ed25519_ok(key, signature, statement):
            raise InvalidInput("the signature does not verify with the participant's key", code="bad_signature")
        inserted = await conn.fetchval(
            """INSERT INTO ceremony_reveals (campaign_id, participant_id, secret, signature)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1""",
            campaign_id, participant_id, secret, signature)
        if inserted:
            await audit_log.append(conn, actor=f"participant:{participant_id}", action="ceremony.reveal",
                                   subject=campaign_id, details={"secret_hex": secret.hex()})
    return await participant_status(conn, campaign, participant_id)


_STATUS = """
SELECT c.participant_id, c.commitment, c.signature AS commit_signature, c.committed_at,
       r.secret, r.signature AS reveal_signature, r.revealed_at
FROM ceremony_commitments c
LEFT JOIN ceremony_reveals r ON r.campaign_id = c.campaign_id AND r.participant_id = c.participant_id
WHERE c.campaign_id = $1
"""


async def _rows(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> dict[str, asyncpg.Record]:
    return {r["participant_id"]: r for r in await conn.fetch(_STATUS, campaign_id)}


async def participant_status(conn: asyncpg.Connection | asyncpg.Pool, campaign: Campaign,
                             participant_id: str) -> ParticipantStatus:
    status = await ceremony_status(conn, campaign)
    return next(p for p in status.participants if p.participant_id == participant_id)


async def ceremony_status(conn: asyncpg.Connection | asyncpg.Pool, campaign: Campaign,
                          now: datetime | None = None) -> CeremonyStatus:
    rows = await _rows(conn, campaign.id)
    participants = []
    for p in campaign.participants:
        row = rows.get(p.id)
        participants.append(ParticipantStatus(
            p.id, p.name, row["committed_at"] if row else None, bytes(row["commitment"]).hex() if row else None,
            row["revealed_at"] if row else None,
            bytes(row["secret"]).hex() if row and row["secret"] is not None else None))
    missing = [p.participant_id for p in participants if p.secret_hex is None]
    deadline = reveal_deadline(campaign)
    now = now or datetime.now(UTC)
    if not missing:
        ready, reason = True, "every participant has revealed"
    elif campaign.draw_rules.missing_reveal == "abort":
        ready, reason = False, f"waiting for {', '.join(missing)}; the campaign's rule does not allow drawing without them"
    elif deadline is None:
        ready, reason = False, f"waiting for {', '.join(missing)}; no reveal deadline is set"
    elif now < deadline:
        ready, reason = False, f"waiting for {', '.join(missing)} until the deadline {timestamp(deadline)}"
    else:
        ready, reason = True, f"deadline passed; drawing without {', '.join(missing)} (rule proceed-without)"
    return CeremonyStatus(campaign.id, participants, deadline, campaign.draw_rules.missing_reveal, ready, reason)


async def bundle_entries(conn: asyncpg.Connection, campaign: Campaign) -> list[dict[str, Any]]:
    """The bundle's ceremony section, one entry per named participant."""
    rows = await _rows(conn, campaign.id)
    entries = []
    for p in sorted(campaign.participants, key=lambda p: p.id):
        row = rows.get(p.id)
        if row is None:
            entries.append({"participant_id": p.id, "commitment_hex": None, "commit_signature_hex": None,
                            "committed_at": None, "secret_hex": None, "reveal_signature_hex": None,
                            "revealed_at": None, "status": "missing"})
            continue
        revealed = row["secret"] is not None
        entries.append({
            "participant_id": p.id,
            "commitment_hex": bytes(row["commitment"]).hex(),
            "commit_signature_hex": bytes(row["commit_signature"]).hex(),
            "committed_at": timestamp(row["committed_at"]),
            "secret_hex": bytes(row["secret"]).hex() if revealed else None,
            "reveal_signature_hex": bytes(row["reveal_signature"]).hex() if revealed else None,
            "revealed_at": timestamp(row["revealed_at"]) if revealed else None,
            "status": "revealed" if revealed else "missing",
        })
    return entries
