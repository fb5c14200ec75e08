"""The sandbox operator bank: a real HTTP server standing in for the outside banks.

It speaks `wallet_adapter.bank_protocol` for several bank codes in one process, keeps its own
durable books in SQLite (one WAL file in its data directory; it is an outside party and never
touches our PostgreSQL), signs every response body with its own Ed25519 key, and has fault knobs
so tests and demos can make it slow, flaky, ambiguous, down or rate limited.

Durability and throughput: every write (credit, batch, spend, reclaim) goes through one writer
thread that drains whatever requests are waiting (up to `MAX_GROUP_COMMIT`), applies them in
order inside one transaction (one savepoint each, so one refusal or bug spoils only its own
request) and commits with `synchronous=FULL` before any of them is answered: one fsync per group
instead of one per credit. Reads run on a small pool of read-only connections.

Fault knobs (per bank; `POST /admin/knobs` changes them at run time, `{"reset": true}` restores
the start-up values):

* `latency_ms`, `latency_sigma`: each bank request waits a log-normal delay with that median
  (capped at 20x the median).
* `error_rate`: that share of bank requests get 503 `unavailable` before anything is done.
* `commit_timeout_rate`, `hang_ms`: that share of writes commit, then hold the response for
  `hang_ms`, so a client with a shorter timeout sees a timeout after the effect happened.
* `duplicate_rate`: HTTP cannot deliver one response twice, so a "duplicate delivery" here is
  the other half of that failure: when a request repeats an already committed credit, that share
  of the answers come back as a fresh-looking 200 with `duplicate: false` (same credit id).
  A client must not rely on the flag to decide what happened.
* `rate_limit`: above that many requests per second per bank, 429 with `Retry-After`.
* `outage_s`, `outage_mode`: for that long every bank endpoint of the bank answers 503
  (`unavailable`) or, in `blackhole` mode, holds each request for `hang_ms` and then answers 503.
  A refused connection is what a killed bank gives; tests get it by killing the process.

`GET /admin/stats` counts what the faults did, per bank. Admin endpoints take the same API key.
Run it as `python -m wallet_adapter.sandbox_bank --host 127.0.0.1 --port 8100 --data-dir DIR`
(or `stimulus sandbox-bank ...`); see `wallet_adapter.cli` for every option.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import queue
import random
import secrets
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromHeader, FromPath, FromQuery, RawBody

from stimulus.signing import SigningKey
from wallet_adapter.bank_protocol import (
    BANK_CODE_PATTERN,
    KEY_ID_HEADER,
    MAX_BATCH_ITEMS,
    MAX_WALLET_BALANCE_FEN,
    NDJSON_MEDIA_TYPE,
    PROBLEM_MEDIA_TYPE,
    SANDBOX_API_KEY,
    SIGNATURE_HEADER,
    WALLET_ID_PATTERN,
    BatchCreditRequest,
    BatchCreditResponse,
    BatchItemResult,
    CreditRecord,
    CreditRefused,
    CreditRequest,
    CreditResult,
    Health,
    ReclaimResult,
    Restrictions,
    SettlementLine,
    SettlementTrailer,
    SpendRequest,
    SpendResult,
    settlement_date_of,
)
from wallet_adapter.bank_protocol import Books as BooksTotals

log = logging.getLogger("wallet_adapter.sandbox_bank")

T = TypeVar("T")

MAX_BODY_BYTES = 1 << 20  # a full batch of 500 credits is ~250 KB
SEED_FILE = "bank_ed25519.seed"
PREFIX = "/banks/{bank_code:str}/v1"
Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


# -- the books: durable storage in SQLite with a group-committing writer ------------------------

DB_FILE = "bank.sqlite3"
MAX_GROUP_COMMIT = 512  # requests committed together in one transaction (one fsync)
MAX_PENDING_WRITES = 10_000  # requests waiting for the writer before new ones get 503
READER_THREADS = 2
SETTLEMENT_GRACE = timedelta(minutes=1)  # a day's file is complete only after this much of the next
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_SCHEMA = """
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
"""

_SELECT_CREDIT = """SELECT fingerprint, credit_id, wallet_id, amount_fen, credited_at
    FROM credits WHERE bank_code = ? AND idempotency_key = ?"""
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
_SELECT_SETTLEMENT = """SELECT spend_id, idempotency_key, merchant_id, amount_fen, settled_at
    FROM spends WHERE bank_code = ? AND settlement_date = ? ORDER BY settled_at, spend_id"""
_TOTALS = """SELECT count(*), coalesce(sum(amount_fen), 0), coalesce(sum(spent_fen), 0),
    coalesce(sum(reclaimed_fen), 0)
    FROM credits WHERE bank_code = ?1 AND (?2 IS NULL OR campaign_id = ?2)"""
_DOUBLE_CREDITS = """SELECT count(*) FROM (SELECT 1 FROM credits
    WHERE bank_code = ?1 AND (?2 IS NULL OR campaign_id = ?2)
    GROUP BY campaign_id, packet_id HAVING count(*) > 1)"""
_SPEND_COUNT = """SELECT count(*) FROM spends
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
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


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


