"""Campaigns: parameters, validation, the forward-only state machine, and their SQL.

Every parameter that decides who wins or how much money moves is fixed at creation and published;
state changes only move forward and each is written to the audit log in the same transaction.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec

from kernel import audit_log, ledger
from kernel.errors import InvalidInput, NotFound, WrongState
from kernel.input_types import Input, Int32, Int64

STATES = ("draft", "open", "closed", "committed", "drawn", "issuing", "spending", "expired", "finished")
CAMPAIGN_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{2,39}$")
# Stratum ids and tier names go into leaves, CSV lists and notices: no separators, no quoting.
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_TIERS = 10
MAX_STRATA = 1000
MAX_PARTICIPANTS = 20
BEACON_KINDS = ("drand-quicknet", "sandbox")
DRAW_ALGORITHMS = ("sha256-score-v1", "rfc3797")
RFC3797_MAX_SELECTION = 1 << 16  # the RFC writes the selection counter in two bytes
Age = Annotated[int, msgspec.Meta(ge=0, le=150)]  # years, as eligibility rules count them


class Tier(Input, frozen=True):
    tier: str
    amount_fen: Int64
    count: Int32


class Stratum(Input, frozen=True):
    stratum: str
    quota: Int32
    name: str = ""


class Beacon(Input, frozen=True):
    kind: Literal["drand-quicknet", "sandbox"]
    round: Int64 | None = None
    fallback: Literal["next-round", "none"] = "next-round"


class Participant(Input, frozen=True):
    id: str
    name: str
    public_key_hex: str


class Eligibility(Input, frozen=True):
    city: str | None = None
    require_mainland_phone: bool = True
    social_insurance_city: str | None = None
    min_age: Age | None = 18
    max_age: Age | None = None


class DrawRules(Input, frozen=True):
    algorithm: Literal["sha256-score-v1", "rfc3797"] = "sha256-score-v1"
    tier_scope: Literal["global", "stratum"] = "global"
    spillover: Literal["none", "redistribute-lowest-scores"] = "redistribute-lowest-scores"
    missing_reveal: Literal["proceed-without", "abort"] = "proceed-without"
    reveal_deadline: datetime | None = None


class CampaignSpec(Input, frozen=True):
    """What an operator submits to create a campaign."""

    id: str
    name: str
    budget_fen: Int64
    tiers: list[Tier]
    strata: list[Stratum]
    registration_opens_at: datetime
    registration_closes_at: datetime
    claim_deadline: datetime
    spending_deadline: datetime
    beacon: Beacon
    participants: list[Participant] = msgspec.field(default_factory=list)
    eligibility: Eligibility = Eligibility()
    draw_rules: DrawRules = DrawRules()


class Campaign(msgspec.Struct, frozen=True):
    id: str
    name: str
    state: str
    budget_fen: int
    tiers: list[Tier]
    strata: list[Stratum]
    registration_opens_at: datetime
    registration_closes_at: datetime
    claim_deadline: datetime
    spending_deadline: datetime
    beacon: Beacon
    participants: list[Participant]
    eligibility: Eligibility
    draw_rules: DrawRules
    created_by: str
    created_at: datetime

    @property
    def winner_count(self) -> int:
        return sum(t.count for t in self.tiers)

    def stratum_ids(self) -> frozenset[str]:
        return frozenset(s.stratum for s in self.strata)


def _aware(name: str, value: datetime) -> None:
    if value.tzinfo is None:
        raise InvalidInput(f"{name} needs a time zone", code="naive_datetime", field=name)


def validate_spec(spec: CampaignSpec) -> None:
    """Refuse a campaign whose parameters cannot all be honoured."""
    if not CAMPAIGN_ID_PATTERN.match(spec.id):
        raise InvalidInput("id: 3-40 lower-case letters, digits and dashes", code="invalid_campaign_id")
    if not spec.name.strip() or len(spec.name) > 200:
        raise InvalidInput("name: 1-200 characters", code="invalid_name")
    if spec.budget_fen <= 0:
        raise InvalidInput("budget_fen must be positive", code="invalid_budget")
    if not 1 <= len(spec.tiers) <= MAX_TIERS:
        raise InvalidInput(f"between 1 and {MAX_TIERS} prize tiers", code="invalid_tiers")
    if len({t.tier for t in spec.tiers}) != len(spec.tiers):
        raise InvalidInput("tier names must be unique", code="invalid_tiers")
    for tier in spec.tiers:
        if tier.amount_fen <= 0 or tier.count <= 0:
            raise InvalidInput("every tier needs a positive amount_fen and count", code="invalid_tiers")
    total = sum(t.amount_fen * t.count for t in spec.tiers)
    if total > spec.budget_fen:
        raise InvalidInput(f"tiers need {total} fen but the budget is {spec.budget_fen}",
                           code="tiers_exceed_budget")
    if not 1 <= len(spec.strata) <= MAX_STRATA:
        raise InvalidInput(f"between 1 and {MAX_STRATA} strata", code="invalid_strata")
    if len({s.stratum for s in spec.strata}) != len(spec.strata):
        raise InvalidInput("stratum ids must be unique", code="invalid_strata")
    for name in [s.stratum for s in spec.strata] + [t.tier for t in spec.tiers]:
        if not LABEL_PATTERN.match(name):
            raise InvalidInput(f"{name!r}: stratum ids and tier names are 1-64 letters, digits, '.', '_' or '-'",
                               code="invalid_label")
    if any(s.quota <= 0 or not s.stratum for s in spec.strata):
        raise InvalidInput("every stratum needs an id and a positive quota", code="invalid_strata")
    winners = sum(t.count for t in spec.tiers)
    quotas = sum(s.quota for s in spec.strata)
    if quotas != winners:
        raise InvalidInput(f"quotas add up to {quotas} but the tiers have {winners} winners",
                           code="quotas_mismatch")
    for name in ("registration_opens_at", "registration_closes_at", "claim_deadline", "spending_deadline"):
        _aware(name, getattr(spec, name))
    if not (spec.registration_opens_at < spec.registration_closes_at
            <= spec.claim_deadline <= spec.spending_deadline):
        raise InvalidInput("windows must be in order: opens < closes <= claim deadline <= spending deadline",
                           code="windows_out_of_order")
    if spec.beacon.kind == "drand-quicknet" and (spec.beacon.round is None or spec.beacon.round <= 0):
        raise InvalidInput("a drand beacon needs its round fixed in advance", code="invalid_beacon")
    if spec.beacon.kind == "sandbox" and spec.beacon.round is not None and spec.beacon.round <= 0:
        raise InvalidInput("a sandbox beacon's round is positive, or left open (null)", code="invalid_beacon")
    if len(spec.participants) > MAX_PARTICIPANTS:
        raise InvalidInput(f"at most {MAX_PARTICIPANTS} ceremony participants", code="invalid_participants")
    if len({p.id for p in spec.participants}) != len(spec.participants):
        raise InvalidInput("participant ids must be unique", code="invalid_participants")
    for p in spec.participants:
        try:
            key = bytes.fromhex(p.public_key_hex)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise InvalidInput(f"participant {p.id}: public_key_hex must be a 32-byte Ed25519 key",
                               code="invalid_participants")
    rules = spec.draw_rules
    if rules.reveal_deadline is not None:
        _aware("draw_rules.reveal_deadline", rules.reveal_deadline)
        if rules.reveal_deadline <= spec.registration_closes_at:
            raise InvalidInput("the reveal deadline must fall after registration closes",
                               code="windows_out_of_order")
    if rules.algorithm == "rfc3797" and winners > RFC3797_MAX_SELECTION:
        raise InvalidInput(f"rfc3797 selects at most {RFC3797_MAX_SELECTION} winners (the RFC's two-byte counter)",
                           code="invalid_draw_rules")
    if rules.tier_scope != "global":
        raise InvalidInput("tier_scope: only 'global' (tiers in rank order across all strata) is offered",
                           code="invalid_draw_rules")
    if spec.eligibility.min_age is not None and spec.eligibility.max_age is not None \
            and spec.eligibility.min_age > spec.eligibility.max_age:
        raise InvalidInput("min_age exceeds max_age", code="invalid_eligibility")


_COLUMNS = """id, name, state, budget_fen, tiers, strata, registration_opens_at, registration_closes_at,
              claim_deadline, spending_deadline, beacon, participants, eligibility, draw_rules,
              created_by, created_at"""


def _from_row(row: asyncpg.Record) -> Campaign:
    return msgspec.convert(dict(row), Campaign)


async def create(conn: asyncpg.Connection, spec: CampaignSpec, actor: str) -> Campaign:
    validate_spec(spec)
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO campaigns (id, name, budget_fen, tiers, strata, registration_opens_at,
                   registration_closes_at, claim_deadline, spending_deadline, beacon, participants,
                   eligibility, draw_rules, pseudonym_key, created_by)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)
               ON CONFLICT (id) DO NOTHING
               RETURNING {_COLUMNS}""",
            spec.id, spec.name, spec.budget_fen, msgspec.to_builtins(spec.tiers),
            msgspec.to_builtins(spec.strata), spec.registration_opens_at,
            spec.registration_closes_at, spec.claim_deadline, spec.spending_deadline,
            msgspec.to_builtins(spec.beacon), msgspec.to_builtins(spec.participants),
            msgspec.to_builtins(spec.eligibility), msgspec.to_builtins(spec.draw_rules),
            secrets.token_bytes(32), actor,
        )
        if row is None:
            raise WrongState(f"campaign {spec.id} already exists", code="campaign_exists")
        await ledger.ensure_accounts(conn, spec.id, ["funding", "budget"])
        await ledger.post(conn, ledger.Posting(
            kind="campaign.fund", ref=spec.id, campaign_id=spec.id,
            legs=(ledger.Leg(ledger.account_name(spec.id, "budget"), spec.budget_fen),
                  ledger.Leg(ledger.account_name(spec.id, "funding"), -spec.budget_fen)),
        ))
        await audit_log.append(conn, actor=actor, action="campaign.create", subject=spec.id,
                               details=msgspec.to_builtins(spec))
    return _from_row(row)


