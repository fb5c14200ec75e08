"""`stimulus jobs list|show|retry` and `stimulus worker jobs`: jobs from the command line.

`follow` draws a job's progress bar until it ends; `stimulus approve` uses it too.
"""

from __future__ import annotations

import asyncio
import json
import sys

import asyncpg
import click
import msgspec
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stimulus import approvals, jobs
from stimulus.cli import console, run_db
from stimulus.jobs import Job
from stimulus.settings import load_settings

FOLLOW_EVERY_S = 0.3


async def follow(conn: asyncpg.Connection, job_id: int) -> Job:
    """Show the job's progress until it succeeds or fails; returns it as it ended."""
    columns = (TextColumn("job #{task.fields[job_id]} {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("queued", total=None, job_id=job_id)
        while True:
            job = await jobs.fetch(conn, job_id)
            label = f"{job.kind}: {job.progress_step or job.state}"
            bar.update(task, description=label, completed=job.progress_done, total=job.progress_total)
            if job.state in ("succeeded", "failed"):
                return job
            await asyncio.sleep(FOLLOW_EVERY_S)


def echo_job(job: Job) -> None:
    click.echo(json.dumps(msgspec.to_builtins(job), indent=2, default=str))


def exit_for(job: Job) -> None:
    if job.state == "failed":
        raise click.ClickException(f"job #{job.id} failed: {json.dumps(job.error)}")


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
@click.option("--token", envvar="STIMULUS_TOKEN", required=True, help="operator token")
@click.option("--follow", "follow_", is_flag=True, help="draw a progress bar until the job ends")
def jobs_retry(job_id: int, token: str, follow_: bool) -> None:
    """Queue a failed job again (it runs from scratch)."""
    from stimulus import auth

    async def go(conn: asyncpg.Connection) -> Job:
        operator = await auth.principal_from_token(conn, token)  # type: ignore[arg-type]
        auth.require_role(operator, "operator")
        job = await jobs.retry(conn, job_id, operator.actor, approvals.requeued)
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
