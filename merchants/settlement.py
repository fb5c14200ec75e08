"""The banks' daily settlement files: strict parsing of both formats, and idempotent storage.

A file is one bank's spends of one settlement day (UTC+8), closed by a trailer that gives the
bank, the day, whether the day is complete, the number of lines and their total. Two formats
carry the same records (docs/reconciliation.md): the NDJSON the bank API serves, and CSV

    spend_id,payment_reference,merchant_id,amount_fen,settled_at
    sp-1,pkt-0123...,m-001,1500,2026-05-01T10:00:00.120+08:00
    #trailer,ICBC,2026-05-01,true,1,1500

A day with refunds has three more columns, `kind,refund_of,returned_to`: `spend,,` on a spend's
line, `refund,sp-1,wallet` (or `budget`) on a refund's, whose own id stands in `spend_id`.

Parsing is strict: a line that is not exactly a well-formed record is kept aside with its line
number and the reason, never dropped and never guessed at. What makes the whole file
untrustworthy (no trailer: truncated; a trailer whose count disagrees with the lines) refuses
the file and stores nothing. A file is stored once per bank by its SHA-256, so importing it again
changes nothing; a later file of the same day that lists a spend again, unchanged, counts it as
repeated instead of storing it twice.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import msgspec

from kernel import audit_log
from kernel.errors import InvalidInput
from merchants.registry import MERCHANT_ID_PATTERN
from wallet_adapter.bank_protocol import (
    SETTLEMENT_CSV_HEADER,
    SETTLEMENT_CSV_REFUND_COLUMNS,
    SETTLEMENT_CSV_TRAILER,
    SETTLEMENT_TIMEZONE,
    SPEND_ID_PATTERN,
    LineKind,
    ReturnedTo,
    SettlementFile,
    SettlementLine,
    SettlementRecord,
    SettlementTrailer,
    settlement_csv,
)

CSV_HEADER = SETTLEMENT_CSV_HEADER
CSV_HEADER_WITH_REFUNDS = SETTLEMENT_CSV_HEADER + SETTLEMENT_CSV_REFUND_COLUMNS
CSV_TRAILER_TAG = SETTLEMENT_CSV_TRAILER
_KINDS: dict[str, LineKind] = {"spend": "spend", "refund": "refund"}
_RETURNED_TO: dict[str, ReturnedTo] = {"wallet": "wallet", "budget": "budget"}
MAX_FEN = 2**53
_SPEND_ID = re.compile(SPEND_ID_PATTERN)
_REFERENCE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_BANK_CODE = re.compile(r"^[A-Z0-9]{2,16}$")
_DIGITS = re.compile(r"^[0-9]{1,16}$")
_NDJSON = msgspec.json.Decoder(SettlementRecord)
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class Line:
    line_no: int
    spend_id: str
    payment_reference: str
    merchant_id: str
    amount_fen: int
    settled_at: datetime
    kind: LineKind = "spend"                # or "refund": then spend_id is the refund's id
    refund_of: str | None = None            # a refund: the spend it refunds
    returned_to: ReturnedTo | None = None   # a refund: where the bank put the money


@dataclass(frozen=True)
class Reject:
    line_no: int
    raw: str
    error: str


@dataclass(frozen=True)
class ParsedFile:
    format: str
    sha256: bytes
    bank_code: str
    settlement_date: date
    complete: bool
    line_count: int
    total_fen: int
    lines: list[Line]
    rejects: list[Reject] = field(default_factory=list)


@dataclass(frozen=True)
class ImportResult:
    file_id: int
    created: bool
    bank_code: str
    settlement_date: date
    complete: bool
    format: str
    sha256_hex: str
    lines: int
    repeated: int
    rejected: int
    covers_until: datetime
    rejects: list[Reject] = field(default_factory=list)


def end_of_day(day: date) -> datetime:
    """The first moment after a settlement day, in UTC."""
    return datetime.combine(day + timedelta(days=1), time(), SETTLEMENT_TIMEZONE).astimezone(UTC)


def _refuse(code: str, detail: str, **extra: Any) -> InvalidInput:
    return InvalidInput(detail, code=code, **extra)


# One line as the row it is stored as, in _COLUMNS order: tuples, not objects, because a file
# has a million of them and each goes straight into COPY.
Record = tuple[int, str, str, str, int, datetime, LineKind, str | None, ReturnedTo | None]


@dataclass
class _Day:
    """What every line is checked against, worked out once per file rather than once per line."""
    day: date
    starts: datetime
    ends: datetime

    @classmethod
    def of(cls, day: date) -> _Day:
        return cls(day, end_of_day(day - timedelta(days=1)), end_of_day(day))


def _check_line(line_no: int, spend_id: str, reference: str, merchant_id: str, amount_fen: int,
                settled_at: datetime, day: _Day, kind: str = "spend", refund_of: str | None = None,
                returned_to: str | None = None) -> Record:
    line_kind = _KINDS.get(kind)
    if line_kind is None:
        raise ValueError(f"kind {kind!r} is neither spend nor refund")
    to: ReturnedTo | None = None
    if line_kind == "spend":
        if refund_of or returned_to:
            raise ValueError("a spend has no refund_of or returned_to")
        refund_of = None
    else:
        if not refund_of or not _SPEND_ID.match(refund_of):
            raise ValueError(f"refund_of {refund_of!r} is not the spend id the refund gives back")
        to = _RETURNED_TO.get(returned_to or "")
        if to is None:
            raise ValueError(f"returned_to {returned_to!r} is neither wallet nor budget")
    if not _SPEND_ID.match(spend_id):
        raise ValueError(f"spend_id {spend_id!r} is not a bank reference")
    if not _REFERENCE.match(reference):
        raise ValueError(f"payment_reference {reference!r} is not a packet reference")
    if not MERCHANT_ID_PATTERN.match(merchant_id):
        raise ValueError(f"merchant_id {merchant_id!r} is not a merchant id")
    if not 0 < amount_fen <= MAX_FEN:
        raise ValueError(f"amount_fen {amount_fen} is not a positive amount")
    if settled_at.tzinfo is None:
        raise ValueError("settled_at has no time zone")
    # Comparing aware moments needs no conversion: the day's bounds were converted once.
    if not day.starts <= settled_at < day.ends:
        raise ValueError(f"settled_at {settled_at.isoformat()} is not on the file's day {day.day}")
    return (line_no, spend_id, reference, merchant_id, amount_fen, settled_at, line_kind, refund_of, to)


@dataclass
class _Body:
    """A file whose header and trailer are read and checked, its lines still to come.

    `records` yields the good lines once, as they are parsed, so that they can go to COPY while
    the rest are still being read; what the lines add up to is known when it is exhausted, and
    `finish` then refuses the file whose trailer disagrees with them."""
    format: str
    sha256: bytes
    trailer: SettlementTrailer
    rows: list[str]
    first_line_no: int
    rejects: list[Reject] = field(default_factory=list)
    data_lines: int = 0
    total_fen: int = 0
    last_settled: datetime | None = None

    def records(self) -> Iterator[Record]:
        check = _ndjson_record if self.format == "ndjson" else _csv_checker(self.rows[0])
        day = _Day.of(self.trailer.settlement_date)
        rejects = self.rejects
        total = 0
        last: datetime | None = None
        line_no = self.first_line_no - 1
        for line_no, row in enumerate(self.rows[self.first_line_no - 1:-1], start=self.first_line_no):
            try:
                record = check(line_no, row, day)
            except (csv.Error, StopIteration, msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                rejects.append(Reject(line_no, row, str(exc) or type(exc).__name__))
                continue
            total += record[4]
            if last is None or record[5] > last:
                last = record[5]
            yield record
        self.data_lines = line_no - self.first_line_no + 1
        self.total_fen = total
        self.last_settled = last

    def finish(self) -> None:
        trailer = self.trailer
        if trailer.line_count != self.data_lines:
            raise _refuse("settlement_count_mismatch", f"the trailer counts {trailer.line_count} lines, the file has "
                          f"{self.data_lines}: lines were lost or added")
        if not self.rejects and self.total_fen != trailer.total_fen:
            raise _refuse("settlement_total_mismatch", f"the lines add up to {self.total_fen} fen, the trailer says "
                          f"{trailer.total_fen}")

    def parsed(self, lines: list[Line]) -> ParsedFile:
        t = self.trailer
        return ParsedFile(self.format, self.sha256, t.bank_code, t.settlement_date, t.complete, t.line_count,
                          t.total_fen, lines, self.rejects)


def _body(fmt: str, raw: bytes, trailer: SettlementTrailer | None, rows: list[str], first_line_no: int,
          expect_bank: str | None) -> _Body:
    if trailer is None:
        raise _refuse("settlement_truncated", "the file has no trailer as its last line: it is truncated or "
                      "not a settlement file")
    if not _BANK_CODE.match(trailer.bank_code):
        raise _refuse("settlement_bad_trailer", f"the trailer names no bank code ({trailer.bank_code!r})")
    if expect_bank is not None and trailer.bank_code != expect_bank:
        raise _refuse("settlement_wrong_bank", f"the file is {trailer.bank_code}'s, not {expect_bank}'s")
    return _Body(fmt, hashlib.sha256(raw).digest(), trailer, rows, first_line_no)


def _text_lines(raw: bytes) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse("settlement_not_utf8", f"the file is not UTF-8 text (byte {exc.start})") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "\r" in text:
        return [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines


def _ndjson_record(line_no: int, row: str, day: _Day) -> Record:
    record = _NDJSON.decode(row)
    if not isinstance(record, SettlementLine):
        raise ValueError("a second trailer before the end of the file")
    return _check_line(line_no, record.spend_id, record.idempotency_key, record.merchant_id, record.amount_fen,
                       record.settled_at, day, record.kind, record.refund_of, record.returned_to)


def _open_ndjson(raw: bytes, expect_bank: str | None) -> _Body:
    rows = _text_lines(raw)
    if not rows:
        raise _refuse("settlement_empty", "the file is empty")
    try:
        trailer = _NDJSON.decode(rows[-1])
    except (msgspec.DecodeError, msgspec.ValidationError):
        trailer = None
    if not isinstance(trailer, SettlementTrailer):
        trailer = None
    return _body("ndjson", raw, trailer, rows, 1, expect_bank)


def _csv_trailer(fields: list[str]) -> SettlementTrailer:
    if len(fields) != 6 or fields[0] != CSV_TRAILER_TAG:
        raise ValueError("not a trailer")
    _, bank_code, day, complete, count, total = fields
    if complete not in ("true", "false") or not _DIGITS.match(count) or not _DIGITS.match(total):
        raise ValueError("bad trailer fields")
    return SettlementTrailer(bank_code=bank_code, settlement_date=date.fromisoformat(day),
                             complete=complete == "true", line_count=int(count), total_fen=int(total))


def _csv_record(row: str) -> list[str]:
    # Bank files rarely quote: a plain split is exact when there is nothing to unquote.
    if '"' not in row:
        return row.split(",")
    return next(csv.reader([row], strict=True))


def _csv_checker(header_row: str) -> Callable[[int, str, _Day], Record]:
    columns = len(_csv_record(header_row))

    def check(line_no: int, row: str, day: _Day) -> Record:
        fields = _csv_record(row)
        if len(fields) != columns:
            raise ValueError(f"{len(fields)} fields, expected {columns}")
        if columns == 5:
            spend_id, reference, merchant_id, amount, settled = fields
            kind, refund_of, returned_to = "spend", "", ""
        else:
            spend_id, reference, merchant_id, amount, settled, kind, refund_of, returned_to = fields
        if not _DIGITS.match(amount):
            raise ValueError(f"amount_fen {amount!r} is not a whole number of fen")
        return _check_line(line_no, spend_id, reference, merchant_id, int(amount), datetime.fromisoformat(settled),
                           day, kind, refund_of or None, returned_to or None)
    return check


def _open_csv(raw: bytes, expect_bank: str | None) -> _Body:
    rows = _text_lines(raw)
    if not rows:
        raise _refuse("settlement_empty", "the file is empty")
    try:
        header = _csv_record(rows[0])
    except (csv.Error, StopIteration):
        header = []
    if tuple(header) not in (CSV_HEADER, CSV_HEADER_WITH_REFUNDS):
        raise _refuse("settlement_bad_header", f"line 1 must be the header {','.join(CSV_HEADER)}, or "
                      f"{','.join(CSV_HEADER_WITH_REFUNDS)} when the day has refunds")
    try:
        trailer: SettlementTrailer | None = _csv_trailer(_csv_record(rows[-1])) if len(rows) > 1 else None
    except (csv.Error, StopIteration, ValueError):
        trailer = None
    return _body("csv", raw, trailer, rows, 2, expect_bank)


def _open(raw: bytes, expect_bank: str | None) -> _Body:
    """Either format, told apart by the first byte: NDJSON records are JSON objects."""
    if raw.lstrip()[:1] == b"{":
        return _open_ndjson(raw, expect_bank)
    return _open_csv(raw, expect_bank)


def _parsed(body: _Body) -> ParsedFile:
    lines = [Line(n, spend_id, reference, merchant_id, amount_fen, settled_at.astimezone(UTC), kind,
                  refund_of, returned_to)
             for n, spend_id, reference, merchant_id, amount_fen, settled_at, kind, refund_of, returned_to
             in body.records()]
    body.finish()
    return body.parsed(lines)


def parse(raw: bytes, expect_bank: str | None = None) -> ParsedFile:
    """Either format, told apart by the first byte: NDJSON records are JSON objects."""
    return _parsed(_open(raw, expect_bank))


def file_to_ndjson(settlement: SettlementFile) -> bytes:
    """A file the bank client already parsed and checked, in the bank's own encoding."""
    records: list[SettlementLine | SettlementTrailer] = [*settlement.lines, SettlementTrailer(
        bank_code=settlement.bank_code, settlement_date=settlement.settlement_date,
        complete=settlement.complete, line_count=len(settlement.lines), total_fen=settlement.total_fen)]
    return b"".join(_ENCODER.encode(r) + b"\n" for r in records)


