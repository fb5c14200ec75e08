"""The issuance workers with Redis hung (SIGSTOP) in the middle of a run: they wait it out, keep
running, and finish the run once Redis answers again; the bank's books equal our ledger."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx

from kernel.embedded import EmbeddedRedis, free_port
from tests.conftest import Stack
from tests.issuance.helpers import assert_books_match, start_process, wait_for_states, worker_env
from tests.issuance.test_faults import ISSUED, bulk, pending_entries, worker_args
from tests.wallet.conftest import Admin, RunningBank

# Longer than the workers' 10 s Redis socket timeout, so their calls time out while it lasts.
HUNG_S = 12


async def test_workers_wait_out_a_hung_redis_and_finish_the_run(
        http: httpx.AsyncClient, stack: Stack, bank: RunningBank, admin: Admin, db: asyncpg.Connection,
        prefix: str, tmp_path: Path, operator_token: str, second_operator_token: str) -> None:
    w = await bulk(http, stack.settings, operator_token, second_operator_token, 60, 75)
    server = EmbeddedRedis(tmp_path / "redis", free_port())
    server.start()
    assert server.process is not None
    admin.knobs(latency_ms=1500, latency_sigma=0.0)  # the worker is at the bank when Redis hangs
    env = worker_env(stack.settings, bank, REDIS_URL=server.url)
    processes = [start_process("dispatcher", ["worker", "issuance-dispatcher", "--prefix", prefix], env, tmp_path),
                 start_process("worker", worker_args(prefix), env, tmp_path)]
    try:
        deadline = time.monotonic() + 30
        while await pending_entries(replace(stack.settings, redis_url=server.url), prefix) == 0:
            assert time.monotonic() < deadline, processes[1].tail()
            await asyncio.sleep(0.1)
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            issued = await db.fetchval("SELECT count(*) FROM packets WHERE campaign_id = $1 AND state = 'issued'",
                                       w.campaign_id)
            assert issued < 60, "every packet was issued before Redis hung"
            await asyncio.sleep(HUNG_S)
            assert all(p.process.poll() is None for p in processes), [p.tail() for p in processes]
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        admin.knobs(latency_ms=0)
        await wait_for_states(db, w.campaign_id, ISSUED, 60, 120)
        assert all(p.process.poll() is None for p in processes), [p.tail() for p in processes]
    finally:
        for process in reversed(processes):
            process.stop()
        server.stop()
    await assert_books_match(db, bank, w.campaign_id)
