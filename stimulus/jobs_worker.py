"""`stimulus worker jobs`: the process that runs approved actions, as many replicas as wanted.

The assembly: which jobs a worker can run is wired here, from the actions the domain packages
offer, so any process that runs a draw also runs its hand-over to packets.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg

from kernel import approvals
from kernel.db import create_pool
from kernel.jobs import JobKind, JobRunner
from kernel.settings import Settings
from stimulus import actions

log = logging.getLogger("stimulus.jobs_worker")

# A draw over millions of registrants runs single statements (COPY, ANALYZE) for minutes.
JOB_STATEMENT_TIMEOUT_S = 900.0


def job_kinds(settings: Settings) -> dict[str, JobKind]:
    return approvals.job_kinds(settings, actions.actions())


async def open_pool(settings: Settings) -> asyncpg.Pool:
    if settings.database_url is None:
        raise RuntimeError("DATABASE_URL is not set (stimulus up sets it for its workers)")
    return await create_pool(settings.database_url, 1, 4, command_timeout_s=JOB_STATEMENT_TIMEOUT_S,
                             pooler=settings.db_pooler)


def runner(settings: Settings, pool: asyncpg.Pool, lease_s: float) -> JobRunner:
    return JobRunner(pool, job_kinds(settings), lease_ttl_s=lease_s)


async def run_forever(settings: Settings, lease_s: float) -> None:
    pool = await open_pool(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    jobs = runner(settings, pool, lease_s)
    log.info("jobs worker %s: running %s", jobs.holder, ", ".join(sorted(jobs.kinds)))
    try:
        await jobs.run_forever(stop)
    finally:
        await pool.close()
