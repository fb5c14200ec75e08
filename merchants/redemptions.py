"""Redemption notices: a merchant says a packet paid (part of) a purchase, or refunded one.

A notice is checked and stored here and waits, `pending`, for the reconciler to match it with a
bank settlement line; no money moves in the ledger on a notice alone.

Checks on a payment, in this order, each refusal with its own code:
* the payment reference names a packet (`unknown_payment_reference`) that is `issued`
  (`packet_not_live`: not yet credited, reclaimed, spent out or cancelled);
* its campaign is spending now and the purchase happened before the spending deadline and not
  in the future (`spending_closed`, `occurred_in_future`);
* the merchant's category and district are accepted by the campaign (`merchant_not_eligible`);
* the balance: the packet's amount minus what the merchant notices for it already claim, net of
  their reversals, counting notices `pending` or `matched` (a notice in `break` is under review
  and claims nothing), must cover the amount (`amount_exceeds_balance`).

A reversal (refund) names the payment it refunds; its amount must not exceed the payment's
amount minus the reversals of it already stored. It is accepted after the spending deadline too:
the refund happened at the till, and the reconciler decides where the money goes.

Idempotency is by (merchant, merchant_txn_id), for good: the same payload again is answered with
the stored notice (200, `replayed`), another payload under a used id is 409
`merchant_txn_id_reused`. Notices for one packet are serialised by a transaction-scoped advisory
lock on the packet, so two notices at once cannot both spend the same balance, and the same
notice sent many times at once stores one row.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import msgspec

from merchants.registry import Merchant
from stimulus.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound, Unprocessable

TXN_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
PAYMENT_REFERENCE_PATTERN = r"^pkt-[0-9a-f]{32}$"
BANK_REFERENCE_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
MAX_AMOUNT_FEN = 2**53
# A till's clock may run ahead of ours by as much as a signed request's timestamp may.
CLOCK_SKEW = timedelta(seconds=300)
SPENDING_STATES = ("issuing", "spending")
PAYMENT, REVERSAL = "payment", "reversal"
# Advisory lock class for "notices of one packet" (two-int form: its own key space).
_PACKET_LOCK_CLASS = 0x5717_0300

TxnId = Annotated[str, msgspec.Meta(pattern=TXN_ID_PATTERN)]
Fen = Annotated[int, msgspec.Meta(gt=0, le=MAX_AMOUNT_FEN)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class PaymentNotice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    merchant_txn_id: TxnId
    payment_reference: Annotated[str, msgspec.Meta(pattern=PAYMENT_REFERENCE_PATTERN)]
    amount_fen: Fen
    occurred_at: AwareDatetime
    bank_reference: Annotated[str, msgspec.Meta(pattern=BANK_REFERENCE_PATTERN)] | None = None
    basket_fen: Fen | None = None


class ReversalNotice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    merchant_txn_id: TxnId
    amount_fen: Fen
    occurred_at: AwareDatetime
    bank_reference: Annotated[str, msgspec.Meta(pattern=BANK_REFERENCE_PATTERN)] | None = None


class Notice(msgspec.Struct, frozen=True):
    merchant_id: str
    merchant_txn_id: str
    kind: str
    reverses_txn_id: str | None
    campaign_id: str
    payment_reference: str
    bank_reference: str | None
    amount_fen: int
    basket_fen: int | None
    occurred_at: datetime
    received_at: datetime
    status: str
    # For a payment: what its stored reversals (pending or matched) gave back.
    reversed_fen: int = 0


class Stored(msgspec.Struct, frozen=True):
    notice: Notice
    replayed: bool


def payload_hash(kind: str, reverses_txn_id: str | None, payment_reference: str | None,
                 bank_reference: str | None, amount_fen: int, basket_fen: int | None,
                 occurred_at: datetime) -> bytes:
    moment = occurred_at.astimezone(UTC).isoformat(timespec="microseconds")
    return hashlib.sha256(msgspec.json.encode(
        [kind, reverses_txn_id, payment_reference, bank_reference, amount_fen, basket_fen, moment])).digest()


def decode(body: bytes, kind: type[msgspec.Struct]) -> msgspec.Struct:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc), code="validation_failed") from exc
    except msgspec.DecodeError as exc:
        raise InvalidInput("the body is not valid JSON", code="malformed_json") from exc


_NOTICE_COLUMNS = """n.merchant_id, n.merchant_txn_id, n.kind, n.reverses_txn_id, n.campaign_id,
    n.payment_reference, n.bank_reference, n.amount_fen, n.basket_fen, n.occurred_at, n.received_at,
    n.status, n.payload_hash, n.packet_id, n.bank_code,
    CASE WHEN n.kind = 'payment' THEN (
        SELECT COALESCE(sum(r.amount_fen), 0) FROM redemption_notices r
        WHERE r.merchant_id = n.merchant_id AND r.reverses_txn_id = n.merchant_txn_id
          AND r.status IN ('pending', 'matched')) ELSE 0 END AS reversed_fen"""

_FIND = f"SELECT {_NOTICE_COLUMNS} FROM redemption_notices n WHERE n.merchant_id = $1 AND n.merchant_txn_id = $2"

# The packet behind a payment reference, its campaign's window and whether this merchant may take
# it; the advisory lock serialises every notice of the packet until commit.
_RESOLVE = """
SELECT p.id, p.campaign_id, p.state, p.amount_fen, p.wallet_bank, c.state AS campaign_state,
       c.spending_deadline, now() AS now,
       (NOT EXISTS (SELECT 1 FROM campaign_acceptance a WHERE a.campaign_id = p.campaign_id AND a.kind = 'category')
        OR EXISTS (SELECT 1 FROM campaign_acceptance a
                   WHERE a.campaign_id = p.campaign_id AND a.kind = 'category' AND a.value = $2)) AS category_ok,
       (NOT EXISTS (SELECT 1 FROM campaign_acceptance a WHERE a.campaign_id = p.campaign_id AND a.kind = 'district')
        OR EXISTS (SELECT 1 FROM campaign_acceptance a
                   WHERE a.campaign_id = p.campaign_id AND a.kind = 'district' AND a.value = $3)) AS district_ok,
       pg_advisory_xact_lock($4, (p.id % 2147483647)::int) AS locked