def record_credits(conn: sqlite3.Connection, bank_code: str,
           items: list[CreditRequest]) -> list[CreditResult | Refusal]:
    """Apply credits in order; a repeated key answers its first result, never a second credit."""
    now = datetime.now(UTC)
    outcomes: list[CreditResult | Refusal] = []
    for request in items:
        key = request.idempotency_key
        fingerprint = _fingerprint(request)
        row = conn.execute(_SELECT_CREDIT, (bank_code, key)).fetchone()
        if row is not None:
            if row[0] != fingerprint:
                outcomes.append(Refusal(409, "idempotency_conflict",
                                        "this idempotency key was used with another payload",
                                        idempotency_key=key))
            else:
                outcomes.append(CreditResult(
                    status="credited", credit_id=row[1], idempotency_key=key, wallet_id=row[2],
                    amount_fen=row[3], credited_at=_from_ts(row[4]), duplicate=True))
            continue
        refusal = _credit_refusal(request, now)
        if refusal is not None:
            outcomes.append(refusal)
            continue
        credit_id = f"{bank_code}-{secrets.token_hex(10)}"
        conn.execute(_INSERT_CREDIT, (
            bank_code, key, fingerprint, credit_id, request.wallet_id, request.amount_fen,
            _ts(request.expires_at), msgspec.json.encode(request.restrictions).decode(),
            request.campaign_id, request.packet_id, _ts(now)))
        outcomes.append(CreditResult(status="credited", credit_id=credit_id, idempotency_key=key,
                                     wallet_id=request.wallet_id, amount_fen=request.amount_fen,
                                     credited_at=now, duplicate=False))
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


def record_reclaim(conn: sqlite3.Connection, bank_code: str, key: str) -> ReclaimResult:
    """Take back the unspent balance once; a repeat answers the same figures."""
    record = _record(conn, bank_code, key)
    reclaimed_at = record.reclaimed_at
    reclaimed_fen = record.reclaimed_fen
    if reclaimed_at is None:
        reclaimed_at = datetime.now(UTC)
        reclaimed_fen = record.balance_fen
        conn.execute("""UPDATE credits SET reclaimed_fen = ?, reclaimed_at = ?
                        WHERE bank_code = ? AND idempotency_key = ?""",
                     (reclaimed_fen, _ts(reclaimed_at), bank_code, key))
    return ReclaimResult(status="reclaimed", idempotency_key=key, credit_id=record.credit_id,
                         reclaimed_fen=reclaimed_fen, spent_fen=record.spent_fen,
                         reclaimed_at=reclaimed_at)


def record_spend(conn: sqlite3.Connection, bank_code: str, key: str,
          request: SpendRequest) -> SpendResult:
    """A citizen pays a merchant from the packet; idempotent by spend id."""
    record = _record(conn, bank_code, key)
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


