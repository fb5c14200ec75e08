"""Citizen registration: one live registration per person per campaign, written by group commit.

The database enforces the window and the state (the insert joins the campaign row FOR SHARE, so
closing the campaign waits for in-flight inserts and nothing slips in after close) and uniqueness
per person. A repeat with the same payload returns the first ticket; another payload is 409.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import msgspec

from kernel.errors import Conflict, InvalidInput, NotFound, WrongState
from kernel.input_types import Input
from kernel.signing import SigningKey
from kernel.wallet_rule import check_wallet
from lottery.group_commit import GroupCommitter
from lottery.leaf import encode_leaf
from lottery.statements import receipt_statement


class WalletBinding(Input, frozen=True):
    bank_code: str
    wallet_id: str


class RegistrationRequest(Input, frozen=True):
    wallet: WalletBinding | None = None


class Receipt(msgspec.Struct, frozen=True):
    """What a citizen keeps to prove they registered: signed by the service."""

    campaign_id: str
    ticket: int
    leaf_hex: str
    registered_at: str
    key_id: str
    signature_hex: str


def parse_request(body: bytes, bank_codes: Collection[str]) -> RegistrationRequest:
    """The body, its wallet (if any) held to the rule a claim applies (`kernel.wallet_rule`)."""
    if not body.strip():
        return RegistrationRequest()
    try:
        request = msgspec.json.decode(body, type=RegistrationRequest)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc), code="validation_failed") from exc
    except msgspec.DecodeError as exc:
        raise InvalidInput("the body is not valid JSON", code="malformed_json") from exc
    if request.wallet is not None:
        check_wallet(bank_codes, request.wallet.bank_code, request.wallet.wallet_id)
    return request


def payload_hash(request: RegistrationRequest) -> bytes:
    return hashlib.sha256(msgspec.json.encode(request)).digest()


def pseudonym_for(pseudonym_key: bytes, id_hmac: bytes) -> str:
    return hmac.new(pseudonym_key, id_hmac, hashlib.sha256).hexdigest()[:32]


def receipt_message(campaign_id: str, ticket: int, leaf_hex: str, registered_at: str, key_id: str) -> bytes:
    return receipt_statement(campaign_id, ticket, leaf_hex, registered_at, key_id)


def make_receipt(key: SigningKey, campaign_id: str, ticket: int, pseudonym: str, stratum: str,
                 registered_at: datetime) -> Receipt:
    leaf_hex = encode_leaf(campaign_id, ticket, pseudonym, stratum).hex()
    at = registered_at.astimezone(UTC).isoformat(timespec="microseconds")
    signature = key.sign(receipt_message(campaign_id, ticket, leaf_hex, at, key.key_id))
    return Receipt(campaign_id, ticket, leaf_hex, at, key.key_id, signature.hex())


@dataclass(frozen=True)
class NewRegistration:
    campaign_id: str
    id_hmac: bytes
    pseudonym: str
    stratum: str
    payload_hash: bytes
    wallet_bank: str | None
    wallet_id: str | None


@dataclass(frozen=True)
class Registered:
    ticket: int
    registered_at: datetime
    created: bool


_INSERT = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[])
        WITH ORDINALITY AS t(campaign_id, id_hmac, pseudonym, stratum, payload_hash, wallet_bank, wallet_id, n)
), live AS (
    SELECT c.id FROM campaigns c
    WHERE c.id IN (SELECT DISTINCT campaign_id FROM input)
      AND c.state = 'open'
      AND now() >= c.registration_opens_at AND now() < c.registration_closes_at
    FOR SHARE
)
INSERT INTO registrations (campaign_id, id_hmac, pseudonym, stratum, payload_hash, wallet_bank, wallet_id)
SELECT i.campaign_id, i.id_hmac, i.pseudonym, i.stratum, i.payload_hash, i.wallet_bank, i.wallet_id
FROM input i JOIN live ON live.id = i.campaign_id
ORDER BY i.n
ON CONFLICT (campaign_id, id_hmac) WHERE withdrawn_at IS NULL DO NOTHING
RETURNING campaign_id, id_hmac, ticket, registered_at
"""

_EXISTING = """
SELECT r.campaign_id, r.id_hmac, r.ticket, r.registered_at, r.payload_hash
FROM registrations r
JOIN unnest($1::text[], $2::bytea[]) AS t(campaign_id, id_hmac)
  ON r.campaign_id = t.campaign_id AND r.id_hmac = t.id_hmac
WHERE r.withdrawn_at IS NULL
"""


