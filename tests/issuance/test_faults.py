"""Issuance under faults. Each test ends with the bank's books equal to our ledger to the fen, no
packet credited twice (at one bank or across banks), no packet lost, and a clean ledger audit.

Workers that must die by SIGKILL, and servers that restart, run as real processes; the rest of the
pipeline runs in the test's event loop. Packets come from campaigns drawn through the HTTP API and
issued in bulk (maker-checker) to the wallets given at registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as redis_asyncio

from kernel import auth
from kernel.db import _init_connection
from kernel.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from kernel.servers import run_migrations, start_stack
from kernel.settings import Settings, load_settings
from stimulus.stack import running_api
from tests.conftest import TEST_ENV, Stack
from tests.issuance.helpers import (
    BANKS,
    Winners,
    assert_books_match,
    create_winners,
    maker_checker,
    pipeline,
    start_process,
    wait_for_states,
    worker_env,
)
from tests.wallet.conftest import Admin, RunningBank
from wallet_adapter import streams

ISSUED = ["issued"]


async def bulk(http: httpx.AsyncClient, stack_settings: Settings, maker: str, checker: str, winners: int,
               registrants: int) -> Winners:
    w = await create_winners(http, stack_settings, maker, checker, winners=winners, registrants=registrants,
                             with_wallets=True)
    done = await maker_checker(http, f"/v1/admin/campaigns/{w.campaign_id}/issuance", maker, checker,
                               stack_settings)
    assert done["result"]["queued"] == winners, done
    return w


async def pending_entries(settings: Settings, prefix: str) -> int:
    assert settings.redis_url
    client = redis_asyncio.Redis.from_url(settings.redis_url)
    try:
        total = 0
        for code in BANKS:
            with contextlib.suppress(Exception):
                total += int((await client.xpending(streams.stream_key(prefix, code), streams.GROUP))["pending"])
        return total
    finally:
        await client.aclose()


def worker_args(prefix: str, *extra: str) -> list[str]:
    return ["worker", "issuance", "--prefix", prefix, "--claim-idle-s", "2", "--bank-timeout-s", "3",
            "--slots", "2", *extra]


async def test_a_worker_killed_mid_batch_is_taken_over_without_double_credits(
        http: httpx.AsyncClient, stack: Stack, settings: Settings, bank: RunningBank, admin: Admin,
        db: asyncpg.Connection, prefix: str, tmp_path: Path, operator_token: str,
        second_operator_token: str) -> None:
    w = await bulk(http, stack.settings, operator_token, second_operator_token, 60, 75)
    admin.knobs(latency_ms=1500, latency_sigma=0.0)  # the bank commits after the worker is dead
    env = worker_env(stack.settings, bank)
    dispatcher = start_process("dispatcher", ["worker", "issuance-dispatcher", "--prefix", prefix], env, tmp_path)
    doomed = start_process("doomed", worker_args(prefix), env, tmp_path)
    survivor = None
    try:
        deadline = time.monotonic() + 30
        while await pending_entries(stack.settings, prefix) == 0:
            assert time.monotonic() < deadline, doomed.tail()
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the batch calls are at the bank now
        doomed.kill()
        assert await db.fetchval("SELECT count(*) FROM packets WHERE campaign_id = $1 AND state = 'issued'",
                                 w.campaign_id) < 60
        admin.knobs(latency_ms=0)
        survivor = start_process("survivor", worker_args(prefix), env, tmp_path)
        await wait_for_states(db, w.campaign_id, ISSUED, 60, 60)
    finally:
        for process in (survivor, doomed, dispatcher):
            if process is not None:
                process.stop()
    assert "took over" in survivor.tail()
    stats = admin.stats("ICBC")
    assert stats["duplicates"] > 0  # the survivor's repeats were answered from the bank's books
    await assert_books_match(db, bank, w.campaign_id)


async def test_the_bank_commits_then_times_out(
        http: httpx.AsyncClient, stack: Stack, settings: Settings, bank: RunningBank, admin: Admin,
        db: asyncpg.Connection, prefix: str, operator_token: str, second_operator_token: str) -> None:
    w = await bulk(http, stack.settings, operator_token, second_operator_token, 30, 36)
    admin.knobs(commit_timeout_rate=1.0, hang_ms=4000)  # every credit commits, then answers too late
    async with pipeline(settings, prefix=prefix, timeout_s=1.0):
        await wait_for_states(db, w.campaign_id, ISSUED, 30, 60)
    assert sum(admin.stats(code).get("injected_hangs", 0) for code in BANKS) >= 3
    admin.reset()
    await assert_books_match(db, bank, w.campaign_id)


async def test_duplicate_answers_and_duplicate_deliveries_credit_once(
        http: httpx.AsyncClient, stack: Stack, settings: Settings, bank: RunningBank, admin: Admin,
        db: asyncpg.Connection, prefix: str, operator_token: str, second_operator_token: str) -> None:
    w = await bulk(http, stack.settings, operator_token, second_operator_token, 36, 45)
    # Repeated credits come back looking fresh, and 30 % of calls fail first so repeats happen.
    admin.knobs(duplicate_rate=1.0, error_rate=0.3)
    assert stack.settings.redis_url
    client = redis_asyncio.Redis.from_url(stack.settings.redis_url)
    try:
        ids = await db.fetch("SELECT id, bank_code FROM issuance_outbox WHERE campaign_id = $1", w.campaign_id)
        for code in BANKS:  # the same work items on the streams three times over, before any worker
            key = streams.stream_key(prefix, code)
            await streams.ensure_group(client, key)
            mine = [r["id"] for r in ids if r["bank_code"] == code]
            await streams.publish(client, key, [mine, mine[::-1], mine[:3]])
        async with pipeline(settings, prefix=prefix, workers=3):
            await wait_for_states(db, w.campaign_id, ISSUED, 36, 60)
    finally:
        await client.aclose()
    assert sum(admin.stats(code).get("duplicates", 0) for code in BANKS) > 0
    admin.reset()  # the books are read without faults
    await assert_books_match(db, bank, w.campaign_id)
    assert await db.fetchval("""SELECT count(*) FROM ledger_transactions
                                WHERE campaign_id = $1 AND kind = 'packet.issue'""", w.campaign_id) == 36


async def test_the_bank_down_for_30_seconds(
        http: httpx.AsyncClient, stack: Stack, settings: Settings, bank: RunningBank, admin: Admin,
        db: asyncpg.Connection, prefix: str, operator_token: str, second_operator_token: str) -> None:
    w = await bulk(http, stack.settings, operator_token, second_operator_token, 30, 36)
    admin.knobs(outage_s=30)
    started = time.monotonic()
    async with pipeline(settings, prefix=prefix):
        await asyncio.sleep(5)
        assert await db.fetchval("SELECT count(*) FROM packets WHERE campaign_id = $1 AND state = 'issued'",
                                 w.campaign_id) == 0
        await wait_for_states(db, w.campaign_id, ISSUED, 30, 75)
    assert time.monotonic() - started >= 29
    assert sum(admin.stats(code).get("outage_refused", 0) for code in BANKS) > 0
    # Held, not cycled: nothing reached the dead-letter stream during the outage.
    assert await db.fetchval("SELECT count(*) FROM issuance_outbox WHERE campaign_id = $1 AND dead_at IS NOT NULL",
                             w.campaign_id) == 0
    await assert_books_match(db, bank, w.campaign_id)


async def test_redis_restarted_mid_run_with_its_streams_gone(
        http: httpx.AsyncClient, stack: Stack, settings: Settings, bank: RunningBank, admin: Admin,
        db: asyncpg.Connection, prefix: str, tmp_path: Path, operator_token: str,
        second_operator_token: str) -> None:
    w = await bulk(http, stack.settings, operator_token, second_operator_token, 60, 75)
    redis_dir = tmp_path / "redis"
    server = EmbeddedRedis(redis_dir, free_port())
    server.start()
    admin.knobs(latency_ms=400, latency_sigma=0.0)
    env = worker_env(stack.settings, bank, REDIS_URL=server.url)
    # Only ICBC is consumed at first: the other banks' work sits unread on their streams.
    processes = [start_process("dispatcher", ["worker", "issuance-dispatcher", "--prefix", prefix], env, tmp_path),
                 start_process("icbc", worker_args(prefix, "--bank", "ICBC"), env, tmp_path)]
    try:
        await wait_for_states(db, w.campaign_id, ISSUED, 1, 30)
        assert await db.fetchval("""SELECT count(*) FROM issuance_outbox WHERE campaign_id = $1
                                    AND published_at IS NOT NULL AND done_at IS NULL""", w.campaign_id) > 0
        server.kill()
        shutil.rmtree(redis_dir)  # no AOF, no snapshot: every stream and group is gone
        await asyncio.sleep(1)
        server.start()
        admin.knobs(latency_ms=0)
        processes.append(start_process("all", worker_args(prefix), env, tmp_path))
        await wait_for_states(db, w.campaign_id, ISSUED, 60, 90)
    finally:
        for process in reversed(processes):
            process.stop()
        server.stop()
    assert "lost from Redis" in processes[0].log_path.read_text()
    assert await db.fetchval("SELECT max(publish_count) FROM issuance_outbox WHERE campaign_id = $1",
                             w.campaign_id) >= 2
    await assert_books_match(db, bank, w.campaign_id)


@contextlib.asynccontextmanager
async def private_stack(tmp_path: Path, drand_relay_url: str
                        ) -> AsyncIterator[tuple[Settings, EmbeddedPostgres, str, list[str]]]:
    """PostgreSQL, Redis and the API of its own, so PostgreSQL can be killed without the session's."""
    env = {**os.environ, **TEST_ENV, "STIMULUS_STATE_DIR": str(tmp_path / "state")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    running = start_stack(load_settings(env), need_redis=True)
    try:
        assert running.settings.database_url
        await run_migrations(running.settings.database_url)
        postgres = next(s for s in running.owned if isinstance(s, EmbeddedPostgres))
        assert running.settings.database_url
        conn = await asyncpg.connect(running.settings.database_url)
        try:
            tokens = [await auth.create_token(conn, name, "operator") for name in ("maker", "checker")]
        finally:
            await conn.close()
        with running_api(running.settings, workers=1,
                         extra_env={**TEST_ENV, "STIMULUS_DRAND_RELAYS": drand_relay_url}) as base:
            yield running.settings, postgres, base, tokens
    finally:
        running.stop()


async def test_postgres_restarted_mid_run(bank: RunningBank, admin: Admin, prefix: str, tmp_path: Path,
                                          drand_relay_url: str) -> None:
    if os.environ.get("DATABASE_URL"):
        return  # restarting PostgreSQL is about the embedded server
    async with private_stack(tmp_path, drand_relay_url) as (own, postgres, base, (maker, checker)):
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            w = await bulk(http, own, maker, checker, 60, 75)
        admin.knobs(latency_ms=1500, latency_sigma=0.0)  # PostgreSQL goes down while the bank credits
        env = worker_env(own, bank)
        processes = [start_process("dispatcher", ["worker", "issuance-dispatcher", "--prefix", prefix], env, tmp_path),
                     start_process("worker", worker_args(prefix), env, tmp_path)]
        assert own.database_url
        try:
            deadline = time.monotonic() + 30
            while await pending_entries(own, prefix) == 0:
                assert time.monotonic() < deadline, processes[1].tail()
                await asyncio.sleep(0.1)
            db = await _connect(own.database_url)
            try:  # the restart must fall inside the run, not after it
                issued_before = await db.fetchval(
                    "SELECT count(*) FROM packets WHERE campaign_id = $1 AND state = 'issued'", w.campaign_id)
            finally:
                await db.close()
            assert issued_before < 60, "every packet was issued before PostgreSQL went down"
            postgres.kill()  # SIGKILL the postmaster: crash recovery on the next start
            await asyncio.sleep(2)
            postgres.start()
            admin.knobs(latency_ms=0)
            db = await _connect(own.database_url)
            try:
                await wait_for_states(db, w.campaign_id, ISSUED, 60, 90)
                await assert_books_match(db, bank, w.campaign_id)
            finally:
                await db.close()
        finally:
            for process in reversed(processes):
                process.stop()
        assert all(p.process.returncode == 0 for p in processes), [p.tail() for p in processes]


async def _connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    await _init_connection(conn)
    return conn
