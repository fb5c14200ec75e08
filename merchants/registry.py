"""The merchant registry: merchants, their keys and status, and the campaigns' acceptance rules.

A merchant's Ed25519 key pair is made here; only the public half is stored, the private seed is
returned once to whoever registered the merchant. Every change is written to the audit log in
the transaction that makes it. A bulk import is one transaction and one audit entry: all of the
file or none of it (the CSV rules are in `merchants.csv_import`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from kernel import audit_log
from kernel.errors import InvalidInput, NotFound, WrongState
from kernel.input_types import Input
from kernel.signing import SigningKey, key_id_for

ACTIVE, SUSPENDED = "active", "suspended"
STATUSES = (ACTIVE, SUSPENDED)
MERCHANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CATEGORY_PATTERN = re.compile(r"^[0-9]{4}$")  # ISO 18245 merchant category code
DISTRICT_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ACCOUNT_PATTERN = re.compile(r"^[A-Za-z0-9-]{1,64}$")
MAX_NAME_LENGTH = 200
MAX_PAGE = 1000
MAX_ACCEPTANCE_VALUES = 500


class MerchantSpec(Input, frozen=True):
    id: str
    name: str
    category: str
    district: str
    settlement_account: str


class Merchant(msgspec.Struct, frozen=True):
    id: str
    name: str
    category: str
    district: str
    settlement_account: str
    status: str
    key_id: str
    public_key: bytes
    created_at: datetime
    updated_at: datetime


class MerchantView(msgspec.Struct, frozen=True):
    id: str
    name: str
    category: str
    district: str
    settlement_account: str
    status: str
    key_id: str
    public_key_hex: str
    created_at: datetime
    updated_at: datetime


class IssuedKey(msgspec.Struct, frozen=True):
    """A merchant's private key, shown exactly once."""

    merchant_id: str
    key_id: str
    private_key_seed_hex: str


class Acceptance(Input, frozen=True):
    """Where a campaign's packets may be spent; an empty list means no restriction of that kind."""

    categories: list[str] = msgspec.field(default_factory=list)
    districts: list[str] = msgspec.field(default_factory=list)


def view(merchant: Merchant) -> MerchantView:
    fields = {f: getattr(merchant, f) for f in MerchantView.__struct_fields__ if f != "public_key_hex"}
    return MerchantView(**fields, public_key_hex=merchant.public_key.hex())


def spec_problem(spec: MerchantSpec) -> str | None:
    """Why a merchant cannot be registered as given, or None."""
    if not MERCHANT_ID_PATTERN.match(spec.id):
        return "id: 1-64 letters, digits, '.', '_' or '-'"
    name = spec.name.strip()
    if not name or len(spec.name) > MAX_NAME_LENGTH or not spec.name.isprintable():
        return f"name: 1-{MAX_NAME_LENGTH} printable characters"
    if not CATEGORY_PATTERN.match(spec.category):
        return "category: a four-digit merchant category code (MCC)"
    if not DISTRICT_PATTERN.match(spec.district):
        return "district: 1-64 letters, digits, '.', '_' or '-'"
    if not ACCOUNT_PATTERN.match(spec.settlement_account):
        return "settlement_account: 1-64 letters, digits or '-'"
    return None


def _from_row(row: asyncpg.Record) -> Merchant:
    return Merchant(row["id"], row["name"], row["category"], row["district"], row["settlement_account"],
                    row["status"], row["key_id"], bytes(row["public_key"]), row["created_at"],
                    row["updated_at"])


_COLUMNS = "id, name, category, district, settlement_account, status, key_id, public_key, created_at, updated_at"


def new_key(merchant_id: str) -> tuple[SigningKey, IssuedKey]:
    key = SigningKey.generate()
    return key, IssuedKey(merchant_id, key.key_id, key.seed_bytes().hex())


