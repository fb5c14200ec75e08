"""Leases on the real database: one holder at a time, taken over only once expired, released at
once, and fenced: a transaction that renewed the lease keeps it until commit, and a holder that
lost it cannot renew or fence."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from kernel.db import create_pool
from kernel.leases import Lease, LeaseLost, current_holder
from tests.conftest import Stack


def _name() -> str:
    return f"test:{uuid.uuid4().hex[:10]}"


async def test_one_holder_until_it_expires_or_is_released(db: asyncpg.Connection) -> None:
    name = _name()
    first, second = Lease(name, ttl_s=0.6), Lease(name, ttl_s=0.6)
    assert await first.take(db)
    assert not await second.take(db)
    assert await current_holder(db, name) == (first.holder, first.term)
    assert await first.renew(db)
    await asyncio.sleep(0.8)                      # unrenewed for longer than its ttl
    assert await second.take(db)
    assert second.term == first.term + 1
    assert not await first.renew(db) and first.lost
    with pytest.raises(LeaseLost):
        first.check()
    await second.release(db)
    assert await current_holder(db, name) is None
    assert await first.take(db)                   # a released lease is free at once
    assert first.term == 3 and first.held         # its third change of holder


async def test_a_fenced_transaction_keeps_the_lease_until_it_commits(stack: Stack, db: asyncpg.Connection) -> None:
    name = _name()
    holder, rival = Lease(name, ttl_s=0.3), Lease(name, ttl_s=0.3)
    assert await holder.take(db)
    other = await asyncpg.connect(stack.database_url)
    try:
        async with db.transaction():
            await holder.fence(db)
            await asyncio.sleep(0.5)              # past the ttl, but the row is locked until commit
            taking = asyncio.create_task(rival.take(other))
            await asyncio.sleep(0.2)
            assert not taking.done()
        # The commit carried a renewal made before the sleep: expired by now, so the rival takes it.
        assert await asyncio.wait_for(taking, 5)
        async with db.transaction():
            with pytest.raises(LeaseLost):
                await holder.fence(db)
    finally:
        await other.close()


async def test_kept_renews_in_the_background(stack: Stack, db: asyncpg.Connection) -> None:
    name = _name()
    pool = await create_pool(stack.database_url, 1, 2)
    try:
        lease = Lease(name, ttl_s=0.6)
        assert await lease.take(pool)
        async with lease.kept(pool):
            await asyncio.sleep(1.5)              # two and a half ttls
            assert not await Lease(name, ttl_s=0.6).take(db)
            assert lease.held
        await lease.release(pool)
    finally:
        await pool.close()
