"""Durable jobs: long actions queued in PostgreSQL and run by `stimulus worker jobs` replicas.

An approval that starts a long action (the commitment, the draw, bulk issuance) enqueues a job in
the approval's transaction and answers at once. A worker claims a job with `FOR UPDATE SKIP
LOCKED`, holds it by a lease on the job's row (renewed in the background while it runs) and runs
its effect in one transaction that also marks the job succeeded. That last write is the fence:
it names the lease holder, so a worker whose lease ran out (killed, stalled, cut off) commits
nothing, and the worker that took the job over restarts it from scratch. The effect therefore
happens once, whatever dies when.

A domain error (the campaign moved on, a check refused) fails the job for good, with the error
kept for the operator, who can queue it again. Anything else (a lost connection, a crash) is
retried after a pause, up to `max_attempts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from prometheus_client import Counter, Histogram

from kernel import audit_log
from kernel.errors import DomainError, NotFound, WrongState
from kernel.leases import TRANSIENT, LeaseLost, process_holder

log = logging.getLogger("stimulus.jobs")

STATES = ("queued", "running", "succeeded", "failed")
RETRY_AFTER_S = 5.0
PROGRESS_EVERY_S = 0.5

JOBS_ENDED = Counter("stimulus_jobs_ended_total", "Job attempts that ended at a worker", ["kind", "outcome"])
JOB_SECONDS = Histogram("stimulus_job_seconds", "How long a job attempt ran at a worker", ["kind"],
                        buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600))


class Job(msgspec.Struct, frozen=True):
    id: int
    kind: str
    args: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    lease_holder: str | None
    lease_expires_at: datetime | None
    progress_done: int
    progress_total: int | None
    progress_step: str | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


_COLUMNS = ("id, kind, args, state, attempts, max_attempts, lease_holder, lease_expires_at, progress_done, "
            "progress_total, progress_step, result, error, created_by, created_at, started_at, finished_at, "
            "updated_at")


def _from_row(row: asyncpg.Record) -> Job:
    return msgspec.convert(dict(row), Job)


async def enqueue(conn: asyncpg.Connection, kind: str, args: dict[str, Any], created_by: str) -> Job:
    """Queue a job; call it inside the transaction that decides the job must run."""
    row = await conn.fetchrow(
        f"INSERT INTO jobs (kind, args, created_by) VALUES ($1, $2, $3) RETURNING {_COLUMNS}",
        kind, args, created_by)
    return _from_row(row)


async def fetch(db: asyncpg.Connection | asyncpg.Pool, job_id: int) -> Job:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE id = $1", job_id)
    if row is None:
        raise NotFound(f"no job #{job_id}", code="job_not_found")
    return _from_row(row)


async def list_recent(db: asyncpg.Connection | asyncpg.Pool, state: str | None = None,
                      limit: int = 100) -> list[Job]:
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM jobs WHERE $1::text IS NULL OR state = $1 ORDER BY id DESC LIMIT $2",
        state, limit)
    return [_from_row(r) for r in rows]


# -- running -------------------------------------------------------------------------------------


Progress = Callable[[int, int | None, str | None], Awaitable[None]]


async def no_progress(done: int, total: int | None, step: str | None) -> None:
    """For an action run outside a job."""


@dataclass(frozen=True)
class JobContext:
    conn: asyncpg.Connection  # inside the transaction that commits the job's success
    job: Job
    progress: Progress


@dataclass(frozen=True)
class JobKind:
    """What a worker does for one kind of job, and what it records when the job fails for good."""
    run: Callable[[JobContext], Awaitable[dict[str, Any]]]
    failed: Callable[[asyncpg.Connection, Job, dict[str, Any]], Awaitable[None]] | None = None


_CLAIM = f"""
UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_holder = $1,
       lease_expires_at = clock_timestamp() + make_interval(secs => $2),
       started_at = coalesce(started_at, clock_timestamp()), progress_done = 0, progress_step = NULL,
       updated_at = clock_timestamp()
