"""The operator-bank wallet protocol: the wire types both our client and the sandbox bank speak.

An operator bank credits e-CNY "red packets" into citizens' wallets and reports what the
citizens spent. Our issuance workers are its clients (`wallet_adapter.provider`); the sandbox
bank (`sandbox.bank`, outside the product) is a stand-in server for the outside banks. This module is
the one definition of the protocol, so both sides import the same structs.

Transport
    JSON over HTTP/1.1, UTF-8, encoded and decoded with msgspec. Money is integer fen. Times are
    RFC 3339 with an offset (the bank writes UTC, `Z`). One server may host several banks, each
    under its own prefix `/banks/{bank_code}/v1/...` (codes such as `ICBC`, `CCB`, `BOC`).

Authentication
    Every request carries `Authorization: Bearer <api key>` (one key per bank relationship;
    the sandbox accepts the key it was started with, `sandbox-api-key` in development). A missing or
    wrong key is 401 `unauthenticated`.

Signed responses
    Every response body the bank sends (successes, problems, settlement files, health) is signed:
    `X-Bank-Signature: <hex Ed25519 signature over the exact body bytes>` and
    `X-Bank-Key-Id: <first 16 hex of SHA-256(raw 32-byte public key)>`. Clients pin the bank's
    public key and refuse any body whose signature does not verify. The signature covers only the
    body, so every body echoes what it answers (the idempotency key, the settlement date, the
    bank code): a signed body replayed for another request is detected by comparing those.
    The sandbox publishes its public key at `GET /keys` as `{key_id: public_key_hex}`.

Errors
    RFC 9457 problem details (`application/problem+json`) with a stable `code`. Permanent
    refusals of a credit are 409 (`idempotency_conflict`) and 422 (`wallet_not_found`,
    `wallet_frozen`, `amount_exceeds_wallet_limit`, `already_expired`), and their problem
    bodies carry the credit's `idempotency_key` (so a replayed refusal cannot fail another
    packet); a malformed request is
    400 `invalid_request`; an unknown bank is 404 `bank_not_found`; 429 `rate_limited` carries
    `Retry-After` (whole seconds) and means the request was not processed; 503 `unavailable`
    and every other 5xx, timeout or dropped connection leave the outcome unknown to the client.

Endpoints (under `/banks/{bank_code}/v1`)
    `POST /credits` body `CreditRequest` -> 200 `CreditResult`. Idempotent by
        `idempotency_key`: the same key with the same payload returns the original result with
        `duplicate: true` and never credits twice; the same key with another payload is 409.
        The payload is compared on every field (merchant categories as a set, `expires_at` as
        an instant). Wallet ids match `^[A-Za-z0-9-]{1,64}$`; any other id is 422
        `wallet_not_found`. The sandbox refuses ids starting `INVALID` (422 `wallet_not_found`)
        and `FROZEN` (422 `wallet_frozen`).
    `POST /credits:batch` body `BatchCreditRequest` (1..500 items) -> 200 `BatchCreditResponse`,
        one `BatchItemResult` per item in request order, each either a `result` or an `error`
        (the refusal a single credit would have received). Items are applied in order in one
        durable transaction; the whole call is as idempotent as its items.
    `GET /credits/{idempotency_key}` -> 200 `CreditRecord`, or 404 `credit_not_found` (whose
        problem body carries the `idempotency_key`): the credit never happened, so sending it
        is safe. This is how a client resolves an ambiguous outcome.
    `POST /credits/{idempotency_key}/reclaim` (no body) -> 200 `ReclaimResult`: takes back the
        unspent balance; idempotent (a repeat returns the same figures); later spends are 422
        `credit_reclaimed`.
    `POST /credits/{idempotency_key}/spend` body `SpendRequest` -> 200 `SpendResult`. Sandbox
        helper simulating a citizen paying a merchant. Idempotent by `spend_id` (another payload
        under a used `spend_id` is 409); 422 `insufficient_balance`, `credit_reclaimed`,
        `credit_expired`, `merchant_not_eligible` (category outside the restrictions).
    `POST /credits/{idempotency_key}/refund` body `RefundRequest` -> 200 `RefundResult`. A
        merchant refunds (part of) the packet's share of a spend: `amount_fen` at most the
        spend's amount minus its earlier refunds (422 `refund_exceeds_spend`), by the spend's own
        merchant (422 `refund_wrong_merchant`; 404 `spend_not_found` for a spend of another
        packet or none). While the packet is live the money goes back to the wallet
        (`returned_to: "wallet"`); once its balance was reclaimed it goes back to the city
        (`returned_to: "budget"`, counted in the credit's `reclaimed_fen`). Idempotent by
        `refund_id`, which shares the namespace of spend ids (another payload is 409).
    `GET /settlements/{YYYY-MM-DD}` -> 200 `application/x-ndjson`: the spends settled that day
        in the bank's settlement time zone (UTC+08:00), one JSON object per line, each tagged
        by `type`: zero or more `{"type":"line", spend_id, idempotency_key, merchant_id,
        amount_fen, settled_at}` ordered by (settled_at, spend_id), then exactly one
        `{"type":"trailer", bank_code, settlement_date, complete, line_count, total_fen}`.
        A refund's line carries its `refund_id` as `spend_id` and adds `"kind":"refund"`,
        `refund_of` (the spend it refunds) and `returned_to` (`wallet` or `budget`); a spend's
        line leaves those out. `total_fen` is the sum of every line's (positive) amount.
        `complete` is false until one minute into the next day (until then the file may still
        grow); a date after the bank's today is 404 `settlement_not_ready`. The whole file is
        signed; a reader checks `line_count` and `total_fen` against the lines it got.
        With `?format=csv`: the same records as `text/csv`, the form banks hand files over in:
        the header `spend_id,payment_reference,merchant_id,amount_fen,settled_at`, one line per
        spend (settled_at in UTC+08:00), then `#trailer,BANK,YYYY-MM-DD,true|false,COUNT,TOTAL`.
        A day with refunds adds the columns `kind,refund_of,returned_to` to the header and to
        every line (`spend,,` on a spend's).
    `GET /books[?campaign_id=...]` -> 200 `Books`: the bank's own totals. `double_credits`
        counts (campaign_id, packet_id) pairs credited under more than one idempotency key:
        it stays 0 as long as callers derive one key per packet.

Sandbox-only endpoints (outside any bank prefix)
    `GET /health`, `GET /keys`, `GET|POST /admin/knobs` (fault knobs), `GET /admin/stats`.
    See `sandbox.bank`.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Literal

import msgspec

from kernel import wallet_rule

SIGNATURE_HEADER = "X-Bank-Signature"
KEY_ID_HEADER = "X-Bank-Key-Id"
PROBLEM_MEDIA_TYPE = "application/problem+json"
NDJSON_MEDIA_TYPE = "application/x-ndjson"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
SETTLEMENT_CSV_HEADER = ("spend_id", "payment_reference", "merchant_id", "amount_fen", "settled_at")
SETTLEMENT_CSV_REFUND_COLUMNS = ("kind", "refund_of", "returned_to")
SETTLEMENT_CSV_TRAILER = "#trailer"

MAX_BATCH_ITEMS = 500
MAX_WALLET_BALANCE_FEN = 1_000_000  # ¥10,000: the balance cap of the smallest e-CNY wallet class
SETTLEMENT_TIMEZONE = timezone(timedelta(hours=8), "CST")
# What a bank takes as a bank code and a wallet id: the rule we apply to citizens' wallets too.
WALLET_ID_PATTERN = wallet_rule.WALLET_ID_PATTERN
BANK_CODE_PATTERN = wallet_rule.BANK_CODE_PATTERN
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
SPEND_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"

IdempotencyKey = Annotated[str, msgspec.Meta(pattern=IDEMPOTENCY_KEY_PATTERN)]
PositiveFen = Annotated[int, msgspec.Meta(gt=0, le=2**53)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]

_IDEMPOTENCY_DOMAIN = b"stimulus/wallet-credit/v1"


def idempotency_key_for(campaign_id: str, packet_id: str) -> str:
    """The one idempotency key a packet's credit may ever use, at every bank and on every retry.

    Length-prefixed encoding keeps ("ab", "c") and ("a", "bc") apart; 128 bits of SHA-256 keep
    keys of different packets apart.
    """
    digest = hashlib.sha256(_IDEMPOTENCY_DOMAIN)
    for part in (campaign_id, packet_id):
        raw = part.encode()
        digest.update(len(raw).to_bytes(4, "big"))
        digest.update(raw)
    return "pkt-" + digest.hexdigest()[:32]


def settlement_date_of(moment: datetime) -> date:
    """The settlement day a moment falls in, in the banks' time zone."""
    return moment.astimezone(SETTLEMENT_TIMEZONE).date()