def to_csv(parsed: ParsedFile) -> bytes:
    """The same records as CSV (the format banks hand over for upload)."""
    return settlement_csv(
        [SettlementLine(spend_id=x.spend_id, idempotency_key=x.payment_reference, merchant_id=x.merchant_id,
                        amount_fen=x.amount_fen, settled_at=x.settled_at, kind=x.kind, refund_of=x.refund_of,
                        returned_to=x.returned_to)
         for x in parsed.lines],
        SettlementTrailer(bank_code=parsed.bank_code, settlement_date=parsed.settlement_date,
                          complete=parsed.complete, line_count=parsed.line_count, total_fen=parsed.total_fen))


_COLUMNS = ["line_no", "spend_id", "payment_reference", "merchant_id", "amount_fen", "settled_at", "kind", "refund_of",
            "returned_to"]

_STAGE = """CREATE TEMPORARY TABLE IF NOT EXISTS settlement_stage (
    line_no integer, spend_id text, payment_reference text, merchant_id text, amount_fen bigint,
    settled_at timestamptz, kind text, refund_of text, returned_to text) ON COMMIT DELETE ROWS"""

_INSERT_NEW = """
WITH fresh AS (
    INSERT INTO settlement_lines (file_id, line_no, bank_code, settlement_date, spend_id, payment_reference,
                                  merchant_id, amount_fen, settled_at, kind, refund_of, returned_to)
    SELECT $1, s.line_no, $2, $3, s.spend_id, s.payment_reference, s.merchant_id, s.amount_fen, s.settled_at,
           s.kind, s.refund_of, s.returned_to
    FROM settlement_stage s
    WHERE NOT EXISTS (SELECT 1 FROM settlement_lines l
                      WHERE l.bank_code = $2 AND l.settlement_date = $3 AND l.spend_id = s.spend_id
                        AND l.payment_reference = s.payment_reference AND l.merchant_id = s.merchant_id
                        AND l.amount_fen = s.amount_fen AND l.settled_at = s.settled_at AND l.kind = s.kind
                        AND l.refund_of IS NOT DISTINCT FROM s.refund_of
                        AND l.returned_to IS NOT DISTINCT FROM s.returned_to)
    RETURNING 1)
SELECT count(*) FROM fresh
"""


