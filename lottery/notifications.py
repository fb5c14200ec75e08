"""Delivering the notification outbox: rows written with the draw, sent afterwards, at least once.

Rows are claimed with SKIP LOCKED so several workers can drain one outbox; a row is marked sent in
the transaction that hands it to the gateway, and the sandbox gateway is keyed by the outbox id, so
a crash between the two repeats nothing visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger(__name__)

Sender = Callable[[asyncpg.Connection, int, str, str], Awaitable[None]]


async def sandbox_sms_sender(conn: asyncpg.Connection, outbox_id: int, recipient: str, body: str) -> None:
    """The sandbox SMS gateway: records what a carrier would deliver."""
    await conn.execute(
        "INSERT INTO sandbox_sms (recipient, body, outbox_id) VALUES ($1, $2, $3) ON CONFLICT (outbox_id) DO NOTHING",
        recipient, body, outbox_id)


async def deliver_batch(pool: asyncpg.Pool, send: Sender = sandbox_sms_sender, limit: int = 1000) -> int:
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT id, recipient, body FROM notification_outbox WHERE sent_at IS NULL
               ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""", limit)
        for row in rows:
            await send(conn, row["id"], row["recipient"], row["body"])
        if rows:
            await conn.execute(
                "UPDATE notification_outbox SET sent_at = now(), attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows])
    return len(rows)


async def run_forever(pool: asyncpg.Pool, idle_s: float = 1.0, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            sent = await deliver_batch(pool)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("notification delivery failed, retrying: %s", exc)
            sent = 0
        if not sent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), idle_s)