_ENCODER = msgspec.json.Encoder()


def settlement_file(conn: sqlite3.Connection, bank_code: str, day: date) -> bytes:
    """The day's settlement lines as NDJSON, ending with a trailer that says if it is complete."""
    now = datetime.now(UTC)
    if day > settlement_date_of(now):
        raise Refusal(404, "settlement_not_ready", f"{day} has not started yet")
    lines: list[bytes] = []
    total_fen = 0
    for spend_id, key, merchant_id, amount_fen, settled_at in conn.execute(
            _SELECT_SETTLEMENT, (bank_code, day.isoformat())):
        total_fen += amount_fen
        lines.append(_ENCODER.encode(SettlementLine(
            spend_id=spend_id, idempotency_key=key, merchant_id=merchant_id,
            amount_fen=amount_fen, settled_at=_from_ts(settled_at))))
    trailer = SettlementTrailer(bank_code=bank_code, settlement_date=day,
                                complete=day < settlement_date_of(now - SETTLEMENT_GRACE),
                                line_count=len(lines), total_fen=total_fen)
    lines.append(_ENCODER.encode(trailer))
    return b"\n".join(lines) + b"\n"


def totals(conn: sqlite3.Connection, bank_code: str, campaign_id: str | None) -> BooksTotals:
    credits, credited_fen, spent_fen, reclaimed_fen = conn.execute(
        _TOTALS, (bank_code, campaign_id)).fetchone()
    (double_credits,) = conn.execute(_DOUBLE_CREDITS, (bank_code, campaign_id)).fetchone()
    (spends,) = conn.execute(_SPEND_COUNT, (bank_code, campaign_id)).fetchone()
    return BooksTotals(bank_code=bank_code, campaign_id=campaign_id, credits=credits,
                       credited_fen=credited_fen, spent_fen=spent_fen,
                       reclaimed_fen=reclaimed_fen,
                       outstanding_fen=credited_fen - spent_fen - reclaimed_fen, spends=spends,
                       double_credits=double_credits)