class Restrictions(msgspec.Struct, frozen=True, kw_only=True):
    """Where a packet may be spent: merchant categories (empty: any) and a region (None: any)."""

    merchant_categories: tuple[ShortText, ...] = ()
    region: ShortText | None = None


class CreditRequest(msgspec.Struct, frozen=True, kw_only=True):
    idempotency_key: IdempotencyKey
    wallet_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    amount_fen: PositiveFen
    expires_at: AwareDatetime
    restrictions: Restrictions = Restrictions()
    campaign_id: ShortText
    packet_id: ShortText


class CreditResult(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["credited"]
    credit_id: str
    idempotency_key: str
    wallet_id: str
    amount_fen: int
    credited_at: datetime
    duplicate: bool


class CreditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A credit as the bank holds it now (the answer to a status query)."""

    status: Literal["credited", "reclaimed"]
    credit_id: str
    idempotency_key: str
    wallet_id: str
    amount_fen: int
    expires_at: datetime
    restrictions: Restrictions
    campaign_id: str
    packet_id: str
    credited_at: datetime
    spent_fen: int
    reclaimed_fen: int
    balance_fen: int
    reclaimed_at: datetime | None = None


class BatchCreditRequest(msgspec.Struct, frozen=True, kw_only=True):
    items: Annotated[list[CreditRequest], msgspec.Meta(min_length=1, max_length=MAX_BATCH_ITEMS)]


class CreditRefused(msgspec.Struct, frozen=True, kw_only=True):
    """A batch item the bank refused, with the status and code a single credit would have got."""

    idempotency_key: str
    status: int
    code: str
    detail: str


class BatchItemResult(msgspec.Struct, frozen=True, kw_only=True):
    idempotency_key: str
    result: CreditResult | None = None
    error: CreditRefused | None = None


class BatchCreditResponse(msgspec.Struct, frozen=True, kw_only=True):
    results: list[BatchItemResult]


class BatchStatusRequest(msgspec.Struct, frozen=True, kw_only=True):
    idempotency_keys: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_BATCH_ITEMS)]


class StatusItem(msgspec.Struct, frozen=True, kw_only=True):
    """One key of a batch status query: its credit, or null when the bank never made it."""

    idempotency_key: str
    record: CreditRecord | None = None


class BatchStatusResponse(msgspec.Struct, frozen=True, kw_only=True):
    items: list[StatusItem]


class ReclaimResult(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["reclaimed"]
    idempotency_key: str
    credit_id: str
    reclaimed_fen: int
    spent_fen: int
    reclaimed_at: datetime


class SpendRequest(msgspec.Struct, frozen=True, kw_only=True):
    spend_id: Annotated[str, msgspec.Meta(pattern=SPEND_ID_PATTERN)]
    amount_fen: PositiveFen
    merchant_id: ShortText
    merchant_category: ShortText | None = None


class SpendResult(msgspec.Struct, frozen=True, kw_only=True):
    spend_id: str
    idempotency_key: str
    merchant_id: str
    amount_fen: int
    settled_at: datetime
    settlement_date: date
    balance_fen: int
    duplicate: bool


class RefundRequest(msgspec.Struct, frozen=True, kw_only=True):
    refund_id: Annotated[str, msgspec.Meta(pattern=SPEND_ID_PATTERN)]
    spend_id: Annotated[str, msgspec.Meta(pattern=SPEND_ID_PATTERN)]
    amount_fen: PositiveFen
    merchant_id: ShortText


ReturnedTo = Literal["wallet", "budget"]
LineKind = Literal["spend", "refund"]


class RefundResult(msgspec.Struct, frozen=True, kw_only=True):
    refund_id: str
    spend_id: str
    idempotency_key: str
    merchant_id: str
    amount_fen: int
    returned_to: ReturnedTo
    settled_at: datetime
    settlement_date: date
    balance_fen: int
    duplicate: bool


class SettlementLine(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="line",
                     omit_defaults=True):
    spend_id: str
    idempotency_key: str
    merchant_id: str
    amount_fen: int
    settled_at: datetime
    kind: LineKind = "spend"
    refund_of: str | None = None
    returned_to: ReturnedTo | None = None


class SettlementTrailer(msgspec.Struct, frozen=True, kw_only=True, tag_field="type",
                        tag="trailer"):
    bank_code: str
    settlement_date: date
    complete: bool
    line_count: int
    total_fen: int


class SettlementFile(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed, checked settlement file (client side): the lines and what the trailer said."""

    bank_code: str
    settlement_date: date
    complete: bool
    lines: tuple[SettlementLine, ...]
    total_fen: int


class Books(msgspec.Struct, frozen=True, kw_only=True):
    bank_code: str
    campaign_id: str | None
    credits: int
    credited_fen: int
    spent_fen: int
    reclaimed_fen: int
    outstanding_fen: int
    spends: int
    double_credits: int
    refunds: int = 0


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 9457 problem details as the bank sends them."""

    type: str = "about:blank"
    title: str = ""
    status: int = 0
    detail: str = ""
    code: str = ""
    idempotency_key: str | None = None


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    banks: list[str]
    key_id: str


SettlementRecord = SettlementLine | SettlementTrailer


def settlement_csv(lines: Sequence[SettlementLine], trailer: SettlementTrailer) -> bytes:
    """A settlement file as CSV (module docstring): the same records as the NDJSON form."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    with_refunds = any(line.kind == "refund" for line in lines)
    writer.writerow(SETTLEMENT_CSV_HEADER + (SETTLEMENT_CSV_REFUND_COLUMNS if with_refunds else ()))
    for line in lines:
        row: list[object] = [line.spend_id, line.idempotency_key, line.merchant_id, line.amount_fen,
                             line.settled_at.astimezone(SETTLEMENT_TIMEZONE).isoformat(timespec="microseconds")]
        if with_refunds:
            row += [line.kind, line.refund_of or "", line.returned_to or ""]
        writer.writerow(row)
    writer.writerow([SETTLEMENT_CSV_TRAILER, trailer.bank_code, trailer.settlement_date.isoformat(),
                     "true" if trailer.complete else "false", trailer.line_count, trailer.total_fen])
    return out.getvalue().encode()