FROM packets p JOIN campaigns c ON c.id = p.campaign_id
WHERE merchants_payment_reference(p.campaign_id, p.id) = $1"""

# After the lock (a new statement sees every notice committed before it): is this txn id taken,
# and how much of the packet do stored notices claim, net of reversals.
_CLAIMED = """
SELECT (SELECT payload_hash FROM redemption_notices WHERE merchant_id = $1 AND merchant_txn_id = $2) AS existing,
       (SELECT COALESCE(sum(CASE kind WHEN 'payment' THEN amount_fen ELSE -amount_fen END), 0)
        FROM redemption_notices WHERE packet_id = $3 AND status IN ('pending', 'matched')) AS claimed_fen"""

_INSERT = """
INSERT INTO redemption_notices (merchant_id, merchant_txn_id, kind, reverses_txn_id, campaign_id, packet_id,
    bank_code, payment_reference, bank_reference, amount_fen, basket_fen, occurred_at, payload_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (merchant_id, merchant_txn_id) DO NOTHING
RETURNING merchant_id, merchant_txn_id, kind, reverses_txn_id, campaign_id, payment_reference, bank_reference,
          amount_fen, basket_fen, occurred_at, received_at, status"""


def _notice(row: asyncpg.Record, reversed_fen: int | None = None) -> Notice:
    return Notice(row["merchant_id"], row["merchant_txn_id"], row["kind"], row["reverses_txn_id"],
                  row["campaign_id"], row["payment_reference"], row["bank_reference"], row["amount_fen"],
                  row["basket_fen"], row["occurred_at"], row["received_at"], row["status"],
                  int(row["reversed_fen"] if reversed_fen is None else reversed_fen))


async def find(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str, txn_id: str) -> Notice:
    row = await conn.fetchrow(_FIND, merchant_id, txn_id)
    if row is None:
        raise NotFound(f"no notice {txn_id!r} from this merchant", code="notice_not_found")
    return _notice(row)


async def _replay(conn: asyncpg.Connection, merchant_id: str, txn_id: str, digest: bytes) -> Stored:
    row = await conn.fetchrow(_FIND, merchant_id, txn_id)
    assert row is not None, "called only once the txn id is known to be taken"
    if bytes(row["payload_hash"]) != digest:
        raise Conflict(f"merchant_txn_id {txn_id!r} was already used with another payload",
                       code="merchant_txn_id_reused")
    return Stored(_notice(row), replayed=True)


def _check_payment(packet: asyncpg.Record, notice: PaymentNotice, claimed_fen: int) -> None:
    if packet["state"] != "issued":
        raise Unprocessable(f"the packet is {packet['state']}, not spendable", code="packet_not_live",
                            packet_state=packet["state"])
    now: datetime = packet["now"]
    deadline: datetime = packet["spending_deadline"]
    if packet["campaign_state"] not in SPENDING_STATES or now >= deadline:
        raise Unprocessable("the campaign is not in its spending window", code="spending_closed",
                            spending_deadline=deadline.isoformat())
    if notice.occurred_at > now + CLOCK_SKEW:
        raise Unprocessable("occurred_at is in the future", code="occurred_in_future")
    if notice.occurred_at >= deadline:
        raise Unprocessable("the purchase happened after the spending deadline", code="spending_closed",
                            spending_deadline=deadline.isoformat())
    if not (packet["category_ok"] and packet["district_ok"]):
        which = "category" if not packet["category_ok"] else "district"
        raise Forbidden(f"the campaign does not accept packets at merchants of this {which}",
                        code="merchant_not_eligible", refused=which)
    available_fen = packet["amount_fen"] - claimed_fen
    if notice.amount_fen > available_fen:
        raise Unprocessable(f"the packet has {available_fen} fen left to claim", code="amount_exceeds_balance",
                            available_fen=available_fen)


async def submit_payment(pool: asyncpg.Pool, merchant: Merchant, notice: PaymentNotice) -> Stored:
    if notice.basket_fen is not None and notice.basket_fen < notice.amount_fen:
        raise InvalidInput("basket_fen is the whole purchase: at least amount_fen", code="invalid_basket")
    digest = payload_hash(PAYMENT, None, notice.payment_reference, notice.bank_reference, notice.amount_fen,
                          notice.basket_fen, notice.occurred_at)
    async with pool.acquire() as conn, conn.transaction():
        packet = await conn.fetchrow(_RESOLVE, notice.payment_reference, merchant.category, merchant.district,
                                     _PACKET_LOCK_CLASS)
        state = await conn.fetchrow(_CLAIMED, merchant.id, notice.merchant_txn_id,
                                    None if packet is None else packet["id"])
        assert state is not None
        if state["existing"] is not None:
            return await _replay(conn, merchant.id, notice.merchant_txn_id, digest)
        if packet is None:
            raise Unprocessable("no packet has this payment reference", code="unknown_payment_reference")
        _check_payment(packet, notice, int(state["claimed_fen"]))
        row = await conn.fetchrow(
            _INSERT, merchant.id, notice.merchant_txn_id, PAYMENT, None, packet["campaign_id"], packet["id"],
            packet["wallet_bank"], notice.payment_reference, notice.bank_reference, notice.amount_fen,
            notice.basket_fen, notice.occurred_at, digest)
        if row is None:  # the same txn id for another packet, committed meanwhile
            return await _replay(conn, merchant.id, notice.merchant_txn_id, digest)
    return Stored(_notice(row, 0), replayed=False)


async def submit_reversal(pool: asyncpg.Pool, merchant: Merchant, payment_txn_id: str,
                          notice: ReversalNotice) -> Stored:
    digest = payload_hash(REVERSAL, payment_txn_id, None, notice.bank_reference, notice.amount_fen, None,
                          notice.occurred_at)
    async with pool.acquire() as conn, conn.transaction():
        original = await conn.fetchrow(_FIND, merchant.id, payment_txn_id)
        if original is None:
            raise NotFound(f"no payment {payment_txn_id!r} from this merchant", code="payment_not_found")
        if original["kind"] != PAYMENT:
            raise Unprocessable(f"{payment_txn_id!r} is a reversal, not a payment", code="not_a_payment")
        packet_id = original["packet_id"]
        await conn.execute("SELECT pg_advisory_xact_lock($1, ($2::bigint % 2147483647)::int)",
                           _PACKET_LOCK_CLASS, packet_id)
        row = await conn.fetchrow(_FIND, merchant.id, notice.merchant_txn_id)
        if row is not None:
            return await _replay(conn, merchant.id, notice.merchant_txn_id, digest)
        original = await conn.fetchrow(_FIND, merchant.id, payment_txn_id)  # current, under the lock
        assert original is not None
        _check_reversal(original, notice)
        inserted = await conn.fetchrow(
            _INSERT, merchant.id, notice.merchant_txn_id, REVERSAL, payment_txn_id, original["campaign_id"],
            packet_id, original["bank_code"], original["payment_reference"], notice.bank_reference, notice.amount_fen, None, notice.occurred_at,
            digest)
        if inserted is None:
            return await _replay(conn, merchant.id, notice.merchant_txn_id, digest)
    return Stored(_notice(inserted, 0), replayed=False)


def _check_reversal(original: asyncpg.Record, notice: ReversalNotice) -> None:
    if original["status"] not in ("pending", "matched"):
        raise DomainError(f"the payment is in {original['status']}; an operator resolves it first",
                          code="payment_in_break", status=409)
    refundable_fen = original["amount_fen"] - int(original["reversed_fen"])
    if notice.amount_fen > refundable_fen:
        raise Unprocessable(f"{refundable_fen} fen of the payment is left to reverse",
                            code="reversal_exceeds_payment", refundable_fen=refundable_fen)