def _coverage(complete: bool, day: date, fetched_at: datetime | None, last_settled: datetime | None) -> datetime:
    day_end = end_of_day(day)
    if complete:
        return day_end
    if fetched_at is not None:
        return min(fetched_at, day_end)
    return last_settled.astimezone(UTC) if last_settled is not None else end_of_day(day - timedelta(days=1))


async def import_file(conn: asyncpg.Connection, raw: bytes, *, source: str, actor: str,
                      expect_bank: str | None = None, expect_day: date | None = None,
                      fetched_at: datetime | None = None, file_format: str | None = None) -> ImportResult:
    """Parse and store a file in one pass: its good lines go to COPY as they are parsed, so
    PostgreSQL stores one batch while the next is read. Nothing is kept unless the whole file
    is (one transaction), and a file already imported is recognised by its SHA-256 before a
    line is parsed. `file_format` ("csv" or "ndjson") insists on one; by default either is taken."""
    opener = {"csv": _open_csv, "ndjson": _open_ndjson}.get(file_format or "", _open)
    body = opener(raw, expect_bank)
    if expect_day is not None and body.trailer.settlement_date != expect_day:
        raise InvalidInput(f"asked {body.trailer.bank_code} for {expect_day}, got {body.trailer.settlement_date}",
                           code="settlement_wrong_day")
    return await _store(conn, body, source=source, actor=actor, fetched_at=fetched_at)