WHERE id = (SELECT id FROM jobs
            WHERE kind = ANY($3::text[])
              AND ((state = 'queued' AND not_before <= clock_timestamp())
                   OR (state = 'running' AND lease_expires_at < clock_timestamp()))
            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING {_COLUMNS}"""

_RENEW = """
UPDATE jobs SET lease_expires_at = clock_timestamp() + make_interval(secs => $3)
WHERE id = $1 AND lease_holder = $2 AND state = 'running' RETURNING id"""

_PROGRESS = """
UPDATE jobs SET progress_done = $3, progress_total = coalesce($4, progress_total),
       progress_step = coalesce($5, progress_step), updated_at = clock_timestamp()
WHERE id = $1 AND lease_holder = $2 AND state = 'running'"""

_SUCCEED = f"""
UPDATE jobs SET state = 'succeeded', result = $3, finished_at = clock_timestamp(), updated_at = clock_timestamp(),
       progress_done = coalesce(progress_total, progress_done), lease_expires_at = NULL, error = NULL
WHERE id = $1 AND lease_holder = $2 AND state = 'running' RETURNING {_COLUMNS}"""

_FAIL = f"""
UPDATE jobs SET state = CASE WHEN $4 AND attempts < max_attempts THEN 'queued' ELSE 'failed' END,
       error = $3, lease_expires_at = NULL, updated_at = clock_timestamp(),
       not_before = clock_timestamp() + make_interval(secs => $5),
       finished_at = CASE WHEN $4 AND attempts < max_attempts THEN NULL ELSE clock_timestamp() END
WHERE id = $1 AND lease_holder = $2 AND state = 'running' RETURNING {_COLUMNS}"""


@dataclass
class JobRunner:
    """One worker's loop: claim a job of a kind it knows, run it under its lease, repeat."""
    pool: asyncpg.Pool
    kinds: Mapping[str, JobKind]
    lease_ttl_s: float = 30.0
    poll_s: float = 0.5
    holder: str = field(default_factory=process_holder)

    async def claim(self) -> Job | None:
        row = await self.pool.fetchrow(_CLAIM, self.holder, self.lease_ttl_s, list(self.kinds))
        if row is None:
            return None
        job = _from_row(row)
        if job.attempts > job.max_attempts:  # its workers kept dying: stop handing it out
            await self._fail(job, {"code": "attempts_exhausted",
                                   "detail": f"no worker finished it in {job.max_attempts} attempts"},
                             retry=False)
            return None
        return job

    async def run_once(self) -> Job | None:
        """Claim and run one job; None when nothing was due."""
        job = await self.claim()
        if job is None:
            return None
        log.info("job %d (%s): attempt %d", job.id, job.kind, job.attempts)
        keeper = asyncio.create_task(self._keep(job), name=f"job-lease:{job.id}")
        started = time.monotonic()
        try:
            ended = await self._run(job)
            outcome = ended.state if ended.lease_holder == self.holder else "taken_over"
            JOBS_ENDED.labels(job.kind, outcome).inc()
            return ended
        finally:
            JOB_SECONDS.labels(job.kind).observe(time.monotonic() - started)
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def run_until_idle(self) -> list[Job]:
        """Run every due job, then return them (tests and one-shot commands)."""
        done: list[Job] = []
        while (job := await self.run_once()) is not None:
            done.append(job)
        return done

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                job = await self.run_once()
            except TRANSIENT as exc:
                log.warning("jobs: database unavailable, retrying: %s", exc)
                job = None
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)

    async def _run(self, job: Job) -> Job:
        kind = self.kinds[job.kind]
        last = 0.0

        async def progress(done: int, total: int | None, step: str | None) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < PROGRESS_EVERY_S and (total is None or done < total) and step is None:
                return
            last = now
            with contextlib.suppress(*TRANSIENT):
                await self.pool.execute(_PROGRESS, job.id, self.holder, done, total, step)

        try:
            async with self.pool.acquire() as conn, conn.transaction():
                result = await kind.run(JobContext(conn, job, progress))
                row = await conn.fetchrow(_SUCCEED, job.id, self.holder, result)
                if row is None:  # another worker took the job over: this attempt's effect rolls back
                    raise LeaseLost(f"job #{job.id} was taken over by another worker", code="lease_lost")
            log.info("job %d (%s): succeeded", job.id, job.kind)
            return _from_row(row)
        except LeaseLost:
            log.warning("job %d (%s): lease lost; its work was rolled back", job.id, job.kind)
            return await fetch(self.pool, job.id)
        except DomainError as exc:
            log.info("job %d (%s): failed: %s", job.id, job.kind, exc)
            error = {"code": exc.code, "detail": exc.detail, **exc.extra}
            return await self._fail(job, error, retry=False)
        except Exception as exc:
            log.exception("job %d (%s): attempt %d broke", job.id, job.kind, job.attempts)
            return await self._fail(job, {"code": "job_error", "detail": f"{type(exc).__name__}: {exc}"},
                                    retry=True)

    async def _fail(self, job: Job, error: dict[str, Any], retry: bool) -> Job:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_FAIL, job.id, self.holder, error, retry, RETRY_AFTER_S)
            if row is None:
                return await fetch(conn, job.id)
            failed = _from_row(row)
            if failed.state == "failed":
                kind = self.kinds.get(job.kind)
                if kind is not None and kind.failed is not None:
                    await kind.failed(conn, failed, error)
                await audit_log.append(conn, actor=f"worker:{self.holder}", action=f"job.failed.{job.kind}",
                                       subject=str(job.id), details={"error": error, "args": job.args})
        return failed

    async def _keep(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl_s / 3)
            try:
                if await self.pool.fetchval(_RENEW, job.id, self.holder, self.lease_ttl_s) is None:
                    log.warning("job %d: another worker holds it now", job.id)
                    return
            except TRANSIENT as exc:
                log.warning("job %d: lease renewal failed, retrying: %s", job.id, exc)


async def retry(conn: asyncpg.Connection, job_id: int, actor: str,
                requeued: Callable[[asyncpg.Connection, Job], Awaitable[None]] | None = None) -> Job:
    """An operator queues a failed job again, from scratch."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE jobs SET state = 'queued', attempts = 0, not_before = clock_timestamp(), lease_holder = NULL,
                       finished_at = NULL, progress_done = 0, progress_step = NULL, updated_at = clock_timestamp()
                WHERE id = $1 AND state = 'failed' RETURNING {_COLUMNS}""", job_id)
        if row is None:
            current = await fetch(conn, job_id)
            raise WrongState(f"job #{job_id} is {current.state}; only a failed job is retried",
                             code="job_not_failed", job_state=current.state)
        job = _from_row(row)
        if requeued is not None:
            await requeued(conn, job)
        await audit_log.append(conn, actor=actor, action=f"job.retry.{job.kind}", subject=str(job_id),
                               details={"previous_error": job.error})
    return job
