"""Fetching a day's settlement file from a bank's API, checked and stored like an upload."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg

from merchants import settlement
from merchants.settlement import ImportResult
from wallet_adapter.provider import BankClient


async def fetch_day(conn: asyncpg.Connection, client: BankClient, day: date, actor: str) -> ImportResult:
    """The bank signs the file and the client checks it against its trailer; the file then covers
    every spend settled before the request was sent, or the whole day once the bank closed it."""
    asked_at = datetime.now(UTC)
    fetched = await client.settlement(day)
    parsed = settlement.parse_ndjson(settlement.file_to_ndjson(fetched), expect_bank=client.bank_code)
    return await settlement.store(conn, parsed, source="fetched", actor=actor, fetched_at=asked_at)