async def _store(conn: asyncpg.Connection, body: _Body, *, source: str, actor: str,
                 fetched_at: datetime | None) -> ImportResult:
    # The lines carry the id of the file row this transaction inserts, each line once and under
    # its own number: what the dropped foreign key and unique index on settlement_lines checked
    # (migration 0306) holds because this is the only writer of the lines.
    t = body.trailer
    records = body.records()
    async with conn.transaction():
        # The file row first, so that a file imported twice is known before its lines are read;
        # what only the lines tell (rejects, an incomplete day's coverage) is filled in after.
        file_id = await conn.fetchval(
            """INSERT INTO settlement_files (bank_code, settlement_date, sha256, format, source, complete,
                                             line_count, total_fen, rejected_count, imported_by, covers_until)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10)
               ON CONFLICT (bank_code, sha256) DO NOTHING RETURNING id""",
            t.bank_code, t.settlement_date, body.sha256, body.format, source, t.complete, t.line_count, t.total_fen,
            actor, _coverage(t.complete, t.settlement_date, fetched_at, None))
        if file_id is None:
            row = await conn.fetchrow(
                """SELECT id, rejected_count, repeated_count, covers_until,
                          line_count - rejected_count - repeated_count AS stored
                   FROM settlement_files WHERE bank_code = $1 AND sha256 = $2""",
                t.bank_code, body.sha256)
            return ImportResult(row["id"], False, t.bank_code, t.settlement_date, t.complete, body.format,
                                body.sha256.hex(), int(row["stored"]), int(row["repeated_count"]),
                                int(row["rejected_count"]), row["covers_until"])
        earlier = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM settlement_files WHERE bank_code = $1 AND settlement_date = $2 AND id <> $3)",
            t.bank_code, t.settlement_date, file_id)
        if earlier:
            await conn.execute(_STAGE)
            # Empty even when this import is nested in a caller's transaction after another.
            await conn.execute("TRUNCATE settlement_stage")
            await conn.copy_records_to_table("settlement_stage", columns=_COLUMNS, records=records)
            body.finish()
            stored = int(await conn.fetchval(_INSERT_NEW, file_id, t.bank_code, t.settlement_date))
        else:  # the day's first file: nothing to repeat, so its lines go straight in
            head = (file_id, t.bank_code, t.settlement_date)
            await conn.copy_records_to_table(
                "settlement_lines", columns=["file_id", "bank_code", "settlement_date", *_COLUMNS],
                records=(head + r for r in records))
            body.finish()
            stored = t.line_count - len(body.rejects)
        repeated = t.line_count - len(body.rejects) - stored
        covers = _coverage(t.complete, t.settlement_date, fetched_at, body.last_settled)
        await conn.execute(
            "UPDATE settlement_files SET repeated_count = $2, rejected_count = $3, covers_until = $4 WHERE id = $1",
            file_id, repeated, len(body.rejects), covers)
        if body.rejects:
            await conn.copy_records_to_table(
                "settlement_rejects", columns=["file_id", "line_no", "raw", "error"],
                records=[(file_id, r.line_no, r.raw, r.error) for r in body.rejects])
        await audit_log.append(conn, actor=actor, action="settlement.import", subject=f"settlement:{file_id}",
                               details={"bank_code": t.bank_code, "day": t.settlement_date.isoformat(),
                                        "sha256": body.sha256.hex(), "source": source,
                                        "complete": t.complete, "lines": stored, "repeated": repeated,
                                        "rejected": len(body.rejects)})
    return ImportResult(file_id, True, t.bank_code, t.settlement_date, t.complete, body.format, body.sha256.hex(),
                        stored, repeated, len(body.rejects), covers, body.rejects)


