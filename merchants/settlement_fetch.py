"""Fetching a day's settlement file from a bank's API, checked and stored like an upload."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg

from merchants import settlement
from merchants.settlement import ImportResult
from stimulus.errors import InvalidInput
from wallet_adapter.provider import BankClient


async def fetch_day(conn: asyncpg.Connection, client: BankClient, day: date, actor: str,
                    file_format: str = "csv") -> ImportResult:
    """The bank signs the file; it then covers every spend settled before the request was sent,
    or the whole day once the bank closed it. CSV is parsed like an upload, line by line, from
    the bytes the bank sent; NDJSON is checked against its trailer by the client first."""
    asked_at = datetime.now(UTC)
    if file_format == "csv":
        parsed = settlement.parse_csv(await client.settlement_csv(day), expect_bank=client.bank_code)
    else:
        fetched = await client.settlement(day)
        parsed = settlement.parse_ndjson(settlement.file_to_ndjson(fetched), expect_bank=client.bank_code)
    if parsed.settlement_date != day:
        raise InvalidInput(f"asked {client.bank_code} for {day}, got {parsed.settlement_date}",
                                      code="settlement_wrong_day")
    return await settlement.store(conn, parsed, source="fetched", actor=actor, fetched_at=asked_at)
