"""Recording the draw's public randomness: a drand round, fetched from relays or submitted by hand.

A round is accepted only if its BLS signature verifies against the chain the campaign's beacon
kind pins (drand quicknet, or the marked sandbox chain), it is the round the campaign declared (or,
under the declared `next-round` fallback, the one after; a sandbox campaign may instead take the
first round after the last reveal), and it was published after the list was committed and after
every reveal. The randomness is recomputed as SHA-256 of the signature; a relay's `randomness`
field is never read. Fetching and submitting end in the same checks; a fetch also records which
relay answered, beside the bundle's beacon section rather than in it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from kernel import audit_log
from kernel.errors import Conflict, InvalidInput, NotFound, Unavailable, WrongState
from kernel.input_types import Input, Int64
from kernel.settings import Settings
from lottery import campaigns, ceremony, drand, drand_relays
from lottery.bundle import SANDBOX_WARNING
from lottery.statements import timestamp

# A fetch asked for a round a few seconds early waits for it rather than refusing.
MAX_WAIT_FOR_ROUND_S = 10.0


class BeaconSubmission(Input, frozen=True):
    kind: str
    round: Int64 | None = None
    signature_hex: str | None = None
    fallback: bool = False  # use the next round because the declared one never appeared


async def record(conn: asyncpg.Connection, settings: Settings, campaign_id: str, submission: BeaconSubmission,
                 actor: str) -> dict[str, Any]:
    """Record a round an operator submitted (when no relay can be reached)."""
    campaign = await campaigns.fetch(conn, campaign_id)
    if submission.kind != campaign.beacon.kind:
        raise InvalidInput(f"this campaign's beacon is {campaign.beacon.kind}", code="wrong_beacon_kind")
    if submission.round is None or submission.signature_hex is None:
        raise InvalidInput("a beacon needs round and signature_hex (or fetch it from the relays)",
                           code="invalid_beacon")
    try:
        signature = bytes.fromhex(submission.signature_hex)
    except ValueError:
        raise InvalidInput("signature_hex must be hex", code="invalid_hex") from None
    # The pairing takes under a second of pure Python: off the event loop, and before any lock.
    signature_ok = await asyncio.to_thread(drand.verify_round, submission.round, signature,
                                           _chain(settings, campaign.beacon.kind).public_key_hex)
    return await _store(conn, settings, campaign, submission.round, signature, signature_ok, submission.fallback,
                        actor, None, ())


async def fetch_and_record(conn: asyncpg.Connection, settings: Settings, campaign_id: str, actor: str,
                           fallback: bool = False, client: httpx.AsyncClient | None = None) -> dict[str, Any]:
    """Ask the configured relays for the campaign's round, verify it, record it and the relay.

    Answers the bundle's beacon section with `relay` (and `refusals`, the relays passed over) added.
    No transaction is open while the relays are asked; the checks are made again when storing."""
    campaign = await campaigns.fetch(conn, campaign_id)
    existing = await conn.fetchrow("SELECT record, relay FROM beacons WHERE campaign_id = $1", campaign_id)
    if existing is not None:
        return {**existing["record"], "relay": existing["relay"]}
    if campaign.state != "committed":
        raise WrongState("the beacon is recorded after the commitment and before the draw",
                         code="wrong_campaign_state", state=campaign.state)
    round_number = await _round_to_fetch(conn, campaign, fallback)
    chain = _chain(settings, campaign.beacon.kind)
    early_s = (chain.round_time(round_number) - datetime.now(UTC)).total_seconds()
    if early_s > MAX_WAIT_FOR_ROUND_S:
        raise WrongState(f"round {round_number} is published at {timestamp(chain.round_time(round_number))}",
                         code="beacon_not_yet_published", round=round_number)
    if early_s > 0:
        await asyncio.sleep(early_s + 0.05)
    try:
        found = await drand_relays.fetch_round(settings.drand_relays, chain, round_number,
                                               settings.drand_timeout_ms / 1000, client)
    except drand_relays.NoRelayAnswered as exc:
        async with conn.transaction():
            await audit_log.append(conn, actor=actor, action="draw.beacon_fetch_failed", subject=campaign_id,
                                   details={"round": round_number, "refusals": _refusals(exc.refusals)})
        raise Unavailable(f"{exc} (an operator can still submit the round with `stimulus beacon submit`)",
                          code="beacon_unavailable", round=round_number) from None
    # fetch_round verified the signature against the chain's key before answering.
    recorded = await _store(conn, settings, campaign, found.round, found.signature, True, fallback, actor,
                            found.relay, found.refusals)
    return {**recorded, "relay": found.relay, "refusals": _refusals(found.refusals)}


async def _round_to_fetch(conn: asyncpg.Connection, campaign: campaigns.Campaign, fallback: bool) -> int:
    declared = campaign.beacon.round
    if declared is not None:
        if fallback and campaign.beacon.fallback != "next-round":
            raise InvalidInput("this campaign declared no next-round fallback", code="wrong_beacon_round")
        return declared + 1 if fallback else declared
    commitment = await conn.fetchrow("SELECT committed_at FROM commitments WHERE campaign_id = $1", campaign.id)
    if commitment is None:
        raise NotFound("the list is not committed yet", code="not_committed")
    return await _open_round(conn, campaign, commitment["committed_at"])


async def _open_round(conn: asyncpg.Connection, campaign: campaigns.Campaign, committed_at: datetime) -> int:
    """A sandbox campaign that left its round open takes the first round after the commitment, every
    reveal and, when someone never revealed, the reveal deadline: a round nobody chooses."""
    status = await ceremony.ceremony_status(conn, campaign)
    if not status.ready:
        raise WrongState(f"the ceremony is not complete: {status.reason}", code="ceremony_incomplete")
    moments = [committed_at, *(p.revealed_at for p in status.participants if p.revealed_at is not None)]
    if status.reveal_deadline is not None and any(p.secret_hex is None for p in status.participants):
        moments.append(status.reveal_deadline)
    return drand.SANDBOX.first_round_after(max(moments))


def _chain(settings: Settings, kind: str) -> drand.Chain:
    # Nothing from the sandbox is trusted outside development, its chain included.
    if kind == "sandbox" and not settings.sandbox:
        raise InvalidInput("the sandbox beacon is for development only", code="sandbox_beacon_refused")
    return drand.CHAINS[kind]


async def _store(conn: asyncpg.Connection, settings: Settings, campaign: campaigns.Campaign, round_number: int,
                 signature: bytes, signature_ok: bool, fallback: bool, actor: str, relay: str | None,
                 refusals: tuple[drand_relays.RelayRefusal, ...]) -> dict[str, Any]:
    chain = _chain(settings, campaign.beacon.kind)
    async with conn.transaction():
        state = await conn.fetchval("SELECT state FROM campaigns WHERE id = $1 FOR UPDATE", campaign.id)
        if state != "committed":
            raise WrongState("the beacon is recorded after the commitment and before the draw",
                             code="wrong_campaign_state", state=state)
        commitment = await conn.fetchrow("SELECT committed_at FROM commitments WHERE campaign_id = $1", campaign.id)
        if commitment is None:
            raise NotFound("the list is not committed yet", code="not_committed")
        expected = campaign.beacon.round
        if expected is None:
            expected = await _open_round(conn, campaign, commitment["committed_at"])
        beacon = _verified_record(campaign, chain, expected, round_number, signature, signature_ok, fallback,
                                  commitment["committed_at"])
        existing = await conn.fetchval("SELECT record FROM beacons WHERE campaign_id = $1", campaign.id)
        if existing is not None:
            if existing["signature_hex"] == beacon["signature_hex"]:
                return dict(existing)
            raise Conflict("a different beacon is already recorded for this campaign", code="beacon_exists")
        latest_reveal = await conn.fetchval(
            "SELECT max(revealed_at) FROM ceremony_reveals WHERE campaign_id = $1", campaign.id)
        if latest_reveal is not None and chain.round_time(round_number) <= latest_reveal:
            raise InvalidInput("a reveal came after this round was published", code="beacon_before_reveals")
        await conn.execute(
            """INSERT INTO beacons (campaign_id, kind, round, signature, randomness, record, recorded_by, relay)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            campaign.id, beacon["kind"], beacon["round"], signature, drand.randomness(signature), beacon, actor,
            relay)
        await audit_log.append(conn, actor=actor, action="draw.beacon", subject=campaign.id, details={
            **{k: beacon[k] for k in ("kind", "round", "randomness_hex")},
            "relay": relay or "submitted by the operator", "refusals": _refusals(refusals)})
    return beacon