async def rejects_of(conn: asyncpg.Connection, file_id: int) -> list[Reject]:
    rows = await conn.fetch("SELECT line_no, raw, error FROM settlement_rejects WHERE file_id = $1 ORDER BY line_no",
                            file_id)
    return [Reject(r["line_no"], r["raw"], r["error"]) for r in rows]


class FileView(msgspec.Struct, frozen=True):
    """An imported settlement file as operators list it."""

    id: int
    bank_code: str
    settlement_date: date
    format: str
    source: str
    complete: bool
    line_count: int
    total_fen: int
    rejected_count: int
    repeated_count: int
    covers_until: datetime
    imported_at: datetime
    imported_by: str
    sha256_hex: str


async def list_files(conn: asyncpg.Connection | asyncpg.Pool, bank: str | None, limit: int) -> list[FileView]:
    """Imported files, newest first; of one bank's when `bank` is given."""
    rows = await conn.fetch(
        """SELECT id, bank_code, settlement_date, format, source, complete, line_count, total_fen, rejected_count,
                  repeated_count, covers_until, imported_at, imported_by, encode(sha256, 'hex') AS sha256_hex
           FROM settlement_files WHERE $1::text IS NULL OR bank_code = $1 ORDER BY id DESC LIMIT $2""", bank, limit)
    return [FileView(**dict(r)) for r in rows]
