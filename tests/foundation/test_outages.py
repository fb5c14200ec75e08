"""Faults over real HTTP on private servers: Redis stopped, Redis hung (SIGSTOP), PostgreSQL
restarted, PostgreSQL hung (SIGSTOP), each while citizens register.

Each ends the same way: every request was answered 2xx or 503 `dependency_unavailable` with
Retry-After (never a 500), each 503 came fast, the API served again by itself once the server was
back, every citizen who retried holds exactly one registration, and the ledger audit and the
audit log's hash chain are clean. The servers are this module's own, so stopping them disturbs no
other test.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from kernel import audit_log, auth
from kernel.db import connect
from kernel.embedded import EmbeddedPostgres, EmbeddedRedis
from kernel.servers import migrate_sync, start_stack
from kernel.settings import Settings, load_settings
from stimulus import ledger_audit
from stimulus.stack import running_api
from tests.conftest import TEST_ENV
from tests.foundation.helpers import auth as bearer
from tests.foundation.helpers import citizen_token, open_campaign

CONCURRENCY = 6
FAULT_S = 3.0
# The API's own bounds are 0.5 s (Redis) and 1.5 s (database work in a request,
# STIMULUS_DB_REQUEST_TIMEOUT_S); this machine is shared.
FAST_503_S = 2.5
RECOVERY_S = 10.0
_citizens = itertools.count(8_000_000)


@dataclass
class Private:
    settings: Settings
    base_url: str
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis
    operator_token: str


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, sandbox_idp: str) -> Iterator[Private]:
    state: Path = tmp_path_factory.mktemp("outages")
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    running = start_stack(load_settings({**env, **TEST_ENV, "STIMULUS_STATE_DIR": str(state)}), need_redis=True)
    try:
        migrate_sync(running.settings)
        postgres = next(s for s in running.owned if isinstance(s, EmbeddedPostgres))
        redis = next(s for s in running.owned if isinstance(s, EmbeddedRedis))

        async def token() -> str:
            assert running.settings.database_url
            conn = await asyncpg.connect(running.settings.database_url)
            try:
                return await auth.create_token(conn, "olga", "operator")
            finally:
                await conn.close()

        operator = asyncio.run(token())
        with running_api(running.settings, workers=1, extra_env=TEST_ENV) as base:
            yield Private(running.settings, base, postgres, redis, operator)
    finally:
        running.stop()


@dataclass
class Load:
    """Citizens registering while a fault comes and goes; what each attempt was answered."""

    http: httpx.AsyncClient
    settings: Settings
    campaign_id: str
    answers: list[tuple[int, int, str | None, float, str | None]] = field(default_factory=list)
    acknowledged: dict[int, int] = field(default_factory=dict)  # citizen -> ticket
    # Each citizen's app sends one Idempotency-Key for its registration, retries included.
    keyed: bool = False

    async def register(self, citizen: int) -> int:
        headers = bearer(citizen_token(self.settings, citizen))
        if self.keyed:
            headers["Idempotency-Key"] = f"{self.campaign_id}-registration-{citizen}"
        started = time.monotonic()
        response = await self.http.post(f"/v1/campaigns/{self.campaign_id}/registrations", json={},
                                        headers=headers)
        elapsed = time.monotonic() - started
        code = response.json().get("code") if response.status_code >= 400 else None
        self.answers.append((citizen, response.status_code, code, elapsed, response.headers.get("retry-after")))
        if response.status_code in (200, 201):
            ticket = int(response.json()["ticket"])
            assert self.acknowledged.setdefault(citizen, ticket) == ticket, "a second ticket for one citizen"
        return response.status_code

    async def run_until(self, stop: asyncio.Event) -> None:
        async def one_worker() -> None:
            while not stop.is_set():
                await self.register(next(_citizens))

        await asyncio.gather(*(one_worker() for _ in range(CONCURRENCY)))

    async def settle(self) -> None:
        """Everyone who was refused retries until acknowledged, as a citizen's app would."""
        citizens = {answer[0] for answer in self.answers}
        deadline = time.monotonic() + 60
        while pending := sorted(citizens - set(self.acknowledged)):
            assert time.monotonic() < deadline, f"still refused after recovery: {pending[:5]}"
            for citizen in pending:
                await self.register(citizen)
            await asyncio.sleep(0.2)


@pytest.fixture
async def load(private: Private) -> AsyncIterator[Load]:
    async with httpx.AsyncClient(base_url=private.base_url, timeout=30) as http:
        campaign_id = await open_campaign(http, private.operator_token)
        yield Load(http, private.settings, campaign_id)


