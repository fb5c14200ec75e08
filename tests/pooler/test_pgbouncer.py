"""The API and the workers through a real PgBouncer in transaction mode (`STIMULUS_DB_POOLER=pgbouncer`):
registration, the draw, claims, issuance, redemption, settlement import and reconciliation; then
PgBouncer killed and restarted under load, while registrations stream in and a worker waits on the
bank with a batch in hand: the API and the workers carry on, no acknowledged registration is lost,
and every packet is credited once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from kernel.settings import Settings
from merchants import settlement
from merchants.client import MerchantClient
from stimulus.stack import running_api
from tests.conftest import TEST_ENV, Stack
from tests.foundation.helpers import auth, citizen_token, open_campaign
from tests.issuance.helpers import (
    BANKS,
    Process,
    assert_books_match,
    bank_settings,
    claim,
    create_winners,
    start_process,
    wait_for_states,
    worker_env,
)
from tests.pooler.conftest import PgBouncer
from tests.wallet.conftest import Admin, RunningBank
from tests.wallet.conftest import admin as admin  # the wallet tests' fixture, reused
from tests.wallet.conftest import bank as bank  # the wallet tests' fixture, reused
from wallet_adapter import streams
from wallet_adapter.bank_protocol import (
    SETTLEMENT_TIMEZONE,
    idempotency_key_for,
    settlement_date_of,
)

_citizens = itertools.count(900_000, 100_000)


@pytest.fixture(scope="module")
def pooled_settings(stack: Stack, pgbouncer: PgBouncer, bank: RunningBank,
                    tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session's settings with the database behind PgBouncer (a state directory of its own for
    the API's metrics, with the session's secrets, so tokens and receipts agree)."""
    state = tmp_path_factory.mktemp("pooled-state")
    shutil.copytree(stack.settings.state_dir / "secrets", state / "secrets")
    return replace(bank_settings(stack.settings, bank), state_dir=state, database_url=pgbouncer.url,
                   db_pooler="pgbouncer", database_direct_url=stack.database_url)


@pytest.fixture(scope="module")
def pooled_api(pooled_settings: Settings, drand_relay_url: str) -> Iterator[str]:
    env = {**TEST_ENV, "STIMULUS_DRAND_RELAYS": drand_relay_url}
    with running_api(pooled_settings, workers=1, extra_env=env) as base:
        yield base


@pytest.fixture
async def http(pooled_api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pooled_api, timeout=30) as client:
        yield client


def _workers(settings: Settings, bank: RunningBank, tmp_path: Path, prefix: str) -> list[Process]:
    env = worker_env(settings, bank, STIMULUS_DB_POOLER="pgbouncer",
                     DATABASE_DIRECT_URL=settings.database_direct_url or "")
    return [start_process("dispatcher", ["worker", "issuance-dispatcher", "--prefix", prefix], env, tmp_path),
            start_process("worker", ["worker", "issuance", "--prefix", prefix, "--claim-idle-s", "2"], env, tmp_path)]


async def _claim_all(http: httpx.AsyncClient, campaign_id: str, tokens: dict[int, str]) -> None:
    for n, (ticket, token) in enumerate(sorted(tokens.items())):
        reply = await claim(http, campaign_id, token, BANKS[n % len(BANKS)], f"PB-{ticket}")
        assert reply.status_code == 202, reply.text


async def test_a_campaign_end_to_end_through_pgbouncer(
        http: httpx.AsyncClient, pooled_settings: Settings, pooled_api: str, bank: RunningBank,
        db: asyncpg.Connection, tmp_path: Path, operator_token: str, second_operator_token: str) -> None:
    # Registration (group commit), commitment (COPY, cursors), the draw, all through the pooler.
    w = await create_winners(http, pooled_settings, operator_token, second_operator_token, winners=12,
                             registrants=20)
    await _claim_all(http, w.campaign_id, w.tokens)
    workers = _workers(pooled_settings, bank, tmp_path, f"pb:{uuid.uuid4().hex[:8]}")
    try:
        await wait_for_states(db, w.campaign_id, ["issued"], 12, 90)
    finally:
        for process in workers:
            process.stop()
    assert "leading (term" in workers[0].tail()
    await assert_books_match(db, bank, w.campaign_id)

    # A merchant redeems three packets; the bank's settlement file comes in; reconciliation matches.
    merchant_id = f"m.pb.{uuid.uuid4().hex[:8]}"
    reply = await http.post("/v1/admin/merchants", headers=auth(operator_token), json={
        "id": merchant_id, "name": "Shop behind the pooler", "category": "5411", "district": "430102",
        "settlement_account": f"ACCT-{merchant_id[-8:]}"})
    assert reply.status_code == 201, reply.text
    packets = await db.fetch("SELECT id, wallet_bank FROM packets WHERE campaign_id = $1 ORDER BY id LIMIT 3",
                             w.campaign_id)
    at = datetime.now(UTC) - timedelta(minutes=2)
    tag = uuid.uuid4().hex[:6]
    lines: dict[str, list[str]] = {code: [] for code in BANKS}
    async with MerchantClient(pooled_api, merchant_id, reply.json()["key"]["private_key_seed_hex"]) as till:
        for n, packet in enumerate(packets):
            reference = idempotency_key_for(w.campaign_id, str(packet["id"]))
            answer = await till.redeem(f"pb-{tag}-{n}", reference, 1_000, at, bank_reference=f"sp-{tag}-{n}")
            assert answer.status_code == 202, answer.text
            lines[packet["wallet_bank"]].append(
                f"sp-{tag}-{n},{reference},{merchant_id},1000,{at.astimezone(SETTLEMENT_TIMEZONE).isoformat()}")
    day = settlement_date_of(at)
    for code, rows in lines.items():
        body = "\n".join([",".join(settlement.CSV_HEADER), *rows,
                          f"#trailer,{code},{day},false,{len(rows)},{1_000 * len(rows)}"]) + "\n"
        reply = await http.post("/v1/admin/settlements", params={"bank": code}, content=body.encode(),
                                headers={**auth(operator_token), "Content-Type": "text/csv"})
        assert reply.status_code == 201, reply.text
    reply = await http.post("/v1/admin/reconciliation/runs", json={"window_s": 60, "grace_s": 3600},
                            headers=auth(operator_token))
    assert reply.status_code == 201, reply.text
    statuses = [r["status"] for r in await db.fetch(
        "SELECT status FROM redemption_notices WHERE merchant_id = $1", merchant_id)]
    assert statuses == ["matched"] * 3


