"""The API through Redis Sentinel while the primary dies (SIGKILL) and Sentinel promotes the
replica: citizens keep registering; while no primary answers they get 503
`dependency_unavailable` with Retry-After, never a 500; once the replica is promoted the API
finds it by itself, and every acknowledged registration is stored exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field, replace

import httpx

from kernel import audit_log
from kernel.db import connect
from stimulus import ledger_audit
from stimulus.stack import running_api
from tests.conftest import TEST_ENV, Stack
from tests.foundation.helpers import auth as bearer
from tests.foundation.helpers import citizen_token, open_campaign
from tests.redis_ha.sentinel_group import SentinelGroup

CONCURRENCY = 6
_citizens = itertools.count(9_100_000)


@dataclass
class Answer:
    citizen: int
    status: int
    code: str | None
    at: float  # monotonic time the answer came
    elapsed_s: float
    retry_after: str | None


@dataclass
class Registrations:
    http: httpx.AsyncClient
    stack: Stack
    campaign_id: str
    answers: list[Answer] = field(default_factory=list)
    acknowledged: dict[int, int] = field(default_factory=dict)  # citizen -> ticket

    async def register(self, citizen: int) -> int:
        started = time.monotonic()
        response = await self.http.post(f"/v1/campaigns/{self.campaign_id}/registrations", json={},
                                        headers=bearer(citizen_token(self.stack.settings, citizen)))
        now = time.monotonic()
        code = response.json().get("code") if response.status_code >= 400 else None
        self.answers.append(Answer(citizen, response.status_code, code, now, now - started,
                                   response.headers.get("retry-after")))
        if response.status_code in (200, 201):
            ticket = int(response.json()["ticket"])
            assert self.acknowledged.setdefault(citizen, ticket) == ticket, "a second ticket for one citizen"
        return response.status_code

    async def run_until(self, stop: asyncio.Event) -> None:
        async def one() -> None:
            while not stop.is_set():
                await self.register(next(_citizens))
        await asyncio.gather(*(one() for _ in range(CONCURRENCY)))

    async def settle(self) -> None:
        """Everyone refused retries until acknowledged, as a citizen's app would."""
        citizens = {a.citizen for a in self.answers}
        deadline = time.monotonic() + 60
        while pending := sorted(citizens - set(self.acknowledged)):
            assert time.monotonic() < deadline, f"still refused after the failover: {pending[:5]}"
            for citizen in pending:
                await self.register(citizen)
            await asyncio.sleep(0.2)


async def test_the_api_carries_on_through_a_sentinel_failover(
        stack: Stack, sentinel_group: SentinelGroup, operator_token: str) -> None:
    # The API is given the sentinels instead of a URL (and the session's PostgreSQL).
    settings = replace(stack.settings, redis_url="redis+sentinel://")
    env = {**TEST_ENV, **sentinel_group.env, "REDIS_URL": ""}
    with running_api(settings, workers=1, extra_env=env) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            load = Registrations(http, stack, await open_campaign(http, operator_token))
            stop = asyncio.Event()
            running = asyncio.create_task(load.run_until(stop))
            await asyncio.sleep(1.5)  # registrations flowing through the first primary
            old = await asyncio.to_thread(sentinel_group.kill_primary)
            killed_at = time.monotonic()
            new_port = await asyncio.to_thread(sentinel_group.wait_for_new_primary, old.port)
            promoted_at = time.monotonic()
            while not any(a.at > promoted_at and a.status in (200, 201) for a in load.answers):
                assert time.monotonic() - promoted_at < 30, "the API never reached the new primary"
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # and through the new one
            stop.set()
            await running
            during = [a for a in load.answers if a.at > killed_at]
            refused = [a for a in load.answers if a.status == 503]
            # answers already past Redis when it died may still succeed: count from the first 503
            first_refused = min((a.at for a in refused), default=killed_at)
            first_ok = min(a.at for a in during if a.status in (200, 201) and a.at > first_refused)
            print(f"\nSentinel failover (API): primary :{old.port} killed, :{new_port} promoted after "
                  f"{promoted_at - killed_at:.2f} s; registrations again after {first_ok - killed_at:.2f} s; "
                  f"{len(refused)} of {len(during)} requests meanwhile answered 503, "
                  f"slowest 503 {max((a.elapsed_s for a in refused), default=0):.2f} s")
            await load.settle()

    statuses = {a.status for a in load.answers}
    assert statuses <= {200, 201, 503}, sorted(statuses)
    assert refused, "no request met the failover: nothing was tested"
    assert {a.code for a in refused} == {"dependency_unavailable"}
    assert all(a.retry_after is not None for a in refused), "a 503 without Retry-After"
    assert any(a.at < killed_at and a.status in (200, 201) for a in load.answers)
    assert stack.settings.database_url
    conn = await connect(stack.settings.database_url)
    try:
        stored = dict(await conn.fetch("SELECT ticket, pseudonym FROM registrations WHERE campaign_id = $1",
                                       load.campaign_id))
        assert len(stored) == len(load.acknowledged), "every citizen holds exactly one registration"
        assert set(load.acknowledged.values()) == set(stored)
        assert await ledger_audit.audit(conn, load.campaign_id) == []
        chain = await audit_log.verify_chain(conn)
        assert chain.ok, chain
    finally:
        await conn.close()

