"""What every command-line module shares, so that a command reads the same whichever package
mounts it: the operator's token option, running a coroutine against the configured (or embedded)
servers, a domain error shown as the command's error, JSON output, a job's progress bar, and a
worker's loop run until SIGINT or SIGTERM.

stimulus.cli mounts the commands; the domain packages' command modules build on these helpers
instead of each keeping its own copy.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import asyncpg
import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kernel import auth, jobs
from kernel.db import connect, create_pool
from kernel.errors import DomainError
from kernel.jobs import Job
from kernel.observability import configure_logging
from kernel.servers import migrate_sync, start_stack
from kernel.settings import Settings, load_settings

T = TypeVar("T")

console = Console(stderr=True)
FOLLOW_EVERY_S = 0.3

token_option = click.option("--token", envvar="STIMULUS_TOKEN", required=True,
                            help="the operator's bearer token (or STIMULUS_TOKEN)")


def echo_json(value: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value)).decode())


async def require_operator(conn: asyncpg.Connection | asyncpg.Pool, token: str) -> auth.Principal:
    """The operator a bearer token names: maker-checker holds on the command line as over HTTP."""
    principal = await auth.principal_from_token(conn, token)  # type: ignore[arg-type]
    return auth.require_role(principal, "operator")


@contextmanager
def domain_errors_refused() -> Iterator[None]:
    """A domain error ends the command with its code and detail, not a traceback."""
    try:
        yield
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc.detail}") from exc


@contextmanager
def _servers(need_redis: bool) -> Iterator[Settings]:
    """The configured (or embedded) servers, the database migrated; embedded ones stop after."""
    stack = start_stack(load_settings(), need_redis=need_redis)
    try:
        migrate_sync(stack.settings)
        yield stack.settings
    finally:
        stack.stop()


def run_db(fn: Callable[[asyncpg.Connection], Awaitable[T]], need_redis: bool = False) -> T:
    """Run `fn` with a connection to the configured (or embedded) database."""
    async def go(settings: Settings) -> T:
        assert settings.database_url
        conn = await connect(settings.database_url, pooler=settings.db_pooler)
        try:
            return await fn(conn)
        finally:
            await conn.close()
    with _servers(need_redis) as settings:
        return asyncio.run(go(settings))


def run(fn: Callable[[asyncpg.Connection], Awaitable[T]], need_redis: bool = False) -> T:
    """`run_db`, with a domain error shown as the command's error."""
    with domain_errors_refused():
        return run_db(fn, need_redis)


def run_with_pool(fn: Callable[[Settings, asyncpg.Pool], Awaitable[T]], need_redis: bool = False) -> T:
    """Run `fn` with a pool on the configured (or embedded) servers; a domain error is the
    command's error."""
    async def go(settings: Settings) -> T:
        assert settings.database_url
        pool = await create_pool(settings.database_url, 1, 8, pooler=settings.db_pooler)
        try:
            return await fn(settings, pool)
        finally:
            await pool.close()
    with _servers(need_redis) as settings, domain_errors_refused():
        return asyncio.run(go(settings))


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


def worker_settings(need_redis: bool = False) -> Settings:
    """A worker's settings, its logging configured; refuses to start without its servers' URLs."""
    settings = load_settings()
    configure_logging(settings.log_level)
    if settings.database_url is None or (need_redis and settings.redis_url is None):
        needed = "DATABASE_URL and REDIS_URL" if need_redis else "DATABASE_URL"
        raise click.ClickException(f"{needed} must be set (stimulus up sets them for its workers)")
    return settings


@asynccontextmanager
async def worker_pool(settings: Settings, max_size: int) -> AsyncIterator[asyncpg.Pool]:
    """A worker's pool on the configured database, closed when the worker stops."""
    assert settings.database_url, "worker_settings refuses a worker without DATABASE_URL"
    pool = await create_pool(settings.database_url, 1, max_size, settings.db_command_timeout_s,
                             pooler=settings.db_pooler)
    try:
        yield pool
    finally:
        await pool.close()


def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a worker's loop on uvloop; SIGINT or SIGTERM sets the stop event it watches."""
    import uvloop

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    uvloop.run(go())