@dataclass(slots=True)
class _Job:
    apply: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class Books:
    """The bank's SQLite file: one group-committing writer thread, a few reader threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._pending = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connect(self, *, read_only: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=30)
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        else:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")  # WAL + NORMAL may lose the last commits
        return conn

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect(read_only=False)
        conn.executescript(_SCHEMA)
        self._loop = loop
        self._writer = threading.Thread(target=self._write_loop, args=(conn,),
                                        name="bank-writer", daemon=True)
        self._writer.start()
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="bank-reader")

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        with self._lock:
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()

    async def write(self, apply: Callable[[sqlite3.Connection], T]) -> T:
        """Run `apply` in the writer's next transaction; return once that has committed."""
        if self._pending >= MAX_PENDING_WRITES:
            raise Refusal(503, "unavailable", "too many writes waiting; nothing was done")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending += 1
        self._queue.put(_Job(apply, future))
        return cast(T, await future)

    async def read(self, fetch: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fetch` on a read-only connection, in one snapshot."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._read, fetch)

    def _read(self, fetch: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(read_only=True)
            self._local.conn = conn
            with self._lock:
                self._reader_connections.append(conn)
        conn.execute("BEGIN")
        try:
            return fetch(conn)
        finally:
            conn.execute("COMMIT")

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        assert self._loop is not None
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                group = [job]
                stopping = False
                while len(group) < MAX_GROUP_COMMIT:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stopping = True
                        break
                    group.append(job)
                self._loop.call_soon_threadsafe(self._settle, self._commit(conn, group))
                if stopping:
                    return
        finally:
            conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, group: list[_Job]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in group:
                conn.execute("SAVEPOINT job")
                try:
                    outcomes.append((job.future, job.apply(conn), None))
                except Exception as exc:  # a refusal, or a bug: it spoils this request only
                    conn.execute("ROLLBACK TO job")
                    outcomes.append((job.future, None, exc))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except sqlite3.Error:
            log.exception("the group commit of %d requests failed", len(group))
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            failure = Refusal(503, "unavailable", "the bank could not store the request")
            return [(job.future, None, failure) for job in group]
        return outcomes

    def _settle(self, outcomes: list[_Outcome]) -> None:
        self._pending -= len(outcomes)
        for future, value, error in outcomes:
            if future.done():  # the caller went away; the effect stands, as at a real bank
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)


# -- the bank: knobs, admission, signing ---------------------------------------------------


class Knobs(msgspec.Struct, frozen=True, kw_only=True):
    latency_ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)] = 0.0
    latency_sigma: Annotated[float, msgspec.Meta(ge=0, le=3)] = 0.5
    error_rate: Rate = 0.0
    commit_timeout_rate: Rate = 0.0
    hang_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 30_000
    duplicate_rate: Rate = 0.0
    rate_limit: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0


class KnobsUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A partial change: absent fields keep their values; `bank_code` None means every bank."""

    bank_code: str | None = None
    reset: bool = False
    latency_ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)] | None = None
    latency_sigma: Annotated[float, msgspec.Meta(ge=0, le=3)] | None = None
    error_rate: Rate | None = None
    commit_timeout_rate: Rate | None = None
    hang_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] | None = None
    duplicate_rate: Rate | None = None
    rate_limit: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    outage_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] | None = None
    outage_mode: Literal["unavailable", "blackhole"] | None = None


class KnobsView(msgspec.Struct, frozen=True, kw_only=True):
    knobs: Knobs
    outage_remaining_s: float
    outage_mode: str


@dataclass(frozen=True)
class SandboxConfig:
    data_dir: Path
    banks: tuple[str, ...] = ("ICBC", "CCB", "BOC")
    api_key: str = SANDBOX_API_KEY
    knobs: Knobs = field(default_factory=Knobs)
    seed: int | None = None


@dataclass
class _Bank:
    """One bank's run-time state: its knobs, outage window, rate-limit bucket and counters."""

    code: str
    knobs: Knobs
    outage_until: float = 0.0
    outage_mode: str = "unavailable"
    tokens: float = 0.0
    refilled_at: float = 0.0
    stats: Counter[str] = field(default_factory=Counter)

    def take_token(self, now: float) -> float:
        """Take a request token; 0.0 if granted, else the seconds until one is available."""
        rate = float(self.knobs.rate_limit)
        self.tokens = min(rate, self.tokens + (now - self.refilled_at) * rate)
        self.refilled_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


def load_or_create_key(data_dir: Path) -> SigningKey:
    """The bank's Ed25519 key: a raw 32-byte seed file in the data directory, made on first start."""
    path = data_dir / SEED_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        seed = SigningKey.generate().seed_bytes()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, seed)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    seed = path.read_bytes()
    if len(seed) != 32:
        raise ValueError(f"{path} must hold a raw 32-byte Ed25519 seed, found {len(seed)} bytes")
    return SigningKey.from_seed(seed)


def sandbox_public_key(data_dir: Path) -> bytes:
    """The raw public key of the sandbox bank that keeps its data in `data_dir`."""
    return load_or_create_key(data_dir).public_bytes


class Sandbox:
    """The bank's behaviour behind the HTTP routes: admission (faults), signing, the books."""

    def __init__(self, config: SandboxConfig) -> None:
        for code in config.banks:
            if not BANK_CODE_PATTERN.match(code):
                raise ValueError(f"bad bank code {code!r}")
        self.config = config
        self.key = load_or_create_key(config.data_dir)
        self.books = Books(config.data_dir / DB_FILE)
        self.banks = {code: _Bank(code, config.knobs) for code in config.banks}
        self.rng = random.Random(config.seed)
        self._api_key = config.api_key.encode()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        self.books.open(asyncio.get_running_loop())
        log.info("sandbox bank serving %s with key %s", ",".join(self.banks), self.key.key_id)
        try:
            yield
        finally:
            self.books.close()

    # -- responses -----------------------------------------------------------------------------

    def signed(self, body: bytes, status: int = 200, media_type: str = "application/json",
               headers: dict[str, str] | None = None) -> Response[bytes]:
        all_headers = {SIGNATURE_HEADER: self.key.sign(body).hex(), KEY_ID_HEADER: self.key.key_id}
        all_headers.update(headers or {})
        return Response(content=body, status_code=status, media_type=media_type,
                        headers=all_headers)

    def json(self, value: Any) -> Response[bytes]:
        return self.signed(msgspec.json.encode(value))

    def problem(self, refusal: Refusal) -> Response[bytes]:
        body: dict[str, Any] = {
            "type": "https://stimulus.example/bank-problems/" + refusal.code,
            "title": refusal.code.replace("_", " ").capitalize(),
            "status": refusal.status,
            "detail": refusal.detail,
            "code": refusal.code,
        }
        if refusal.idempotency_key is not None:
            body["idempotency_key"] = refusal.idempotency_key
        return self.signed(msgspec.json.encode(body), refusal.status, PROBLEM_MEDIA_TYPE,
                           refusal.headers)

    # -- admission: authentication and faults --------------------------------------------------

    def authorize(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self._api_key):
            raise Refusal(401, "unauthenticated", "a valid bearer API key is required")

    def bank(self, bank_code: str) -> _Bank:
        bank = self.banks.get(bank_code)
        if bank is None:
            raise Refusal(404, "bank_not_found", f"no bank {bank_code!r} here")
        return bank

    async def admit(self, bank_code: str, authorization: str | None) -> _Bank:
        """Everything a bank request passes before it is handled: outage, key, limit, faults."""
        bank = self.bank(bank_code)
        bank.stats["requests"] += 1
        now = time.monotonic()
        if bank.outage_until > now:
            bank.stats["outage_refused"] += 1
            if bank.outage_mode == "blackhole":
                await asyncio.sleep(bank.knobs.hang_ms / 1000)
            retry_after = max(1, math.ceil(bank.outage_until - time.monotonic()))
            raise Refusal(503, "unavailable", "the bank is down",
                          headers={"Retry-After": str(retry_after)})
        self.authorize(authorization)
        knobs = bank.knobs
        if knobs.rate_limit:
            wait_s = bank.take_token(now)
            if wait_s > 0:
                bank.stats["rate_limited"] += 1
                raise Refusal(429, "rate_limited", f"above {knobs.rate_limit} requests/s",
                              headers={"Retry-After": str(max(1, math.ceil(wait_s)))})
        if knobs.latency_ms > 0:
            factor = min(20.0, self.rng.lognormvariate(0.0, knobs.latency_sigma))
            await asyncio.sleep(knobs.latency_ms * factor / 1000)
        if knobs.error_rate and self.rng.random() < knobs.error_rate:
            bank.stats["injected_errors"] += 1
            raise Refusal(503, "unavailable", "transient failure, nothing was done")
        return bank

    async def after_commit(self, bank: _Bank) -> None:
        """The commit-then-timeout fault: the effect is durable, the answer comes too late."""
        if bank.knobs.commit_timeout_rate and self.rng.random() < bank.knobs.commit_timeout_rate:
            bank.stats["injected_hangs"] += 1
            await asyncio.sleep(bank.knobs.hang_ms / 1000)

    def disguise(self, bank: _Bank, result: CreditResult) -> CreditResult:
        if result.duplicate:
            bank.stats["duplicates"] += 1
            if bank.knobs.duplicate_rate and self.rng.random() < bank.knobs.duplicate_rate:
                bank.stats["disguised_duplicates"] += 1
                return msgspec.structs.replace(result, duplicate=False)
        else:
            bank.stats["credits"] += 1
        return result

    def update_knobs(self, update: KnobsUpdate) -> None:
        targets = [self.bank(update.bank_code)] if update.bank_code else list(self.banks.values())
        changes = {name: getattr(update, name) for name in Knobs.__struct_fields__
                   if getattr(update, name) is not None}
        for bank in targets:
            base = self.config.knobs if update.reset else bank.knobs
            bank.knobs = msgspec.structs.replace(base, **changes)
            if update.reset:
                bank.outage_until = 0.0
                bank.outage_mode = "unavailable"
            if update.outage_mode is not None:
                bank.outage_mode = update.outage_mode
            if update.outage_s is not None:
                bank.outage_until = time.monotonic() + update.outage_s
            bank.tokens = float(bank.knobs.rate_limit)
            bank.refilled_at = time.monotonic()
        log.info("knobs changed for %s: %s", ",".join(b.code for b in targets),
                 msgspec.json.encode(update).decode())

    def knobs_view(self) -> dict[str, KnobsView]:
        now = time.monotonic()
        return {code: KnobsView(knobs=bank.knobs, outage_mode=bank.outage_mode,
                                outage_remaining_s=round(max(0.0, bank.outage_until - now), 3))
                for code, bank in self.banks.items()}


def _decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise Refusal(400, "invalid_request", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise Refusal(400, "invalid_request", f"malformed JSON: {exc}") from exc


def _parse_date(raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise Refusal(400, "invalid_request", "the date must be YYYY-MM-DD") from exc


Auth = FromHeader[str | None]


def create_app(config: SandboxConfig) -> Litestar:
    """The sandbox bank's ASGI app; its lifespan opens and closes the books."""
    sandbox = Sandbox(config)
    books = sandbox.books

    @get("/health")
    async def health() -> Response[bytes]:
        return sandbox.json(Health(status="ok", banks=list(sandbox.banks),
                                   key_id=sandbox.key.key_id))

    @get("/keys")
    async def keys() -> Response[bytes]:
        return sandbox.json({sandbox.key.key_id: sandbox.key.public_bytes.hex()})

    @get("/admin/knobs")
    async def get_knobs(authorization: Auth = None) -> Response[bytes]:
        sandbox.authorize(authorization)
        return sandbox.json(sandbox.knobs_view())

    @post("/admin/knobs", status_code=200)
    async def set_knobs(body: RawBody, authorization: Auth = None) -> Response[bytes]:
        sandbox.authorize(authorization)
        sandbox.update_knobs(_decode(body, KnobsUpdate))
        return sandbox.json(sandbox.knobs_view())

    @get("/admin/stats")
    async def stats(authorization: Auth = None) -> Response[bytes]:
        sandbox.authorize(authorization)
        return sandbox.json({code: dict(bank.stats) for code, bank in sandbox.banks.items()})

    @post(PREFIX + "/credits", status_code=200)
    async def credit(bank_code: FromPath[str], body: RawBody,
                     authorization: Auth = None) -> Response[bytes]:
        bank = await sandbox.admit(bank_code, authorization)
        request = _decode(body, CreditRequest)
        outcome = (await books.write(lambda c: record_credits(c, bank_code, [request])))[0]
        await sandbox.after_commit(bank)
        if isinstance(outcome, Refusal):
            bank.stats["refused"] += 1
            return sandbox.problem(outcome)
        return sandbox.json(sandbox.disguise(bank, outcome))

    @post(PREFIX + "/credits:batch", status_code=200)
    async def credit_batch(bank_code: FromPath[str], body: RawBody,
                           authorization: Auth = None) -> Response[bytes]:
        bank = await sandbox.admit(bank_code, authorization)
        items = _decode(body, BatchCreditRequest).items
        assert len(items) <= MAX_BATCH_ITEMS
        outcomes = await books.write(lambda c: record_credits(c, bank_code, items))
        await sandbox.after_commit(bank)
        results = []
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, Refusal):
                bank.stats["refused"] += 1
                results.append(outcome.as_batch_item(item.idempotency_key))
            else:
                results.append(batch_item(sandbox.disguise(bank, outcome)))
        return sandbox.json(BatchCreditResponse(results=results))

    @get(PREFIX + "/credits/{idempotency_key:str}")
    async def credit_status(bank_code: FromPath[str], idempotency_key: FromPath[str],
                            authorization: Auth = None) -> Response[bytes]:
        await sandbox.admit(bank_code, authorization)
        record = await books.read(lambda c: credit_record(c, bank_code, idempotency_key))
        return sandbox.json(record)

    @post(PREFIX + "/credits/{idempotency_key:str}/reclaim", status_code=200)
    async def reclaim(bank_code: FromPath[str], idempotency_key: FromPath[str],
                      authorization: Auth = None) -> Response[bytes]:
        bank = await sandbox.admit(bank_code, authorization)
        result = await books.write(lambda c: record_reclaim(c, bank_code, idempotency_key))
        await sandbox.after_commit(bank)
        return sandbox.json(result)

    @post(PREFIX + "/credits/{idempotency_key:str}/spend", status_code=200)
    async def spend(bank_code: FromPath[str], idempotency_key: FromPath[str], body: RawBody,
                    authorization: Auth = None) -> Response[bytes]:
        bank = await sandbox.admit(bank_code, authorization)
        request = _decode(body, SpendRequest)
        result = await books.write(
            lambda c: record_spend(c, bank_code, idempotency_key, request))
        await sandbox.after_commit(bank)
        return sandbox.json(result)

    @get(PREFIX + "/settlements/{settlement_date:str}")
    async def settlement(bank_code: FromPath[str], settlement_date: FromPath[str],
                         authorization: Auth = None) -> Response[bytes]:
        await sandbox.admit(bank_code, authorization)
        day = _parse_date(settlement_date)
        body = await books.read(lambda c: settlement_file(c, bank_code, day))
        return sandbox.signed(body, media_type=NDJSON_MEDIA_TYPE)

    @get(PREFIX + "/books")
    async def bank_books(bank_code: FromPath[str], authorization: Auth = None,
                         campaign_id: FromQuery[str | None] = None) -> Response[bytes]:
        await sandbox.admit(bank_code, authorization)
        summary = await books.read(lambda c: totals(c, bank_code, campaign_id))
        return sandbox.json(summary)

    def on_refusal(request: Request[Any, Any, Any], exc: Refusal) -> Response[bytes]:
        return sandbox.problem(exc)

    def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "invalid_request" if exc.status_code < 500 else "internal_error")
        return sandbox.problem(Refusal(exc.status_code, code, str(exc.detail)))

    def on_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return sandbox.problem(Refusal(500, "internal_error", "the bank failed"))

    return Litestar(
        route_handlers=[health, keys, get_knobs, set_knobs, stats, credit, credit_batch,
                        credit_status, reclaim, spend, settlement, bank_books],
        lifespan=[sandbox.lifespan],
        exception_handlers={Refusal: on_refusal, HTTPException: on_http_error,
                            Exception: on_error},
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=None,
    )


def run(config: SandboxConfig, host: str, port: int) -> None:
    """Serve the sandbox bank in this process (granian, embedded, on uvloop) until a signal."""
    import uvloop

    uvloop.run(_serve(config, host, port))


async def _serve(config: SandboxConfig, host: str, port: int) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    # Embedded, not granian's process workers: one process owns the SQLite writer and the
    # knobs, and a SIGKILL takes the whole bank down at once (as the crash tests expect).
    server = Server(create_app(config), address=host, port=port, interface=Interfaces.ASGI,
                    http=HTTPModes.http1, websockets=False, backlog=2048,
                    log_level=LogLevels.warning, log_access=False)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    await server.serve()


def main(argv: list[str] | None = None) -> None:
    from wallet_adapter.cli import sandbox_bank_command

    sandbox_bank_command.main(args=argv, prog_name="python -m wallet_adapter.sandbox_bank")


if __name__ == "__main__":
    main()