async def _in_hand(settings: Settings, prefix: str) -> int:
    """Stream entries a worker has taken and not yet finished."""
    assert settings.redis_url
    client = redis_asyncio.Redis.from_url(settings.redis_url)
    try:
        total = 0
        for code in BANKS:
            with contextlib.suppress(RedisError):
                total += int((await client.xpending(streams.stream_key(prefix, code), streams.GROUP))["pending"])
        return total
    finally:
        await client.aclose()


async def test_pgbouncer_restarted_under_load_loses_no_acknowledged_work(
        http: httpx.AsyncClient, pooled_settings: Settings, pgbouncer: PgBouncer, bank: RunningBank, admin: Admin,
        db: asyncpg.Connection, tmp_path: Path, operator_token: str, second_operator_token: str) -> None:
    campaign_id = await open_campaign(http, operator_token)
    issuing = await create_winners(http, pooled_settings, operator_token, second_operator_token, winners=15,
                                   registrants=18)
    await _claim_all(http, issuing.campaign_id, issuing.tokens)
    admin.knobs(latency_ms=2_000, latency_sigma=0.0)  # the bank answers while PgBouncer is down
    prefix = f"pb:{uuid.uuid4().hex[:8]}"
    workers = _workers(pooled_settings, bank, tmp_path, prefix)
    acknowledged: dict[int, int] = {}   # citizen -> ticket
    refused: list[str] = []
    first = next(_citizens)
    numbers = iter(range(first, first + 100_000))  # the outage's fast refusals use citizens up
    stop = asyncio.Event()

    async def register_until_stopped() -> None:
        for n in numbers:
            if stop.is_set():
                return
            try:
                reply = await http.post(f"/v1/campaigns/{campaign_id}/registrations", json={},
                                        headers=auth(citizen_token(pooled_settings, n)), timeout=10)
            except httpx.TransportError as exc:
                refused.append(type(exc).__name__)
                await asyncio.sleep(0.05)
                continue
            if reply.status_code in (200, 201):
                acknowledged[n] = reply.json()["ticket"]
            else:  # a failure must say so: a problem document with a 5xx status, never a 4xx
                assert reply.status_code >= 500, reply.text
                assert reply.headers["content-type"].startswith("application/problem+json"), reply.text
                refused.append(str(reply.status_code))
                await asyncio.sleep(0.05)

    try:
        deadline = time.monotonic() + 60
        while await _in_hand(pooled_settings, prefix) == 0:  # the worker is at the bank with its batches
            assert time.monotonic() < deadline, workers[1].tail()
            await asyncio.sleep(0.1)
        clients = [asyncio.create_task(register_until_stopped()) for _ in range(4)]
        await asyncio.sleep(1.0)
        before = len(acknowledged)
        pgbouncer.kill()
        outage_started = time.monotonic()
        await asyncio.sleep(2.5)
        pgbouncer.start()
        # The API serves again within seconds of PgBouncer's return.
        deadline = time.monotonic() + 30
        during = len(acknowledged)
        while len(acknowledged) < during + 20:
            assert time.monotonic() < deadline, f"no recovery: {len(acknowledged)} acknowledged, {refused[-5:]}"
            await asyncio.sleep(0.1)
        recovered_s = time.monotonic() - outage_started
        stop.set()
        await asyncio.gather(*clients)
        assert before > 0 and refused, (before, refused)
        print(f"PgBouncer restart: {len(refused)} requests failed cleanly, recovered {recovered_s:.1f} s after "
              f"the kill; {len(acknowledged)} acknowledged")

        # Every acknowledged registration is stored, once, with the ticket it was given.
        rows = await db.fetch("SELECT ticket FROM registrations WHERE campaign_id = $1", campaign_id)
        stored = sorted(r["ticket"] for r in rows)
        assert len(stored) == len(set(stored))
        assert set(acknowledged.values()) <= set(stored)

        # The issuance in flight during the outage finishes, each packet credited once.
        admin.knobs(latency_ms=0)
        await wait_for_states(db, issuing.campaign_id, ["issued"], 15, 90)
        await assert_books_match(db, bank, issuing.campaign_id)

        # And the dispatcher publishes again: a campaign drawn and claimed after the restart is issued.
        w = await create_winners(http, pooled_settings, operator_token, second_operator_token, winners=6,
                                 registrants=8)
        await _claim_all(http, w.campaign_id, w.tokens)
        await wait_for_states(db, w.campaign_id, ["issued"], 6, 90)
        await assert_books_match(db, bank, w.campaign_id)
    finally:
        stop.set()
        for process in workers:
            process.stop()
