"""The API's deadline on a request's database work (kernel/db.py `BoundedPool`) on a live
PostgreSQL, and the group commit's bound on a registration's wait (lottery/group_commit.py).

The hung server itself (SIGSTOP) is in test_outages.py, on a private stack.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from kernel.db import create_pool
from lottery.group_commit import GroupCommitter
from tests.conftest import Stack

DEADLINE_S = 0.5
# The machine is shared: what "about the deadline" may take at worst.
SLACK_S = 1.0


@pytest.fixture
async def pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.database_url, 1, 2, deadline_s=DEADLINE_S)
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_statement_past_the_deadline_is_ended_and_the_pool_carries_on(pool: asyncpg.Pool) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await pool.fetchval("SELECT pg_sleep(5)")
    assert time.monotonic() - started < DEADLINE_S + SLACK_S
    assert await pool.fetchval("SELECT 41 + 1") == 42


async def test_a_transaction_past_the_deadline_is_rolled_back(pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE IF NOT EXISTS deadline_probe (n int)")
    await db.execute("TRUNCATE deadline_probe")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO deadline_probe VALUES (1)")
            await conn.execute("SELECT pg_sleep(5)")
    assert time.monotonic() - started < DEADLINE_S + SLACK_S
    # The server ends the abandoned session when its sleep returns, and rolls its insert back.
    deadline = time.monotonic() + 15
    while await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)'"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert await db.fetchval("SELECT count(*) FROM deadline_probe") == 0
    await db.execute("DROP TABLE deadline_probe")


async def test_the_wait_for_a_connection_ends_at_the_deadline(pool: asyncpg.Pool) -> None:
    both_held = asyncio.Event()
    let_go = asyncio.Event()

    async def hold() -> None:
        async with pool.acquire(deadline_s=30):  # held past the waiter's deadline
            if pool.get_size() - pool.get_idle_size() == 2:
                both_held.set()
            await let_go.wait()

    holders = [asyncio.create_task(hold()) for _ in range(2)]  # the pool's two connections
    await asyncio.wait_for(both_held.wait(), 5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await pool.fetchval("SELECT 1")
    waited = time.monotonic() - started
    assert DEADLINE_S * 0.9 <= waited < DEADLINE_S + SLACK_S
    # The caller was not left cancelled: it carries on, and the pool serves once a connection is free.
    let_go.set()
    await asyncio.gather(*holders)
    assert await pool.fetchval("SELECT 41 + 1") == 42


async def test_unhurried_work_keeps_the_statement_timeout(pool: asyncpg.Pool) -> None:
    slow = pool.unhurried(30)
    assert await slow.fetchval("SELECT 7 FROM pg_sleep($1::float)", DEADLINE_S * 2) == 7


async def test_a_registration_waits_no_longer_than_the_deadline_and_is_never_acknowledged_late() -> None:
    release = asyncio.Event()
    flushed: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        flushed.append(list(items))
        await release.wait()  # a hung server
        return [item * 10 for item in items]

    committer: GroupCommitter[int, int] = GroupCommitter(flush, max_batch=4, max_inflight=1, wait_s=DEADLINE_S)
    committer.start()
    try:
        started = time.monotonic()
        in_flight = asyncio.create_task(committer.submit(1))
        await asyncio.sleep(0.05)  # the first flush takes it and hangs
        queued = [asyncio.create_task(committer.submit(n)) for n in (2, 3)]
        results = await asyncio.gather(in_flight, *queued, return_exceptions=True)
        assert all(isinstance(result, TimeoutError) for result in results), results
        assert time.monotonic() - started < DEADLINE_S + SLACK_S
        release.set()  # the server returns: the hung flush commits, the next one runs
        assert await committer.submit(4) == 40
        # Items whose submitters gave up before a flush took them were never written.
        assert flushed == [[1], [4]]
    finally:
        await committer.stop()