async def _probe(load: Load) -> None:
    """While the server is down: a registration is refused at once, whatever the load is doing."""
    await asyncio.sleep(0.5)
    assert await load.register(next(_citizens)) == 503


async def _with_fault(load: Load, fault: Callable[[], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    workers = asyncio.create_task(load.run_until(stop))
    await asyncio.sleep(1.0)  # registrations flowing before the fault
    await fault()
    await asyncio.sleep(1.0)  # and after it
    stop.set()
    await workers
    await load.settle()


async def _check(private: Private, load: Load) -> None:
    statuses = {answer[1] for answer in load.answers}
    assert statuses <= {200, 201, 503}, sorted(statuses)
    refused = [answer for answer in load.answers if answer[1] == 503]
    assert refused, "the fault was never seen: nothing was tested"
    assert {answer[2] for answer in refused} == {"dependency_unavailable"}
    assert all(answer[4] is not None for answer in refused), "a 503 without Retry-After"
    slowest = max(answer[3] for answer in refused)
    assert slowest < FAST_503_S, f"a 503 took {slowest:.2f} s"
    assert private.settings.database_url
    conn = await connect(private.settings.database_url)
    try:
        stored = dict(await conn.fetch(
            "SELECT ticket, pseudonym FROM registrations WHERE campaign_id = $1", load.campaign_id))
        assert len(stored) == len(load.acknowledged), "every citizen holds exactly one registration"
        assert set(load.acknowledged.values()) == set(stored)
        assert await ledger_audit.audit(conn) == []
        chain = await audit_log.verify_chain(conn)
        assert chain.ok, chain
    finally:
        await conn.close()


async def test_redis_hung_answers_503_fast_and_recovers(private: Private, load: Load) -> None:
    async def hang() -> None:
        assert private.redis.process is not None
        os.kill(private.redis.process.pid, signal.SIGSTOP)
        try:
            await _probe(load)
            await asyncio.sleep(FAULT_S)
        finally:
            os.kill(private.redis.process.pid, signal.SIGCONT)

    await _with_fault(load, hang)
    await _check(private, load)


async def test_redis_stopped_answers_503_fast_and_recovers(private: Private, load: Load) -> None:
    async def stop_and_start() -> None:
        await asyncio.to_thread(private.redis.stop)
        await _probe(load)
        await asyncio.sleep(FAULT_S)
        await asyncio.to_thread(private.redis.start)

    await _with_fault(load, stop_and_start)
    await _check(private, load)


async def test_postgres_restarted_answers_503_fast_and_recovers(private: Private, load: Load) -> None:
    async def restart() -> None:
        for _ in range(5):  # pg_ctl may give up waiting on a busy machine: ask again
            await asyncio.to_thread(private.postgres.stop, "fast")
            if not private.postgres.is_running():
                break
        assert not private.postgres.is_running(), "PostgreSQL would not stop"
        await _probe(load)
        await asyncio.sleep(FAULT_S)
        await asyncio.to_thread(private.postgres.start)

    await _with_fault(load, restart)
    await _check(private, load)


def _postgres_processes(postgres: EmbeddedPostgres) -> list[int]:
    """The postmaster and every process it forked (backends, checkpointer, WAL writer...)."""
    postmaster = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


async def test_postgres_hung_answers_503_fast_and_recovers(private: Private, load: Load) -> None:
    """SIGSTOP: connections and new connects are accepted by the kernel and never answered, so
    only the API's own deadline ends a request; asyncpg's statement timeout would wait 30 s. The
    citizens send Idempotency-Keys: a refused registration's key is freed, so the retry with it
    is served, not refused as in progress."""
    recovered_after_s: list[float] = []
    load.keyed = True

    async def hang() -> None:
        processes = _postgres_processes(private.postgres)
        for pid in processes:
            os.kill(pid, signal.SIGSTOP)
        try:
            await _probe(load)
            await asyncio.sleep(FAULT_S)
        finally:
            for pid in processes:
                os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        while await load.register(next(_citizens)) == 503:
            assert time.monotonic() - resumed < RECOVERY_S, "the API did not recover by itself"
        recovered_after_s.append(time.monotonic() - resumed)

    await _with_fault(load, hang)
    await _check(private, load)
    refused = [answer[3] for answer in load.answers if answer[1] == 503]
    print(f"PostgreSQL hung: {len(refused)} of {len(load.answers)} answered 503, slowest "
          f"{max(refused):.2f} s; registering again {recovered_after_s[0]:.2f} s after SIGCONT")
