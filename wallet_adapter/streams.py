"""The Redis side of issuance: one stream per operator bank, one consumer group, a dead-letter
stream, and the few commands the dispatcher and the workers send.

An entry carries up to `ENTRY_MAX_ITEMS` outbox row ids, so one XADD, one delivery and one XACK
move a slice of a bank batch rather than a single packet. Entries are deleted right after they
are acknowledged (XACK then XDEL, after the database commit): a stream holds only unread and
pending work, its length is the backlog the dispatcher throttles on, and nothing is ever trimmed
past an entry still pending. Redis holds nothing that the outbox in PostgreSQL cannot rebuild.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

log = logging.getLogger("wallet_adapter.streams")

DEFAULT_PREFIX = "stimulus:issuance"
GROUP = "issuance"
ENTRY_MAX_ITEMS = 100
DEAD_LETTER_MAX_LEN = 100_000  # the dead-letter stream is for humans; PostgreSQL keeps the truth


@dataclass(frozen=True)
class Entry:
    entry_id: str
    outbox_ids: tuple[int, ...]
    deliveries: int = 1


def stream_key(prefix: str, bank_code: str) -> str:
    return f"{prefix}:{bank_code}"


def dead_letter_key(prefix: str) -> str:
    return f"{prefix}:dead"


def encode_ids(outbox_ids: Sequence[int]) -> bytes:
    return ",".join(map(str, outbox_ids)).encode()


def _decode_entry(entry_id: Any, fields: Any) -> Entry:
    raw = (fields or {}).get(b"ids", b"")
    ids = tuple(int(part) for part in raw.split(b",") if part)
    return Entry(_text(entry_id), ids)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def ensure_group(redis: Redis, key: str) -> None:
    """Create the stream and its group if missing (after a Redis restart they are gone).

    The group starts at 0, not $: entries published before the group existed are delivered too.
    """
    try:
        await redis.xgroup_create(key, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def publish(redis: Redis, key: str, chunks: Sequence[Sequence[int]]) -> list[str]:
    """XADD one entry per chunk of outbox ids in one round trip; returns the entry ids."""
    async with redis.pipeline(transaction=False) as pipe:
        for chunk in chunks:
            pipe.xadd(key, {"ids": encode_ids(chunk)})
        return [_text(entry_id) for entry_id in await pipe.execute()]


async def read_new(redis: Redis, key: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
    reply: Any = await redis.xreadgroup(GROUP, consumer, {key: ">"}, count=count, block=block_ms)
    entries: list[Entry] = []
    for _stream, items in reply or []:
        entries.extend(_decode_entry(entry_id, fields) for entry_id, fields in items)
    return entries


async def claim_idle(redis: Redis, key: str, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
    """XAUTOCLAIM entries idle that long (their consumer died or hung), with delivery counts."""
    reply = await redis.xautoclaim(key, GROUP, consumer, min_idle_ms, start_id="0-0", count=count)
    claimed = [_decode_entry(entry_id, fields) for entry_id, fields in reply[1] if entry_id is not None]
    if not claimed:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for entry in claimed:
            pipe.xpending_range(key, GROUP, entry.entry_id, entry.entry_id, 1)
        pending = await pipe.execute()
    counted: list[Entry] = []
    for entry, rows in zip(claimed, pending, strict=True):
        deliveries = int(rows[0]["times_delivered"]) if rows else 1
        counted.append(Entry(entry.entry_id, entry.outbox_ids, deliveries))
    return counted


async def keep_alive(redis: Redis, key: str, consumer: str, entry_ids: Sequence[str]) -> None:
    """Reset the idle time of entries this consumer still works on (a bank outage can hold a batch
    for minutes): XCLAIM with JUSTID does not count as a delivery."""
    if entry_ids:
        await redis.xclaim(key, GROUP, consumer, 0, list(entry_ids), justid=True)


async def ack(redis: Redis, key: str, entry_ids: Sequence[str]) -> None:
    """Acknowledge and delete, in that order, only after the outcome is committed."""
    if not entry_ids:
        return
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xack(key, GROUP, *entry_ids)
        pipe.xdel(key, *entry_ids)
        results = await pipe.execute(raise_on_error=False)
    for result in results:
        if isinstance(result, ResponseError) and "NOGROUP" not in str(result):
            raise result


async def dead_letter(redis: Redis, prefix: str, bank_code: str, entry: Entry, outbox_ids: Sequence[int],
                      reason: str) -> None:
    await redis.xadd(dead_letter_key(prefix), {
        "bank": bank_code, "entry": entry.entry_id, "ids": encode_ids(outbox_ids),
        "deliveries": str(entry.deliveries), "reason": reason[:500]},
        maxlen=DEAD_LETTER_MAX_LEN, approximate=True)


async def present(redis: Redis, key: str, entry_ids: Sequence[str]) -> set[str]:
    """Which of these entries the stream still holds (unread or pending)."""
    if not entry_ids:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in entry_ids:
            pipe.xrange(key, entry_id, entry_id, count=1)
        replies = await pipe.execute()
    return {entry_id for entry_id, reply in zip(entry_ids, replies, strict=True) if reply}


async def all_entries(redis: Redis, key: str, limit: int) -> list[Entry]:
    reply: Any = await redis.xrange(key, "-", "+", count=limit)
    return [_decode_entry(entry_id, fields) for entry_id, fields in reply or []]


async def lengths(redis: Redis, keys: Sequence[str]) -> list[int]:
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.xlen(key)
        return [int(n) for n in await pipe.execute()]