async def fetch(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> Campaign:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM campaigns WHERE id = $1", campaign_id)
    if row is None:
        raise NotFound(f"no campaign {campaign_id!r}", code="campaign_not_found")
    return _from_row(row)


async def list_all(conn: asyncpg.Connection | asyncpg.Pool, limit: int = 100) -> list[Campaign]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM campaigns ORDER BY created_at DESC LIMIT $1", limit)
    return [_from_row(r) for r in rows]


async def pseudonym_key(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> bytes:
    value = await conn.fetchval("SELECT pseudonym_key FROM campaigns WHERE id = $1", campaign_id)
    if value is None:
        raise NotFound(f"no campaign {campaign_id!r}", code="campaign_not_found")
    return bytes(value)


async def transition(conn: asyncpg.Connection, campaign_id: str, target: str, actor: str,
                     details: dict[str, Any] | None = None, *, expected: str | None = None) -> Campaign:
    """Move a campaign forward by one or more states, with compare-and-set and an audit entry.

    Must run inside the caller's transaction when other writes depend on the new state.
    """
    if target not in STATES:
        raise InvalidInput(f"unknown state {target!r}", code="unknown_state")
    own_tx = not conn.is_in_transaction()
    tx = conn.transaction() if own_tx else None
    if tx is not None:
        await tx.start()
    try:
        current = await conn.fetchval("SELECT state FROM campaigns WHERE id = $1 FOR UPDATE", campaign_id)
        if current is None:
            raise NotFound(f"no campaign {campaign_id!r}", code="campaign_not_found")
        if expected is not None and current != expected:
            raise WrongState(f"campaign is {current}, not {expected}", code="wrong_campaign_state",
                             state=current)
        if STATES.index(target) <= STATES.index(current):
            raise WrongState(f"campaign is already {current}; states only move forward",
                             code="wrong_campaign_state", state=current)
        await conn.execute(
            """UPDATE campaigns SET state = $2, updated_at = now(),
                   closed_at = CASE WHEN $2 = 'closed' THEN clock_timestamp() ELSE closed_at END
               WHERE id = $1""", campaign_id, target)
        await audit_log.append(conn, actor=actor, action=f"campaign.{target}", subject=campaign_id,
                               details={"from": current, "to": target, **(details or {})})
        campaign = await fetch(conn, campaign_id)
    except BaseException:
        if tx is not None:
            await tx.rollback()
        raise
    if tx is not None:
        await tx.commit()
    return campaign
