"""The append-only, hash-chained audit log of operator actions.

Each row's hash covers the previous row's hash and the row's own canonical content, so editing
or removing any row breaks every later link; `verify_chain` finds the first break.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

GENESIS_HASH = b"\x00" * 32
# Serialises appends so the chain has no forks; taken per transaction, released at commit.
_AUDIT_LOCK_ID = 0x5717_0002


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def row_hash(prev_hash: bytes, seq: int, at: datetime, actor: str, action: str, subject: str,
             details: dict[str, Any]) -> bytes:
    body = _canonical({"seq": seq, "at": at.isoformat(), "actor": actor, "action": action,
                       "subject": subject, "details": details})
    return hashlib.sha256(prev_hash + body).digest()


async def append(conn: asyncpg.Connection, *, actor: str, action: str, subject: str,
                 details: dict[str, Any] | None = None) -> int:
    """Append one entry inside the caller's transaction; returns its sequence number."""
    if not conn.is_in_transaction():
        raise RuntimeError("audit_log.append must run inside the state change's transaction")
    details = details or {}
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDIT_LOCK_ID)
    last = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq = 1 if last is None else last["seq"] + 1
    prev = GENESIS_HASH if last is None else bytes(last["hash"])
    at: datetime = await conn.fetchval("SELECT date_trunc('milliseconds', clock_timestamp())")
    digest = row_hash(prev, seq, at, actor, action, subject, details)
    await conn.execute(
        """INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        seq, at, actor, action, subject, details, prev, digest,
    )
    return int(seq)


@dataclass(frozen=True)
class ChainCheck:
    rows: int
    first_break: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


async def verify_chain(conn: asyncpg.Connection, batch: int = 10_000) -> ChainCheck:
    prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        cursor = conn.cursor(
            "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log ORDER BY seq",
            prefetch=batch,
        )
        async for row in cursor:
            count += 1
            if row["seq"] != expected_seq:
                return ChainCheck(count, row["seq"], f"sequence gap: expected {expected_seq}")
            if bytes(row["prev_hash"]) != prev:
                return ChainCheck(count, row["seq"], "prev_hash does not match the previous row")
            digest = row_hash(prev, row["seq"], row["at"], row["actor"], row["action"],
                              row["subject"], row["details"])
            if digest != bytes(row["hash"]):
                return ChainCheck(count, row["seq"], "row content does not match its hash")
            prev = digest
            expected_seq += 1
    return ChainCheck(count, None, None)
