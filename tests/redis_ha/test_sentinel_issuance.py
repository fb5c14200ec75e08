"""Issuance through Redis Sentinel: the dispatcher and a worker (real processes) carry on while
the primary is killed and the replica promoted, and then while the new primary loses every stream
(FLUSHALL). The outbox in PostgreSQL is the truth: the dispatcher publishes again whatever is not
done, the banks' idempotency keys absorb the repeats, and the run ends complete with the banks'
books equal to the ledger: no double credit, no lost packet.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as redis_asyncio

from tests.conftest import Stack
from tests.issuance.helpers import assert_books_match, start_process, wait_for_states, worker_env
from tests.issuance.test_faults import ISSUED, bulk, worker_args
from tests.redis_ha.sentinel_group import SentinelGroup
from tests.wallet.conftest import Admin, RunningBank

# Two stream entries per bank (100 work items each). The first worker consumes ICBC only, one
# entry at a time: its second entry is read only after the first is acknowledged, from the new
# primary; the other banks' work waits on their streams, unread, until the streams are lost.
WINNERS = 600
FIRST_ENTRY = 100


async def _issued(db: asyncpg.Connection, campaign_id: str, bank: str = "%") -> int:
    return int(await db.fetchval("""SELECT count(*) FROM packets WHERE campaign_id = $1 AND state = 'issued'
                                    AND wallet_bank LIKE $2""", campaign_id, bank))


def _failed_redis_calls(*logs: Path) -> int:
    """Redis calls the processes logged as failed (and retried)."""
    return sum(len(re.findall(r"ConnectionError|MasterNotFoundError|TimeoutError|NOGROUP|UNBLOCKED",
                              log.read_text())) for log in logs)


async def _until_more_issued(db: asyncpg.Connection, campaign_id: str, bank: str, than: int,
                             timeout_s: float) -> float:
    """Seconds until more of the bank's packets than `than` are issued."""
    started = time.monotonic()
    while await _issued(db, campaign_id, bank) <= than:
        assert time.monotonic() - started < timeout_s, f"no packet issued in {timeout_s} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_issuance_carries_on_through_a_failover_and_lost_streams(
        http: httpx.AsyncClient, stack: Stack, bank: RunningBank, admin: Admin, db: asyncpg.Connection,
        sentinel_group: SentinelGroup, operator_token: str, second_operator_token: str) -> None:
    w = await bulk(http, stack.settings, operator_token, second_operator_token, WINNERS, WINNERS + 20)
    prefix = f"test:{uuid.uuid4().hex[:10]}"
    admin.knobs(latency_ms=2000, latency_sigma=0.0)  # each bank call outlasts the failover
    env = {**worker_env(stack.settings, bank), **sentinel_group.env, "REDIS_URL": ""}
    logs = sentinel_group.directory
    processes = [
        start_process("dispatcher", ["worker", "issuance-dispatcher", "--prefix", prefix,
                                     "--republish-after-s", "5"], env, logs),
        start_process("worker", worker_args(prefix, "--bank", "ICBC", "--bank-concurrency", "4",
                                             "--slots", "1", "--bank-timeout-s", "10"), env, logs)]
    try:
        deadline = time.monotonic() + 60
        while await db.fetchval("""SELECT count(*) FROM issuance_outbox WHERE campaign_id = $1
                                   AND published_at IS NOT NULL""", w.campaign_id) < WINNERS:
            assert time.monotonic() < deadline, [p.tail() for p in processes]
            await asyncio.sleep(0.05)

        old = await asyncio.to_thread(sentinel_group.kill_primary)
        killed_at, before = time.monotonic(), await _issued(db, w.campaign_id)
        new_port = await asyncio.to_thread(sentinel_group.wait_for_new_primary, old.port)
        promoted_s = time.monotonic() - killed_at
        assert before < FIRST_ENTRY, "the second entry was read before the failover: nothing was tested"
        # Packets in hand are credited and committed without Redis; beyond the first entries, the
        # worker must acknowledge on the new primary and read from it.
        await _until_more_issued(db, w.campaign_id, "ICBC", FIRST_ENTRY, 90)
        resumed_s = time.monotonic() - killed_at
        print(f"\nSentinel failover (issuance): primary :{old.port} killed with {before}/{WINNERS} issued; "
              f":{new_port} promoted after {promoted_s:.2f} s; work read from the new primary "
              f"{resumed_s:.2f} s after the kill; {_failed_redis_calls(*(p.log_path for p in processes))} "
              "Redis calls failed meanwhile and were retried")
        failed_before_flush = _failed_redis_calls(*(p.log_path for p in processes))

        async with redis_asyncio.Redis(port=new_port) as primary:
            flushed_at, before = time.monotonic(), await _issued(db, w.campaign_id)
            await primary.flushall()  # every stream, group and pending entry gone
        assert await _issued(db, w.campaign_id, "CCB") == 0, "CCB's work was read: nothing was tested"
        dispatcher_log = processes[0].log_path
        while "lost from Redis" not in dispatcher_log.read_text():
            assert time.monotonic() - flushed_at < 60, processes[0].tail()
            await asyncio.sleep(0.1)
        republished_s = time.monotonic() - flushed_at
        admin.knobs(latency_ms=0)
        processes.append(start_process("all", worker_args(prefix), env, logs))
        await wait_for_states(db, w.campaign_id, ISSUED, WINNERS, 120)
        print(f"Streams lost (FLUSHALL) with {before}/{WINNERS} issued: the dispatcher published the "
              f"outbox's open work again after {republished_s:.2f} s; the run complete after "
              f"{time.monotonic() - flushed_at:.2f} s; "
              f"{_failed_redis_calls(*(p.log_path for p in processes)) - failed_before_flush} Redis calls "
              "failed meanwhile and were retried")
        assert all(p.process.poll() is None for p in processes), [p.tail() for p in processes]
    finally:
        for process in reversed(processes):
            process.stop()
    assert await db.fetchval("SELECT max(publish_count) FROM issuance_outbox WHERE campaign_id = $1",
                             w.campaign_id) >= 2
    books = await assert_books_match(db, bank, w.campaign_id)
    assert books["credits"] == WINNERS
