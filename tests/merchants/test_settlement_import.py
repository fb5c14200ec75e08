"""The streaming import on the real database: the lines go to COPY as they are parsed, yet the
file is refused whole when its trailer disagrees, its rejects are those of the strict parser,
line by line, and a file imported twice is stored once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from kernel.errors import InvalidInput
from kernel.ledger import LedgerBreak
from merchants import settlement
from merchants.ledger_checks import ledger_checks
from wallet_adapter.bank_protocol import SETTLEMENT_TIMEZONE, SettlementFile, SettlementLine

DAY = date(2026, 5, 1)
NOON = datetime(2026, 5, 1, 12, 0, tzinfo=SETTLEMENT_TIMEZONE)


@pytest.fixture
async def tx(db: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """Whatever a test stores is rolled back: its lines never reach another test's reconciliation."""
    outer = db.transaction()
    await outer.start()
    try:
        yield db
    finally:
        await outer.rollback()


def _bank() -> str:
    return "T" + uuid.uuid4().hex[:8].upper()


def _csv(bank: str, good: int, bad: list[tuple[int, str]], *, count: int | None = None,
         total: int | None = None, complete: bool = True) -> bytes:
    """`good` lines, with `bad` rows put in at the given data positions."""
    rows = [f"sp-{n},pkt-{n},m-{n % 7},{100 + n},{(NOON + timedelta(seconds=n)).isoformat()}" for n in range(good)]
    for at, row in bad:
        rows.insert(at, row)
    trailer = (f"#trailer,{bank},{DAY},{'true' if complete else 'false'},{len(rows) if count is None else count},"
               f"{sum(100 + n for n in range(good)) if total is None else total}")
    return ("\n".join([",".join(settlement.CSV_HEADER), *rows, trailer]) + "\n").encode()


BAD = [(3, "sp-x,pkt-x,m-1,-5,2026-05-01T10:00:00+08:00"),       # a negative amount
       (10, "sp-y,pkt-y,m-1,100"),                                # a field short
       (40, "sp-z,pkt-z,m-1,100,2026-04-28T10:00:00+08:00")]      # another day


async def test_lines_stream_into_the_table_with_the_strict_parsers_rejects(tx: asyncpg.Connection) -> None:
    bank = _bank()
    raw = _csv(bank, 5_000, BAD)
    expected = settlement.parse(raw, expect_bank=bank)
    result = await settlement.import_file(tx, raw, source="uploaded", actor="test", expect_bank=bank)
    assert (result.created, result.lines, result.repeated, result.rejected) == (True, 5_000, 0, 3)
    assert result.rejects == expected.rejects
    assert [r.line_no for r in result.rejects] == [5, 12, 42]          # the header is line 1
    assert await settlement.rejects_of(tx, result.file_id) == expected.rejects
    stored = await tx.fetch(
        """SELECT line_no, spend_id, payment_reference, merchant_id, amount_fen, settled_at, kind, refund_of,
                  returned_to FROM settlement_lines WHERE file_id = $1 ORDER BY line_no""", result.file_id)
    assert [settlement.Line(*r) for r in stored] == expected.lines
    assert await tx.fetchval("SELECT rejected_count FROM settlement_files WHERE id = $1", result.file_id) == 3

    again = await settlement.import_file(tx, raw, source="uploaded", actor="test", expect_bank=bank)
    assert (again.created, again.file_id, again.lines, again.rejected) == (False, result.file_id, 5_000, 3)
    assert await tx.fetchval("SELECT count(*) FROM settlement_lines WHERE bank_code = $1", bank) == 5_000

    # The day's next file repeats every line and adds one: the stage keeps only the new one.
    more = _csv(bank, 5_001, [])
    later = await settlement.import_file(tx, more, source="uploaded", actor="test", expect_bank=bank)
    assert (later.created, later.lines, later.repeated, later.rejected) == (True, 1, 5_000, 0)
    assert await tx.fetchval("SELECT count(*) FROM settlement_lines WHERE bank_code = $1", bank) == 5_001


