"""`stimulus jobs list|show|retry` and `stimulus worker jobs`: jobs from the command line."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import click

from kernel import approvals, jobs
from kernel.command_line import echo_job, exit_for, follow, require_operator, run_db, token_option
from kernel.jobs import Job
from kernel.settings import load_settings


@click.group("jobs")
def jobs_group() -> None:
    """Long actions (commitment, draw, bulk issuance) run by `stimulus worker jobs`."""


@jobs_group.command("list")
@click.option("--state", type=click.Choice(jobs.STATES))
def jobs_list(state: str | None) -> None:
    async def go(conn: asyncpg.Connection) -> list[Job]:
        return await jobs.list_recent(conn, state)
    for job in run_db(go):
        total = "?" if job.progress_total is None else job.progress_total
        click.echo(f"#{job.id}\t{job.kind}\t{job.state}\t{job.progress_done}/{total}\t{job.created_at:%Y-%m-%d %H:%M:%S}")


@jobs_group.command("show")
@click.argument("job_id", type=int)
@click.option("--follow", "follow_", is_flag=True, help="draw a progress bar until the job ends")
def jobs_show(job_id: int, follow_: bool) -> None:
    async def go(conn: asyncpg.Connection) -> Job:
        return await (follow(conn, job_id) if follow_ else jobs.fetch(conn, job_id))
    job = run_db(go)
    echo_job(job)
    if follow_:
        exit_for(job)


@jobs_group.command("retry")
@click.argument("job_id", type=int)
@token_option
@click.option("--follow", "follow_", is_flag=True, help="draw a progress bar until the job ends")
def jobs_retry(job_id: int, token: str, follow_: bool) -> None:
    """Queue a failed job again (it runs from scratch)."""
    async def go(conn: asyncpg.Connection) -> Job:
        actor = (await require_operator(conn, token)).actor
        job = await jobs.retry(conn, job_id, actor, approvals.requeued)
        return await follow(conn, job.id) if follow_ else job
    job = run_db(go)
    echo_job(job)
    exit_for(job)


@click.command("jobs")
@click.option("--lease-s", type=float, default=30.0, show_default=True, envvar="STIMULUS_JOB_LEASE_S",
              help="how long a job stays with a worker that stopped renewing it")
def jobs_worker(lease_s: float) -> None:
    """Run queued jobs (approved commitments, draws, bulk issuance) until interrupted."""
    from stimulus import jobs_worker as worker_module

    asyncio.run(worker_module.run_forever(load_settings(), lease_s))
    sys.exit(0)


commands = [jobs_group]
worker_subcommands = [jobs_worker]
