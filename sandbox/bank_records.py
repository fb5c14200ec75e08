"""The sandbox bank's books: the SQLite schema and the functions that read and write them.

Every write here runs inside the writer's transaction (`sandbox.bank_books`), one savepoint per
request, so a refusal spoils only its own request. Reads run on read-only connections.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from datetime import UTC, date, datetime, timedelta

import msgspec

from wallet_adapter.bank_protocol import (
    MAX_BATCH_ITEMS,
    MAX_WALLET_BALANCE_FEN,
    WALLET_ID_PATTERN,
    BatchItemResult,
    BatchStatusResponse,
    CreditRecord,
    CreditRefused,
    CreditRequest,
    CreditResult,
    ReclaimResult,
    RefundRequest,
    RefundResult,
    Restrictions,
    ReturnedTo,
    SettlementLine,
    SettlementTrailer,
    SpendRequest,
    SpendResult,
    StatusItem,
    settlement_csv,
    settlement_date_of,
)
from wallet_adapter.bank_protocol import Books as BooksTotals

DB_FILE = "bank.sqlite3"
MAX_GROUP_COMMIT = 512  # requests committed together in one transaction (one fsync)
MAX_PENDING_WRITES = 10_000  # requests waiting for the writer before new ones get 503
READER_THREADS = 2
SQLITE_CACHE_KIB = 256 * 1024  # per connection; a 300k-credit campaign's books are ~60 MB
SQLITE_MMAP_BYTES = 1 << 30
SETTLEMENT_GRACE = timedelta(minutes=1)  # a day's file is complete only after this much of the next

SCHEMA = """
CREATE TABLE IF NOT EXISTS credits (
    bank_code       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint     BLOB NOT NULL,
    credit_id       TEXT NOT NULL UNIQUE,
    wallet_id       TEXT NOT NULL,
    amount_fen      INTEGER NOT NULL CHECK (amount_fen > 0),
    expires_at      TEXT NOT NULL,
    restrictions    TEXT NOT NULL,
    campaign_id     TEXT NOT NULL,
    packet_id       TEXT NOT NULL,
    credited_at     TEXT NOT NULL,
    spent_fen       INTEGER NOT NULL DEFAULT 0 CHECK (spent_fen >= 0),
    reclaimed_fen   INTEGER NOT NULL DEFAULT 0 CHECK (reclaimed_fen >= 0),
    reclaimed_at    TEXT,
    PRIMARY KEY (bank_code, idempotency_key),
    CHECK (spent_fen + reclaimed_fen <= amount_fen)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS credits_by_packet ON credits (bank_code, campaign_id, packet_id);
CREATE TABLE IF NOT EXISTS spends (
    bank_code         TEXT NOT NULL,
    spend_id          TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    campaign_id       TEXT NOT NULL,
    merchant_id       TEXT NOT NULL,
    merchant_category TEXT,
    amount_fen        INTEGER NOT NULL CHECK (amount_fen > 0),
    settled_at        TEXT NOT NULL,
    settlement_date   TEXT NOT NULL,
    PRIMARY KEY (bank_code, spend_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spends_by_day ON spends (bank_code, settlement_date, settled_at);
CREATE TABLE IF NOT EXISTS refunds (
    bank_code         TEXT NOT NULL,
    refund_id         TEXT NOT NULL,
    spend_id          TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    campaign_id       TEXT NOT NULL,
    merchant_id       TEXT NOT NULL,
    amount_fen        INTEGER NOT NULL CHECK (amount_fen > 0),
    returned_to       TEXT NOT NULL CHECK (returned_to IN ('wallet', 'budget')),
    settled_at        TEXT NOT NULL,
    settlement_date   TEXT NOT NULL,
    PRIMARY KEY (bank_code, refund_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refunds_by_spend ON refunds (bank_code, spend_id);
CREATE INDEX IF NOT EXISTS refunds_by_credit ON refunds (bank_code, idempotency_key);
CREATE INDEX IF NOT EXISTS refunds_by_day ON refunds (bank_code, settlement_date, settled_at);
"""

_SELECT_CREDITS = """SELECT idempotency_key, fingerprint, credit_id, wallet_id, amount_fen,
    credited_at FROM credits WHERE bank_code = ? AND idempotency_key IN ({marks})"""
_INSERT_CREDIT = """INSERT INTO credits (bank_code, idempotency_key, fingerprint, credit_id,
    wallet_id, amount_fen, expires_at, restrictions, campaign_id, packet_id, credited_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_SELECT_RECORD = """SELECT credit_id, wallet_id, amount_fen, expires_at, restrictions, campaign_id,
    packet_id, credited_at, spent_fen, reclaimed_fen, reclaimed_at
    FROM credits WHERE bank_code = ? AND idempotency_key = ?"""
_SELECT_SPEND = """SELECT idempotency_key, merchant_id, merchant_category, amount_fen, settled_at,
    settlement_date FROM spends WHERE bank_code = ? AND spend_id = ?"""
_INSERT_SPEND = """INSERT INTO spends (bank_code, spend_id, idempotency_key, campaign_id,
    merchant_id, merchant_category, amount_fen, settled_at, settlement_date)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_SELECT_SETTLEMENT = """SELECT spend_id, idempotency_key, merchant_id, amount_fen, settled_at,
        'spend', NULL, NULL
    FROM spends WHERE bank_code = ?1 AND settlement_date = ?2
    UNION ALL
    SELECT refund_id, idempotency_key, merchant_id, amount_fen, settled_at, 'refund', spend_id,
        returned_to
    FROM refunds WHERE bank_code = ?1 AND settlement_date = ?2
    ORDER BY 5, 1"""
_SELECT_REFUND = """SELECT spend_id, idempotency_key, merchant_id, amount_fen, returned_to,
    settled_at, settlement_date FROM refunds WHERE bank_code = ? AND refund_id = ?"""
_INSERT_REFUND = """INSERT INTO refunds (bank_code, refund_id, spend_id, idempotency_key,
    campaign_id, merchant_id, amount_fen, returned_to, settled_at, settlement_date)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_REFUNDED = """SELECT coalesce(sum(amount_fen), 0) FROM refunds WHERE bank_code = ? AND spend_id = ?"""
_REFUNDED_TO_BUDGET = """SELECT coalesce(sum(amount_fen), 0) FROM refunds
    WHERE bank_code = ? AND idempotency_key = ? AND returned_to = 'budget'"""
_TOTALS = """SELECT count(*), coalesce(sum(amount_fen), 0), coalesce(sum(spent_fen), 0),
    coalesce(sum(reclaimed_fen), 0)
    FROM credits WHERE bank_code = ?1 AND (?2 IS NULL OR campaign_id = ?2)"""
_DOUBLE_CREDITS = """SELECT count(*) FROM (SELECT 1 FROM credits
    WHERE bank_code = ?1 AND (?2 IS NULL OR campaign_id = ?2)
    GROUP BY campaign_id, packet_id HAVING count(*) > 1)"""
_SPEND_COUNT = """SELECT count(*) FROM spends
    WHERE bank_code = ?1 AND (?2 IS NULL OR campaign_id = ?2)"""
_REFUND_COUNT = """SELECT count(*) FROM refunds
    WHERE bank_code = ?1 AND (?2 IS NULL OR campaign_id = ?2)"""


class Refusal(Exception):
    """A request the bank refuses: an HTTP status and a stable code, answered as a problem."""

    def __init__(self, status: int, code: str, detail: str, *,
                 headers: dict[str, str] | None = None, idempotency_key: str | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.idempotency_key = idempotency_key

    def as_batch_item(self, idempotency_key: str) -> BatchItemResult:
        return BatchItemResult(idempotency_key=idempotency_key, error=CreditRefused(
            idempotency_key=idempotency_key, status=self.status, code=self.code,
            detail=self.detail))


def _ts(moment: datetime) -> str:
    """Fixed-width UTC text, so the stored times sort as they happened."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _from_ts(raw: str) -> datetime:
    return datetime.fromisoformat(raw)


def _fingerprint(request: CreditRequest) -> bytes:
    """What makes two credits with one key "the same payload": every field, canonicalized."""
    restrictions = request.restrictions
    canonical = [request.wallet_id, request.amount_fen, _ts(request.expires_at),
                 sorted(set(restrictions.merchant_categories)), restrictions.region,
                 request.campaign_id, request.packet_id]
    return hashlib.sha256(msgspec.json.encode(canonical)).digest()


def _credit_refusal(request: CreditRequest, now: datetime) -> Refusal | None:
    wallet_id, key = request.wallet_id, request.idempotency_key
    if not WALLET_ID_PATTERN.match(wallet_id) or wallet_id.startswith("INVALID"):
        return Refusal(422, "wallet_not_found", f"no wallet {wallet_id!r}", idempotency_key=key)
    if wallet_id.startswith("FROZEN"):
        return Refusal(422, "wallet_frozen", f"wallet {wallet_id!r} is frozen",
                       idempotency_key=key)
    if request.amount_fen > MAX_WALLET_BALANCE_FEN:
        return Refusal(422, "amount_exceeds_wallet_limit",
                       f"a wallet holds at most {MAX_WALLET_BALANCE_FEN} fen", idempotency_key=key)
    if request.expires_at <= now:
        return Refusal(422, "already_expired", "expires_at is in the past", idempotency_key=key)
    return None


def record_credits(conn: sqlite3.Connection,
                   requests: list[tuple[str, CreditRequest]]) -> list[CreditResult | Refusal]:
    """Apply (bank code, credit) pairs in order; a repeated key answers its first result.

    Set-wise, for the group commit: one lookup per bank and chunk of keys, one executemany.
    """
    now = datetime.now(UTC)
    known: dict[tuple[str, str], tuple[bytes, str, str, int, datetime]] = {}
    keys_by_bank: dict[str, list[str]] = {}
    for bank_code, request in requests:
        keys_by_bank.setdefault(bank_code, []).append(request.idempotency_key)
    for bank_code, keys in keys_by_bank.items():
        for start in range(0, len(keys), MAX_BATCH_ITEMS):
            chunk = keys[start:start + MAX_BATCH_ITEMS]
            rows = conn.execute(_SELECT_CREDITS.format(marks=",".join("?" * len(chunk))),
                                (bank_code, *chunk))
            for key, fingerprint, credit_id, wallet_id, amount_fen, credited_at in rows:
                known[bank_code, key] = (fingerprint, credit_id, wallet_id, amount_fen,
                                         _from_ts(credited_at))
    outcomes: list[CreditResult | Refusal] = []
    inserts: list[tuple[object, ...]] = []
    for bank_code, request in requests:
        key = request.idempotency_key
        fingerprint = _fingerprint(request)
        held = known.get((bank_code, key))
        if held is not None:
            if held[0] != fingerprint:
                outcomes.append(Refusal(409, "idempotency_conflict",
                                        "this idempotency key was used with another payload",
                                        idempotency_key=key))
            else:
                outcomes.append(CreditResult(
                    status="credited", credit_id=held[1], idempotency_key=key, wallet_id=held[2],
                    amount_fen=held[3], credited_at=held[4], duplicate=True))
            continue
        refusal = _credit_refusal(request, now)
        if refusal is not None:
            outcomes.append(refusal)
            continue
        credit_id = f"{bank_code}-{secrets.token_hex(10)}"
        inserts.append((bank_code, key, fingerprint, credit_id, request.wallet_id,
                        request.amount_fen, _ts(request.expires_at),
                        msgspec.json.encode(request.restrictions).decode(),
                        request.campaign_id, request.packet_id, _ts(now)))
        known[bank_code, key] = (fingerprint, credit_id, request.wallet_id, request.amount_fen,
                                 now)
        outcomes.append(CreditResult(status="credited", credit_id=credit_id, idempotency_key=key,
                                     wallet_id=request.wallet_id, amount_fen=request.amount_fen,
                                     credited_at=now, duplicate=False))
    conn.executemany(_INSERT_CREDIT, inserts)
    return outcomes


def batch_item(result: CreditResult) -> BatchItemResult:
    return BatchItemResult(idempotency_key=result.idempotency_key, result=result)


def _record(conn: sqlite3.Connection, bank_code: str, key: str) -> CreditRecord:
    row = conn.execute(_SELECT_RECORD, (bank_code, key)).fetchone()
    if row is None:
        raise Refusal(404, "credit_not_found", "no credit under this idempotency key",
                      idempotency_key=key)
    (credit_id, wallet_id, amount_fen, expires_at, restrictions, campaign_id, packet_id,
     credited_at, spent_fen, reclaimed_fen, reclaimed_at) = row
    return CreditRecord(
        status="reclaimed" if reclaimed_at else "credited", credit_id=credit_id,
        idempotency_key=key, wallet_id=wallet_id, amount_fen=amount_fen,
        expires_at=_from_ts(expires_at),
        restrictions=msgspec.json.decode(restrictions, type=Restrictions),
        campaign_id=campaign_id, packet_id=packet_id, credited_at=_from_ts(credited_at),
        spent_fen=spent_fen, reclaimed_fen=reclaimed_fen,
        balance_fen=amount_fen - spent_fen - reclaimed_fen,
        reclaimed_at=_from_ts(reclaimed_at) if reclaimed_at else None)


def credit_record(conn: sqlite3.Connection, bank_code: str, key: str) -> CreditRecord:
    return _record(conn, bank_code, key)


def credit_records(conn: sqlite3.Connection, bank_code: str, keys: list[str]) -> BatchStatusResponse:
    items = []
    for key in keys:
        try:
            items.append(StatusItem(idempotency_key=key, record=_record(conn, bank_code, key)))
        except Refusal:
            items.append(StatusItem(idempotency_key=key))
    return BatchStatusResponse(items=items)


def record_reclaim(conn: sqlite3.Connection, bank_code: str, key: str) -> ReclaimResult:
    """Take back the unspent balance once; a repeat answers the same figures, whatever was
    refunded to the city since."""
    record = _record(conn, bank_code, key)
    reclaimed_at = record.reclaimed_at
    (refunded_since,) = conn.execute(_REFUNDED_TO_BUDGET, (bank_code, key)).fetchone()
    reclaimed_fen = record.reclaimed_fen - refunded_since
    spent_fen = record.spent_fen + refunded_since
    if reclaimed_at is None:
        reclaimed_at = datetime.now(UTC)
        reclaimed_fen = record.balance_fen
        conn.execute("""UPDATE credits SET reclaimed_fen = ?, reclaimed_at = ?
                        WHERE bank_code = ? AND idempotency_key = ?""",
                     (reclaimed_fen, _ts(reclaimed_at), bank_code, key))
    return ReclaimResult(status="reclaimed", idempotency_key=key, credit_id=record.credit_id,
                         reclaimed_fen=reclaimed_fen, spent_fen=spent_fen,
                         reclaimed_at=reclaimed_at)


def record_spend(conn: sqlite3.Connection, bank_code: str, key: str,
          request: SpendRequest) -> SpendResult:
    """A citizen pays a merchant from the packet; idempotent by spend id."""
    record = _record(conn, bank_code, key)
    if conn.execute(_SELECT_REFUND, (bank_code, request.spend_id)).fetchone() is not None:
        raise Refusal(409, "idempotency_conflict", "this spend id is a refund's")
    row = conn.execute(_SELECT_SPEND, (bank_code, request.spend_id)).fetchone()
    if row is not None:
        if tuple(row[:4]) != (key, request.merchant_id, request.merchant_category,
                              request.amount_fen):
            raise Refusal(409, "idempotency_conflict", "this spend id was used for another spend")
        return SpendResult(spend_id=request.spend_id, idempotency_key=key,
                           merchant_id=request.merchant_id, amount_fen=request.amount_fen,
                           settled_at=_from_ts(row[4]), settlement_date=date.fromisoformat(row[5]),
                           balance_fen=record.balance_fen, duplicate=True)
    now = datetime.now(UTC)
    categories = record.restrictions.merchant_categories
    if record.reclaimed_at is not None:
        raise Refusal(422, "credit_reclaimed", "the packet's balance was reclaimed")
    if record.expires_at <= now:
        raise Refusal(422, "credit_expired", "the packet has expired")
    if categories and request.merchant_category not in categories:
        raise Refusal(422, "merchant_not_eligible", "the packet cannot be spent in this category")
    if request.amount_fen > record.balance_fen:
        raise Refusal(422, "insufficient_balance",
                      f"the packet holds {record.balance_fen} fen")
    day = settlement_date_of(now)
    conn.execute(_INSERT_SPEND, (bank_code, request.spend_id, key, record.campaign_id,
                                 request.merchant_id, request.merchant_category,
                                 request.amount_fen, _ts(now), day.isoformat()))
    conn.execute("""UPDATE credits SET spent_fen = spent_fen + ?
                    WHERE bank_code = ? AND idempotency_key = ?""",
                 (request.amount_fen, bank_code, key))
    return SpendResult(spend_id=request.spend_id, idempotency_key=key,
                       merchant_id=request.merchant_id, amount_fen=request.amount_fen,
                       settled_at=now, settlement_date=day,
                       balance_fen=record.balance_fen - request.amount_fen, duplicate=False)


def record_refund(conn: sqlite3.Connection, bank_code: str, key: str,
                  request: RefundRequest) -> RefundResult:
    """A merchant gives back (part of) the packet's share of a spend; idempotent by refund id.

    Live packets get the money back; once the balance was reclaimed it goes to the city instead,
    counted with what the reclaim took.
    """
    record = _record(conn, bank_code, key)
    row = conn.execute(_SELECT_REFUND, (bank_code, request.refund_id)).fetchone()
    if row is not None:
        if tuple(row[:4]) != (request.spend_id, key, request.merchant_id, request.amount_fen):
            raise Refusal(409, "idempotency_conflict", "this refund id was used for another refund")
        return RefundResult(refund_id=request.refund_id, spend_id=request.spend_id,
                            idempotency_key=key, merchant_id=request.merchant_id,
                            amount_fen=request.amount_fen, returned_to=row[4],
                            settled_at=_from_ts(row[5]), settlement_date=date.fromisoformat(row[6]),
                            balance_fen=record.balance_fen, duplicate=True)
    if conn.execute(_SELECT_SPEND, (bank_code, request.refund_id)).fetchone() is not None:
        raise Refusal(409, "idempotency_conflict", "this refund id is a spend's")
    spend = conn.execute(_SELECT_SPEND, (bank_code, request.spend_id)).fetchone()
    if spend is None or spend[0] != key:
        raise Refusal(404, "spend_not_found", "this packet made no spend under this spend id")
    if spend[1] != request.merchant_id:
        raise Refusal(422, "refund_wrong_merchant", "the spend was paid to another merchant")
    (refunded,) = conn.execute(_REFUNDED, (bank_code, request.spend_id)).fetchone()
    refundable = spend[3] - refunded
    if request.amount_fen > refundable:
        raise Refusal(422, "refund_exceeds_spend", f"{refundable} fen of the spend is left to refund")
    now = datetime.now(UTC)
    returned_to: ReturnedTo = "budget" if record.reclaimed_at is not None else "wallet"
    day = settlement_date_of(now)
    conn.execute(_INSERT_REFUND, (bank_code, request.refund_id, request.spend_id, key,
                                  record.campaign_id, request.merchant_id, request.amount_fen,
                                  returned_to, _ts(now), day.isoformat()))
    conn.execute("""UPDATE credits SET spent_fen = spent_fen - ?1,
                        reclaimed_fen = reclaimed_fen + CASE WHEN ?2 = 'budget' THEN ?1 ELSE 0 END
                    WHERE bank_code = ?3 AND idempotency_key = ?4""",
                 (request.amount_fen, returned_to, bank_code, key))
    balance = record.balance_fen + (request.amount_fen if returned_to == "wallet" else 0)
    return RefundResult(refund_id=request.refund_id, spend_id=request.spend_id, idempotency_key=key,
                        merchant_id=request.merchant_id, amount_fen=request.amount_fen,
                        returned_to=returned_to, settled_at=now, settlement_date=day,
                        balance_fen=balance, duplicate=False)


_ENCODER = msgspec.json.Encoder()


def settlement_file(conn: sqlite3.Connection, bank_code: str, day: date, as_csv: bool = False) -> bytes:
    """The day's settlement lines, ending with a trailer that says if it is complete: NDJSON, or
    the same records as CSV."""
    now = datetime.now(UTC)
    if day > settlement_date_of(now):
        raise Refusal(404, "settlement_not_ready", f"{day} has not started yet")
    lines = [SettlementLine(spend_id=spend_id, idempotency_key=key, merchant_id=merchant_id,
                            amount_fen=amount_fen, settled_at=_from_ts(settled_at), kind=kind,
                            refund_of=refund_of, returned_to=returned_to)
             for spend_id, key, merchant_id, amount_fen, settled_at, kind, refund_of, returned_to
             in conn.execute(_SELECT_SETTLEMENT, (bank_code, day.isoformat()))]
    trailer = SettlementTrailer(bank_code=bank_code, settlement_date=day,
                                complete=day < settlement_date_of(now - SETTLEMENT_GRACE),
                                line_count=len(lines), total_fen=sum(x.amount_fen for x in lines))
    if as_csv:
        return settlement_csv(lines, trailer)
    return b"".join(_ENCODER.encode(record) + b"\n" for record in [*lines, trailer])


def totals(conn: sqlite3.Connection, bank_code: str, campaign_id: str | None) -> BooksTotals:
    credits, credited_fen, spent_fen, reclaimed_fen = conn.execute(
        _TOTALS, (bank_code, campaign_id)).fetchone()
    (double_credits,) = conn.execute(_DOUBLE_CREDITS, (bank_code, campaign_id)).fetchone()
    (spends,) = conn.execute(_SPEND_COUNT, (bank_code, campaign_id)).fetchone()
    (refunds,) = conn.execute(_REFUND_COUNT, (bank_code, campaign_id)).fetchone()
    return BooksTotals(bank_code=bank_code, campaign_id=campaign_id, credits=credits,
                       credited_fen=credited_fen, spent_fen=spent_fen,
                       reclaimed_fen=reclaimed_fen,
                       outstanding_fen=credited_fen - spent_fen - reclaimed_fen, spends=spends,
                       double_credits=double_credits, refunds=refunds)
