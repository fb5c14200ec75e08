"""Winners through the real HTTP API, the issuance pipeline in-process or as processes, and the
final check every issuance test ends with: the bank's books equal our ledger to the fen."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as redis_asyncio

from kernel.db import create_pool
from kernel.sample import sample_campaign
from kernel.settings import Settings
from sandbox.bank import SANDBOX_API_KEY
from tests.foundation.helpers import auth, citizen_token, new_campaign_id
from tests.jobs_helpers import approve_and_run
from tests.wallet.conftest import RunningBank
from wallet_adapter.bank_protocol import idempotency_key_for
from wallet_adapter.banks import BankRegistry, issuance_client_options
from wallet_adapter.issuance_worker import IssuanceWorker, WorkerOptions
from wallet_adapter.outbox import Dispatcher, DispatcherOptions
from wallet_adapter.provider import BankClient

BANKS = ("ICBC", "CCB", "BOC")
# Citizens numbered apart per campaign: the per-person rate limit must not see one person twice.
_citizens = itertools.count(200_000, 1_000)


@dataclass
class Winners:
    campaign_id: str
    tokens: dict[int, str]  # ticket -> the winner's identity token
    losers: dict[int, str]  # ticket -> a registrant who did not win
    wallets: dict[int, tuple[str, str]] = field(default_factory=dict)  # ticket -> wallet at registration


def wallet_for(n: int) -> tuple[str, str]:
    return BANKS[n % len(BANKS)], f"W-{n}"


async def create_winners(http: httpx.AsyncClient, settings: Settings, maker: str, checker: str, *,
                         winners: int, registrants: int, with_wallets: bool = False,
                         **spec_changes: Any) -> Winners:
    """A campaign drawn through the API: create, open, register, close, commit, beacon, draw."""
    campaign_id = new_campaign_id("iss")
    spec = sample_campaign(campaign_id, winners)
    spec.update(spec_changes)
    response = await http.post("/v1/admin/campaigns", json=spec, headers=auth(maker))
    assert response.status_code == 201, response.text
    await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/open", headers=auth(maker)))
    first = next(_citizens)
    by_ticket: dict[int, tuple[str, tuple[str, str]]] = {}

    async def register(n: int) -> None:
        token = citizen_token(settings, n)
        wallet = wallet_for(n)
        body = {"wallet": {"bank_code": wallet[0], "wallet_id": wallet[1]}} if with_wallets else {}
        reply = await http.post(f"/v1/campaigns/{campaign_id}/registrations", json=body, headers=auth(token))
        assert reply.status_code in (200, 201), reply.text
        by_ticket[reply.json()["ticket"]] = (token, wallet)

    for start in range(first, first + registrants, 20):
        await asyncio.gather(*(register(n) for n in range(start, min(start + 20, first + registrants))))
    await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(maker)))
    await maker_checker(http, f"/v1/admin/campaigns/{campaign_id}/commitment", maker, checker, settings)
    await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/beacon/fetch",
                        headers=auth(maker)))
    await maker_checker(http, f"/v1/admin/campaigns/{campaign_id}/draw", maker, checker, settings)
    won = await _winning_tickets(http, campaign_id)
    result = Winners(campaign_id, {t: by_ticket[t][0] for t in won},
                     {t: v[0] for t, v in by_ticket.items() if t not in won})
    if with_wallets:
        result.wallets = {t: by_ticket[t][1] for t in won}
    assert len(result.tokens) == winners
    return result


async def _winning_tickets(http: httpx.AsyncClient, campaign_id: str) -> set[int]:
    bundle = (await http.get(f"/v1/campaigns/{campaign_id}/bundle")).json()["bundle"]
    return {int(w[0]) for w in bundle["draw"]["winners"]}


async def _ok(request: Any) -> httpx.Response:
    response: httpx.Response = await request
    assert response.status_code == 200, response.text
    return response


async def maker_checker(http: httpx.AsyncClient, path: str, maker: str, checker: str,
                        settings: Settings) -> dict[str, Any]:
    """Request, approve, and run the approved job to its end (as `stimulus worker jobs` would)."""
    response = await http.post(path, headers=auth(maker))
    assert response.status_code == 202, response.text
    done = await approve_and_run(http, settings, response.json()["id"], checker)
    assert done["status"] == "executed", done
    return done


async def claim(http: httpx.AsyncClient, campaign_id: str, token: str, bank: str, wallet: str,
                **headers: str) -> httpx.Response:
    return await http.post(f"/v1/campaigns/{campaign_id}/claim",
                           json={"wallet": {"bank_code": bank, "wallet_id": wallet}},
                           headers={**auth(token), **headers})


# -- the pipeline ------------------------------------------------------------------------------


def bank_settings(settings: Settings, bank: RunningBank) -> Settings:
    from dataclasses import replace

    return replace(settings, bank_url=bank.url, bank_codes=BANKS)


@contextlib.asynccontextmanager
async def pipeline(settings: Settings, *, prefix: str, workers: int = 1, slots: int = 2,
                   claim_idle_s: float = 2.0, timeout_s: float = 2.0,
                   dispatcher: DispatcherOptions | None = None) -> AsyncIterator[list[IssuanceWorker]]:
    """Dispatcher and workers as tasks in this event loop, on their own pool and Redis client."""
    assert settings.database_url and settings.redis_url
    pool = await create_pool(settings.database_url, 1, 8)
    redis = redis_asyncio.Redis.from_url(settings.redis_url, socket_timeout=10)
    banks = await BankRegistry.open(settings, issuance_client_options(8, timeout_s))
    stop = asyncio.Event()
    options = dispatcher or DispatcherOptions(prefix=prefix, check_s=0.5, republish_after_s=10)
    crew = [IssuanceWorker(pool, redis, banks, WorkerOptions(
        prefix=prefix, consumer=f"test-{n}", slots=slots, claim_idle_s=claim_idle_s,
        claim_every_s=claim_idle_s / 2, keep_alive_s=claim_idle_s / 3, block_ms=200)) for n in range(workers)]
    tasks = [asyncio.create_task(Dispatcher(pool, redis, BANKS, options, banks).run(stop))]
    tasks += [asyncio.create_task(worker.run(stop)) for worker in crew]
    try:
        yield crew
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        await banks.aclose()
        await redis.aclose()
        await pool.close()


def worker_env(settings: Settings, bank: RunningBank, **extra: str) -> dict[str, str]:
    assert settings.database_url and settings.redis_url
    return {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
            "STIMULUS_STATE_DIR": str(settings.state_dir), "STIMULUS_ENV": "development",
            "STIMULUS_BANK_URL": bank.url, "STIMULUS_BANKS": ",".join(BANKS),
            "STIMULUS_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Process:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        """SIGKILL: no clean-up; what it had in hand is left pending in Redis."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def start_process(name: str, args: Sequence[str], env: dict[str, str], log_dir: Path) -> Process:
    log_path = log_dir / f"{name}.log"
    handle = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen([sys.executable, "-m", "stimulus.cli", *args], env=env,
                               stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    return Process(name, process, log_path)


# -- waiting and checking --------------------------------------------------------------------


async def wait_for_states(db: asyncpg.Connection, campaign_id: str, done: Sequence[str], expected: int,
                          timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await db.fetch("SELECT state, count(*) AS n FROM packets WHERE campaign_id = $1 GROUP BY state",
                              campaign_id)
        counts = {r["state"]: int(r["n"]) for r in rows}
        if sum(counts.get(s, 0) for s in done) >= expected:
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout_s}s: {counts}, want {expected} in {done}")
        await asyncio.sleep(0.2)


async def assert_books_match(db: asyncpg.Connection, bank: RunningBank, campaign_id: str, *,
                             check_each: bool = True) -> dict[str, int]:
    """The bank's books equal our ledger to the fen, and no packet is credited twice anywhere."""
    from stimulus.ledger_audit import audit

    issued_fen = await db.fetchval(
        """SELECT COALESCE(sum(e.amount_fen), 0) FROM ledger_transactions t JOIN ledger_entries e ON e.txn_id = t.id
           WHERE t.kind = 'packet.issue' AND t.campaign_id = $1 AND e.amount_fen > 0""", campaign_id)
    rows = await db.fetch(
        """SELECT id, wallet_bank, wallet_id, amount_fen FROM packets
           WHERE campaign_id = $1 AND state IN ('issued', 'reclaimed', 'spent')""", campaign_id)
    credited_fen = credits = 0
    for code in BANKS:
        async with BankClient(bank.url, code, SANDBOX_API_KEY, bank.public_key) as client:
            books = await client.books(campaign_id)
            assert books.double_credits == 0, books
            credited_fen += books.credited_fen
            credits += books.credits
            if check_each:
                for row in (r for r in rows if r["wallet_bank"] == code):
                    record = await client.status(idempotency_key_for(campaign_id, str(row["id"])))
                    assert record is not None and record.wallet_id == row["wallet_id"], row
                    assert record.amount_fen == row["amount_fen"]
    assert credited_fen == issued_fen, (credited_fen, issued_fen)
    assert credits == len(rows), (credits, len(rows))  # one credit per issued packet, at one bank
    breaks = await audit(db, campaign_id)
    assert breaks == [], breaks
    return {"credited_fen": credited_fen, "credits": credits}


def soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


# -- the pipeline as `stimulus up` runs it: worker processes ------------------------------------


def start_issuance_processes(database_url: str, redis_url: str, state_dir: Path, bank_url: str,
                             logs: Path) -> list[subprocess.Popen[bytes]]:
    """The issuance dispatcher and a worker as separate processes, crediting the bank at `bank_url`."""
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STIMULUS_STATE_DIR": str(state_dir),
           "STIMULUS_ENV": "development", "STIMULUS_BANK_URL": bank_url, "STIMULUS_LOG_LEVEL": "WARNING"}
    return [subprocess.Popen([sys.executable, "-m", "stimulus.cli", "worker", name], env=env,
                             stdout=(logs / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
            for name in ("issuance-dispatcher", "issuance")]


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
