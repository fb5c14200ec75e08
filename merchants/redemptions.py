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

A payment is checked and stored by one PostgreSQL function (migration 0302), one round trip;
reversals, rarer, by the statements below.

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

from kernel.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
    Unprocessable,
)
from kernel.input_types import Input
from merchants.registry import Merchant

TXN_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
PAYMENT_REFERENCE_PATTERN = r"^pkt-[0-9a-f]{32}$"
BANK_REFERENCE_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
MAX_AMOUNT_FEN = 2**53
# A till's clock may run ahead of ours by as much as a signed request's timestamp may.
CLOCK_SKEW = timedelta(seconds=300)
PAYMENT, REVERSAL = "payment", "reversal"
# Advisory lock class for "notices of one packet" (two-int form: its own key space).
_PACKET_LOCK_CLASS = 0x5717_0300

TxnId = Annotated[str, msgspec.Meta(pattern=TXN_ID_PATTERN)]
Fen = Annotated[int, msgspec.Meta(gt=0, le=MAX_AMOUNT_FEN)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class PaymentNotice(Input, frozen=True):
    merchant_txn_id: TxnId
    payment_reference: Annotated[str, msgspec.Meta(pattern=PAYMENT_REFERENCE_PATTERN)]
    amount_fen: Fen
    occurred_at: AwareDatetime
    bank_reference: Annotated[str, msgspec.Meta(pattern=BANK_REFERENCE_PATTERN)] | None = None
    basket_fen: Fen | None = None


class ReversalNotice(Input, frozen=True):
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


_SUBMIT_PAYMENT = """SELECT outcome, detail, figure, campaign_id, received_at
    FROM merchants_submit_payment($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"""


def _refusal(outcome: str, detail: str | None, figure: int | None) -> DomainError:
    if outcome == "unknown_merchant":
        return Unauthenticated("no such merchant", code="unknown_merchant")
    if outcome == "merchant_suspended":
        return Forbidden("the merchant is suspended", code="merchant_suspended")
    if outcome == "unknown_payment_reference":
        return Unprocessable("no packet has this payment reference", code=outcome)
    if outcome == "packet_not_live":
        return Unprocessable(f"the packet is {detail}, not spendable", code=outcome, packet_state=detail)
    if outcome == "spending_closed":
        return Unprocessable("the campaign is not in its spending window, or the purchase happened after it",
                             code=outcome, spending_deadline=detail)
    if outcome == "occurred_in_future":
        return Unprocessable("occurred_at is in the future", code=outcome)
    if outcome == "merchant_not_eligible":
        return Forbidden(f"the campaign does not accept packets at merchants of this {detail}", code=outcome,
                         refused=detail)
    if outcome == "amount_exceeds_balance":
        return Unprocessable(f"the packet has {figure} fen left to claim", code=outcome, available_fen=figure)
    raise AssertionError(f"unknown outcome {outcome!r}")


async def submit_payment(pool: asyncpg.Pool, merchant_id: str, notice: PaymentNotice) -> Stored:
    """Check and store a payment notice in one database call (`merchants_submit_payment`), which
    also refuses an unknown or suspended merchant: the caller has checked the signature only."""
    if notice.basket_fen is not None and notice.basket_fen < notice.amount_fen:
        raise InvalidInput("basket_fen is the whole purchase: at least amount_fen", code="invalid_basket")
    digest = payload_hash(PAYMENT, None, notice.payment_reference, notice.bank_reference, notice.amount_fen,
                          notice.basket_fen, notice.occurred_at)
    row = await pool.fetchrow(_SUBMIT_PAYMENT, merchant_id, notice.merchant_txn_id, notice.payment_reference,
                              notice.bank_reference, notice.amount_fen, notice.basket_fen, notice.occurred_at,
                              digest, CLOCK_SKEW, _PACKET_LOCK_CLASS)
    assert row is not None
    outcome = row["outcome"]
    if outcome == "created":
        return Stored(Notice(merchant_id, notice.merchant_txn_id, PAYMENT, None, row["campaign_id"],
                             notice.payment_reference, notice.bank_reference, notice.amount_fen, notice.basket_fen,
                             notice.occurred_at.astimezone(UTC), row["received_at"], "pending", 0), replayed=False)
    if outcome == "replay":
        return Stored(await find(pool, merchant_id, notice.merchant_txn_id), replayed=True)
    if outcome == "conflict":
        raise Conflict(f"merchant_txn_id {notice.merchant_txn_id!r} was already used with another payload",
                       code="merchant_txn_id_reused")
    raise _refusal(outcome, row["detail"], row["figure"])


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