class RegistrationWriter:
    """Batches registrations from concurrent requests into single INSERT statements."""

    def __init__(self, pool: asyncpg.Pool, max_batch: int = 256, max_inflight: int = 3,
                 wait_s: float | None = None) -> None:
        self._pool = pool
        self._committer: GroupCommitter[NewRegistration, Registered] = GroupCommitter(
            self._flush, max_batch=max_batch, max_inflight=max_inflight, wait_s=wait_s)

    def start(self) -> None:
        self._committer.start()

    async def stop(self) -> None:
        await self._committer.stop()

    async def register(self, item: NewRegistration) -> Registered:
        return await self._committer.submit(item)

    async def _flush(self, items: Sequence[NewRegistration]) -> list[Registered | BaseException]:
        async with self._pool.acquire() as conn:
            inserted = await conn.fetch(
                _INSERT,
                [i.campaign_id for i in items], [i.id_hmac for i in items],
                [i.pseudonym for i in items], [i.stratum for i in items],
                [i.payload_hash for i in items], [i.wallet_bank for i in items],
                [i.wallet_id for i in items],
            )
            created = {(r["campaign_id"], bytes(r["id_hmac"])): r for r in inserted}
            missing = [i for i in items if (i.campaign_id, i.id_hmac) not in created]
            existing: dict[tuple[str, bytes], asyncpg.Record] = {}
            if missing:
                # A separate statement: under READ COMMITTED it sees rows that concurrent
                # transactions committed while the insert waited on them.
                rows = await conn.fetch(_EXISTING, [i.campaign_id for i in missing],
                                        [i.id_hmac for i in missing])
                existing = {(r["campaign_id"], bytes(r["id_hmac"])): r for r in rows}
        results: list[Registered | BaseException] = []
        handed_out: set[tuple[str, bytes]] = set()
        for item in items:
            key = (item.campaign_id, item.id_hmac)
            row = created.get(key)
            if row is not None and key not in handed_out:
                handed_out.add(key)
                results.append(Registered(row["ticket"], row["registered_at"], True))
                continue
            prior = row if row is not None else existing.get(key)
            if prior is None:
                results.append(WrongState("registration is not open for this campaign",
                                          code="registration_not_open"))
            elif row is None and bytes(prior["payload_hash"]) != item.payload_hash:
                results.append(Conflict("this person is already registered with different details",
                                        code="registration_conflict", ticket=prior["ticket"]))
            elif row is not None and item.payload_hash != _payload_of(items, key):
                results.append(Conflict("this person is already registered with different details",
                                        code="registration_conflict", ticket=row["ticket"]))
            else:
                results.append(Registered(prior["ticket"], prior["registered_at"], False))
        return results


def _payload_of(items: Sequence[NewRegistration], key: tuple[str, bytes]) -> bytes:
    """The payload of the first item in the batch with this key: the one that was inserted."""
    for item in items:
        if (item.campaign_id, item.id_hmac) == key:
            return item.payload_hash
    raise KeyError(key)


@dataclass(frozen=True)
class OwnRegistration:
    ticket: int
    pseudonym: str
    stratum: str
    registered_at: datetime
    wallet_bank: str | None
    wallet_id: str | None


async def find_own(conn: asyncpg.Pool | asyncpg.Connection, campaign_id: str,
                   id_hmac: bytes) -> OwnRegistration:
    row = await conn.fetchrow(
        """SELECT ticket, pseudonym, stratum, registered_at, wallet_bank, wallet_id FROM registrations
           WHERE campaign_id = $1 AND id_hmac = $2 AND withdrawn_at IS NULL""",
        campaign_id, id_hmac,
    )
    if row is None:
        raise NotFound("no registration for this person in this campaign", code="registration_not_found")
    return OwnRegistration(**dict(row))


async def withdraw(pool: asyncpg.Pool, campaign_id: str, id_hmac: bytes) -> int:
    """Withdraw before close; returns the withdrawn ticket."""
    async with pool.acquire() as conn, conn.transaction():
        campaign = await conn.fetchrow(
            """SELECT state = 'open' AND now() < registration_closes_at AS open FROM campaigns
               WHERE id = $1 FOR SHARE""", campaign_id)
        if campaign is None:
            raise NotFound(f"no campaign {campaign_id!r}", code="campaign_not_found")
        if not campaign["open"]:
            raise WrongState("withdrawal is only possible while registration is open",
                             code="registration_not_open")
        ticket = await conn.fetchval(
            """UPDATE registrations SET withdrawn_at = clock_timestamp()
               WHERE campaign_id = $1 AND id_hmac = $2 AND withdrawn_at IS NULL RETURNING ticket""",
            campaign_id, id_hmac,
        )
        if ticket is None:
            raise NotFound("no registration for this person in this campaign",
                           code="registration_not_found")
        return int(ticket)


async def count_ineligible(pool: asyncpg.Pool, campaign_id: str, code: str) -> None:
    await pool.execute(
        """INSERT INTO ineligible_attempts (campaign_id, code, attempts) VALUES ($1, $2, 1)
           ON CONFLICT (campaign_id, code) DO UPDATE SET attempts = ineligible_attempts.attempts + 1""",
        campaign_id, code,
    )


def verify_receipt(receipt: dict[str, object], service_public_key: bytes) -> bool:
    """Check a receipt's signature against the service's published key."""
    from kernel.signing import verify_signature

    try:
        message = receipt_message(str(receipt["campaign_id"]), int(str(receipt["ticket"])),
                                  str(receipt["leaf_hex"]), str(receipt["registered_at"]),
                                  str(receipt["key_id"]))
        signature = bytes.fromhex(str(receipt["signature_hex"]))
    except (KeyError, ValueError):
        return False
    return verify_signature(service_public_key, signature, message)