def _verified_record(campaign: campaigns.Campaign, chain: drand.Chain, expected: int, round_number: int,
                     signature: bytes, signature_ok: bool, fallback: bool, committed_at: datetime) -> dict[str, Any]:
    next_round_allowed = (fallback and campaign.beacon.fallback == "next-round"
                          and campaign.beacon.round is not None)
    if round_number != expected and not (next_round_allowed and round_number == expected + 1):
        raise InvalidInput(f"the campaign's beacon is round {expected}", code="wrong_beacon_round")
    if not signature_ok:
        raise InvalidInput(f"the signature is not the {campaign.beacon.kind} chain's for round {round_number}",
                           code="beacon_invalid")
    published = chain.round_time(round_number)
    if published <= committed_at:
        raise InvalidInput("this round was published before the list was committed",
                           code="beacon_before_commitment")
    if round_number != expected:
        path = "next-round-fallback"
    else:
        path = "declared-round" if campaign.beacon.round is not None else "first-round-after-reveals"
    record_ = {"kind": campaign.beacon.kind, "chain_hash": chain.chain_hash, "round": round_number,
               "signature_hex": signature.hex(), "randomness_hex": drand.randomness(signature).hex(),
               "round_time": timestamp(published), "path": path}
    if campaign.beacon.kind == "sandbox":
        record_ |= {"public_key_hex": chain.public_key_hex, "warning": SANDBOX_WARNING}
    return record_


def _refusals(refusals: tuple[drand_relays.RelayRefusal, ...]) -> list[dict[str, str]]:
    return [{"relay": r.relay, "reason": r.reason} for r in refusals]


async def fetch(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> dict[str, Any]:
    record_ = await conn.fetchval("SELECT record FROM beacons WHERE campaign_id = $1", campaign_id)
    if record_ is None:
        raise NotFound("no beacon recorded yet", code="beacon_not_recorded")
    return dict(record_)