async def test_ndjson_streams_with_line_numbered_rejects(tx: asyncpg.Connection) -> None:
    bank = _bank()
    parsed = settlement.parse(_csv(bank, 200, []), expect_bank=bank)
    fetched = SettlementFile(bank_code=bank, settlement_date=DAY, complete=True, total_fen=parsed.total_fen, lines=tuple(
        SettlementLine(spend_id=x.spend_id, idempotency_key=x.payment_reference, merchant_id=x.merchant_id,
                       amount_fen=x.amount_fen, settled_at=x.settled_at) for x in parsed.lines))
    rows = settlement.file_to_ndjson(fetched).decode().splitlines()
    rows.insert(7, '{"type":"line","spend_id":"broken"')
    rows[-1] = rows[-1].replace('"line_count":200', '"line_count":201')
    raw = ("\n".join(rows) + "\n").encode()
    result = await settlement.import_file(tx, raw, source="fetched", actor="test", expect_bank=bank,
                                          file_format="ndjson")
    assert (result.format, result.lines, result.rejected) == ("ndjson", 200, 1)
    assert [r.line_no for r in result.rejects] == [8]
    assert result.rejects == settlement.parse(raw, expect_bank=bank).rejects
    stored = await tx.fetchval("SELECT sum(amount_fen) FROM settlement_lines WHERE file_id = $1", result.file_id)
    assert stored == parsed.total_fen


@pytest.mark.parametrize(("count", "total", "code"), [
    (4_999, None, "settlement_count_mismatch"), (5_001, None, "settlement_count_mismatch"),
    (None, 1, "settlement_total_mismatch")])
async def test_a_file_whose_trailer_disagrees_is_refused_after_its_lines_went_to_copy(
        tx: asyncpg.Connection, count: int | None, total: int | None, code: str) -> None:
    bank = _bank()
    raw = _csv(bank, 5_000, [], count=count, total=total)
    with pytest.raises(InvalidInput) as refused:
        await settlement.import_file(tx, raw, source="uploaded", actor="test", expect_bank=bank)
    assert refused.value.code == code
    assert await tx.fetchval("SELECT count(*) FROM settlement_files WHERE bank_code = $1", bank) == 0
    assert await tx.fetchval("SELECT count(*) FROM settlement_lines WHERE bank_code = $1", bank) == 0


async def test_an_open_day_covers_until_its_last_line_and_the_wrong_day_is_refused(tx: asyncpg.Connection) -> None:
    bank = _bank()
    raw = _csv(bank, 30, [], complete=False)
    result = await settlement.import_file(tx, raw, source="uploaded", actor="test", expect_bank=bank)
    assert result.covers_until == (NOON + timedelta(seconds=29)).astimezone(UTC)
    assert await tx.fetchval("SELECT covers_until FROM settlement_files WHERE id = $1", result.file_id) == \
        result.covers_until
    with pytest.raises(InvalidInput) as refused:
        await settlement.import_file(tx, _csv(_bank(), 3, []), source="fetched", actor="test",
                                     expect_day=DAY + timedelta(days=1))
    assert refused.value.code == "settlement_wrong_day"


async def test_the_ledger_audit_finds_lines_no_stored_file_holds_once(tx: asyncpg.Connection) -> None:
    """No constraint checks a line's file per row (the import's transaction makes it true): the
    whole-database audit does, for a line of no stored file and a line number stored twice."""
    bank = _bank()
    result = await settlement.import_file(tx, _csv(bank, 20, BAD[:1]), source="uploaded", actor="test",
                                          expect_bank=bank)

    def ours(breaks: list[LedgerBreak], file_id: int) -> list[str]:
        return [b.detail for b in breaks if b.check == "settlement_lines_of_stored_files"
                and f"file {file_id}" in b.detail]

    assert ours(await ledger_checks(tx, None), result.file_id) == []
    orphan = await tx.fetchval("SELECT max(id) + 1000 FROM settlement_files")
    await tx.execute(
        """INSERT INTO settlement_lines (file_id, line_no, bank_code, settlement_date, spend_id, payment_reference,
                                         merchant_id, amount_fen, settled_at)
           SELECT file_id, line_no, bank_code, settlement_date, spend_id, payment_reference, merchant_id, amount_fen,
                  settled_at
           FROM settlement_lines WHERE file_id = $1 AND line_no = 2
           UNION ALL
           SELECT $2, line_no, bank_code, settlement_date, spend_id, payment_reference, merchant_id, amount_fen,
                  settled_at
           FROM settlement_lines WHERE file_id = $1 AND line_no = 3""", result.file_id, orphan)
    breaks = await ledger_checks(tx, None)
    assert ours(breaks, result.file_id) == [f"settlement file {result.file_id} stored 20 lines; the table holds "
                                            "21 under 20 line numbers"]
    assert ours(breaks, orphan) == [f"1 settlement lines name file {orphan}, which is not stored"]
    assert await ledger_checks(tx, "no-such-campaign") == []