async def create(conn: asyncpg.Connection, spec: MerchantSpec, actor: str) -> tuple[Merchant, IssuedKey]:
    problem = spec_problem(spec)
    if problem is not None:
        raise InvalidInput(problem, code="invalid_merchant")
    key, issued = new_key(spec.id)
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO merchants (id, name, category, district, settlement_account, public_key, key_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING {_COLUMNS}""",
            spec.id, spec.name, spec.category, spec.district, spec.settlement_account,
            key.public_bytes, key.key_id)
        if row is None:
            raise WrongState(f"merchant {spec.id} already exists", code="merchant_exists")
        await audit_log.append(conn, actor=actor, action="merchant.create", subject=spec.id,
                               details={**msgspec.to_builtins(spec), "key_id": key.key_id})
    return _from_row(row), issued


async def insert_many(conn: asyncpg.Connection, specs: Sequence[MerchantSpec],
                      public_keys: Sequence[bytes]) -> list[str]:
    """Insert in one statement inside the caller's transaction; returns the ids that already existed
    (then nothing is inserted: the caller rolls back)."""
    ids = [s.id for s in specs]
    taken = await conn.fetch("SELECT id FROM merchants WHERE id = ANY($1::text[])", ids)
    if taken:
        return [r["id"] for r in taken]
    await conn.execute(
        """INSERT INTO merchants (id, name, category, district, settlement_account, public_key, key_id)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::bytea[], $7::text[])""",
        ids, [s.name for s in specs], [s.category for s in specs], [s.district for s in specs],
        [s.settlement_account for s in specs], list(public_keys), [key_id_for(k) for k in public_keys])
    return []


async def find(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str) -> Merchant | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM merchants WHERE id = $1", merchant_id)
    return None if row is None else _from_row(row)


async def fetch(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str) -> Merchant:
    found = await find(conn, merchant_id)
    if found is None:
        raise NotFound(f"no merchant {merchant_id!r}", code="merchant_not_found")
    return found


async def list_page(conn: asyncpg.Connection | asyncpg.Pool, *, after: str = "", limit: int = 100,
                    status: str | None = None, district: str | None = None,
                    category: str | None = None) -> list[Merchant]:
    """Merchants in id order after `after` (keyset paging), optionally filtered."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM merchants
            WHERE id > $1 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR district = $3)
              AND ($4::text IS NULL OR category = $4)
            ORDER BY id LIMIT $5""",
        after, status, district, category, max(1, min(limit, MAX_PAGE)))
    return [_from_row(r) for r in rows]


async def set_status(conn: asyncpg.Connection, merchant_id: str, status: str, actor: str,
                     reason: str = "") -> Merchant:
    """Suspend or re-activate; setting the status it already has changes nothing and logs nothing."""
    if status not in STATUSES:
        raise InvalidInput(f"status is one of {STATUSES}", code="invalid_status")
    async with conn.transaction():
        current = await conn.fetchval("SELECT status FROM merchants WHERE id = $1 FOR UPDATE", merchant_id)
        if current is None:
            raise NotFound(f"no merchant {merchant_id!r}", code="merchant_not_found")
        if current != status:
            await conn.execute("UPDATE merchants SET status = $2, updated_at = now() WHERE id = $1",
                               merchant_id, status)
            await audit_log.append(conn, actor=actor, action=f"merchant.{'suspend' if status == SUSPENDED else 'activate'}",
                                   subject=merchant_id, details={"from": current, "to": status, "reason": reason})
        return await fetch(conn, merchant_id)


def _check_acceptance(rules: Acceptance) -> None:
    if len(rules.categories) + len(rules.districts) > MAX_ACCEPTANCE_VALUES:
        raise InvalidInput(f"at most {MAX_ACCEPTANCE_VALUES} categories and districts", code="invalid_acceptance")
    for category in rules.categories:
        if not CATEGORY_PATTERN.match(category):
            raise InvalidInput(f"category {category!r}: a four-digit MCC", code="invalid_acceptance")
    for district in rules.districts:
        if not DISTRICT_PATTERN.match(district):
            raise InvalidInput(f"district {district!r}: 1-64 letters, digits, '.', '_' or '-'",
                               code="invalid_acceptance")


async def acceptance(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> Acceptance:
    rows = await conn.fetch("SELECT kind, value FROM campaign_acceptance WHERE campaign_id = $1 ORDER BY value",
                            campaign_id)
    return Acceptance(categories=[r["value"] for r in rows if r["kind"] == "category"],
                      districts=[r["value"] for r in rows if r["kind"] == "district"])


async def set_acceptance(conn: asyncpg.Connection, campaign_id: str, rules: Acceptance, actor: str) -> Acceptance:
    """Replace a campaign's acceptance rules as a whole; notices already stored keep standing."""
    _check_acceptance(rules)
    rules = Acceptance(sorted(set(rules.categories)), sorted(set(rules.districts)))
    async with conn.transaction():
        if await conn.fetchval("SELECT id FROM campaigns WHERE id = $1 FOR UPDATE", campaign_id) is None:
            raise NotFound(f"no campaign {campaign_id!r}", code="campaign_not_found")
        before = await acceptance(conn, campaign_id)
        await conn.execute("DELETE FROM campaign_acceptance WHERE campaign_id = $1", campaign_id)
        kinds = ["category"] * len(rules.categories) + ["district"] * len(rules.districts)
        await conn.execute(
            """INSERT INTO campaign_acceptance (campaign_id, kind, value)
               SELECT $1, * FROM unnest($2::text[], $3::text[])""",
            campaign_id, kinds, [*rules.categories, *rules.districts])
        await audit_log.append(conn, actor=actor, action="campaign.acceptance", subject=campaign_id,
                               details={"before": msgspec.to_builtins(before), "after": msgspec.to_builtins(rules)})
    return rules
