"""Two dispatcher replicas: one leads on the `issuance-dispatcher` lease; SIGKILL it mid-issuance
and the other takes over within seconds, finishes the issuance and publishes the next one, and
nothing is published twice (every outbox row on exactly one stream entry, every packet credited
once)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx

from kernel.leases import current_holder
from kernel.settings import Settings
from tests.conftest import Stack
from tests.issuance.helpers import (
    Process,
    assert_books_match,
    create_winners,
    maker_checker,
    start_process,
    wait_for_states,
    worker_env,
)
from tests.wallet.conftest import Admin, RunningBank
from wallet_adapter.outbox import LEADER_LEASE, DispatcherOptions

WINNERS = 120
TAKEOVER_S = DispatcherOptions().lease_ttl_s + 2 * DispatcherOptions().follow_s + 2


async def _leader(db: asyncpg.Connection, replicas: list[Process], timeout_s: float) -> tuple[Process, int]:
    """The replica whose process id the live lease names, and the lease's term."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = await current_holder(db, LEADER_LEASE)
        if held is not None:
            pid = int(held[0].split(":")[1])
            for replica in replicas:
                if replica.process.pid == pid and replica.process.poll() is None:
                    return replica, held[1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no live replica led within {timeout_s} s: {await current_holder(db, LEADER_LEASE)}")


async def test_a_killed_dispatcher_leader_is_replaced_within_seconds_and_nothing_is_published_twice(
        http: httpx.AsyncClient, stack: Stack, settings: Settings, bank: RunningBank, admin: Admin,
        db: asyncpg.Connection, prefix: str, tmp_path: Path, operator_token: str,
        second_operator_token: str) -> None:
    w, later = [await create_winners(http, stack.settings, operator_token, second_operator_token,
                                     winners=WINNERS, registrants=WINNERS + 10, with_wallets=True) for _ in "ab"]
    admin.knobs(latency_ms=150, latency_sigma=0.0)  # slow enough that the kill lands mid-issuance
    env = worker_env(stack.settings, bank)
    dispatcher_args = ["worker", "issuance-dispatcher", "--prefix", prefix, "--max-entries", "1"]
    replicas = [start_process(f"dispatcher-{n}", dispatcher_args, env, tmp_path) for n in (1, 2)]
    worker = start_process("worker", ["worker", "issuance", "--prefix", prefix, "--slots", "1",
                                      "--claim-idle-s", "2"], env, tmp_path)
    try:
        leader, term = await _leader(db, replicas, 30)
        done = await maker_checker(http, f"/v1/admin/campaigns/{w.campaign_id}/issuance",
                                   operator_token, second_operator_token, stack.settings)
        assert done["result"]["queued"] == WINNERS, done
        deadline = time.monotonic() + 60
        while await db.fetchval("SELECT count(*) FROM packets WHERE campaign_id = $1 AND state = 'issued'",
                                w.campaign_id) < WINNERS // 8:
            assert time.monotonic() < deadline, leader.tail()
            await asyncio.sleep(0.05)
        leader.kill()
        killed_at = time.monotonic()
        successor, new_term = await _leader(db, replicas, TAKEOVER_S)
        takeover_s = time.monotonic() - killed_at
        assert successor is not leader and new_term == term + 1
        # Work that only the new leader can publish.
        done = await maker_checker(http, f"/v1/admin/campaigns/{later.campaign_id}/issuance",
                                   operator_token, second_operator_token, stack.settings)
        assert done["result"]["queued"] == WINNERS, done
        admin.knobs(latency_ms=0)
        for campaign in (w, later):
            await wait_for_states(db, campaign.campaign_id, ["issued"], WINNERS, 90)
    finally:
        for process in (*replicas, worker):
            process.stop()
    print(f"takeover after SIGKILL: {takeover_s:.1f} s")
    assert "leading (term" in successor.tail()
    for campaign in (w, later):
        counts = await db.fetchrow(
            "SELECT count(*) AS rows, max(publish_count) AS most, min(publish_count) AS least FROM issuance_outbox "
            "WHERE campaign_id = $1", campaign.campaign_id)
        assert (counts["rows"], counts["least"], counts["most"]) == (WINNERS, 1, 1)
        await assert_books_match(db, bank, campaign.campaign_id)
