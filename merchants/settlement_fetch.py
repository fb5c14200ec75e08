"""Fetching the banks' settlement files from their API, checked and stored like uploads."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

import asyncpg

from kernel.settings import Settings
from merchants import settlement
from merchants.settlement import ImportResult
from wallet_adapter.bank_protocol import settlement_date_of
from wallet_adapter.banks import BankRegistry, issuance_client_options
from wallet_adapter.provider import BankClient, BankError

log = logging.getLogger("stimulus.reconcile")


async def fetch_day(conn: asyncpg.Connection, client: BankClient, day: date, actor: str,
                    file_format: str = "csv") -> ImportResult:
    """The bank signs the file; it then covers every spend settled before the request was sent,
    or the whole day once the bank closed it. CSV is parsed like an upload, line by line, from
    the bytes the bank sent; NDJSON is checked against its trailer by the client first."""
    asked_at = datetime.now(UTC)
    if file_format == "csv":
        raw = await client.settlement_csv(day)
    else:
        raw = settlement.file_to_ndjson(await client.settlement(day))
    return await settlement.import_file(conn, raw, source="fetched", actor=actor, expect_bank=client.bank_code,
                                        expect_day=day, fetched_at=asked_at, file_format=file_format)


def recent_days(dates: tuple[datetime, ...] = ()) -> list[date]:
    """The days asked for, or yesterday and today in the banks' time zone."""
    if dates:
        return [d.date() for d in dates]
    today = settlement_date_of(datetime.now(UTC))
    return [today - timedelta(days=1), today]


async def fetch_days(settings: Settings, conn: asyncpg.Connection, codes: tuple[str, ...], days: list[date],
                     actor: str, file_format: str = "csv", skip_complete: bool = False) -> list[ImportResult]:
    """Each bank's file of each day; with `skip_complete`, not the days whose complete file is in.
    A bank that cannot answer is logged and skipped: the next round asks again."""
    banks = await BankRegistry.open(settings, issuance_client_options(), codes=codes or None)
    results: list[ImportResult] = []
    try:
        for client in banks:
            for day in days:
                if skip_complete and await conn.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM settlement_files WHERE bank_code = $1 AND settlement_date = $2 "
                        "AND complete)", client.bank_code, day):
                    continue
                try:
                    results.append(await fetch_day(conn, client, day, actor, file_format))
                except BankError as exc:
                    log.warning("settlement file of %s for %s not fetched: %s", client.bank_code, day, exc)
    finally:
        await banks.aclose()
    return results
