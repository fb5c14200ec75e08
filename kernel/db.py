"""The asyncpg pool, direct connections, and the migration runner.

Behind PgBouncer in transaction mode (`STIMULUS_DB_POOLER=pgbouncer`) every transaction, and every
statement outside one, may run on another server connection. So asyncpg's prepared-statement cache
is off there: each statement is then parsed unnamed in the same round trip as its execution, which
works on every PgBouncer version whatever its `max_prepared_statements`. Nothing in stimulus keeps
session state (no session advisory lock, LISTEN or SET outside a transaction; temporary tables are
created inside the transaction that fills them), so the whole product runs through the pooler;
`DATABASE_DIRECT_URL`, when given, is used for migrations only, whose DDL may wait on locks
longer than a pooler lets a query run.

Migrations are numbered plain SQL files in each package's `migrations/` folder
(`kernel/migrations`, `lottery/migrations`, ...), applied in number order, each in its own
transaction, and recorded in `schema_migrations`; applying twice is a no-op. Number ranges keep the
packages apart: 0001-0099 stimulus, 0100-0199 lottery, 0200-0299 wallet_adapter, 0300-0399 merchants.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram

log = logging.getLogger("stimulus.db")

MIGRATION_PACKAGES = ("kernel", "lottery", "wallet_adapter", "merchants")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# One advisory lock id for the migration runner, so concurrent starts apply each file once. It is
# taken per transaction, never per session, so migrating through a pooler is safe too.
_MIGRATION_LOCK_ID = 0x5717_0001
POOLERS = ("none", "pgbouncer")
# How long the API held a connection (the wait for it included): the margin under its deadline.
HOLD_SECONDS = Histogram("stimulus_db_hold_seconds", "How long a request's database work held a connection",
                         buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30))
DEADLINES_MISSED = Counter("stimulus_db_deadlines_missed_total",
                           "Connections the API closed under their holder at the request deadline")


def connect_options(pooler: str) -> dict[str, Any]:
    """asyncpg options for a connection through `pooler`."""
    if pooler not in POOLERS:
        raise ValueError(f"unknown database pooler {pooler!r} (one of {', '.join(POOLERS)})")
    return {"statement_cache_size": 0} if pooler == "pgbouncer" else {}


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary format (a version byte, then the JSON text) so jsonb columns also work with COPY.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + json.dumps(value, separators=(",", ":")).encode(),
        decoder=lambda data: json.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Connections carry no session state, so the default reset round trip is wasted."""


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no types
    """The API's pool: each hold of a connection, the wait for it included, ends by a deadline.

    At the deadline the connection is closed under its holder, who sees TimeoutError (which the
    API answers with 503). asyncpg's own statement timeout is no use against a hung server
    (SIGSTOP): it asks the server to cancel on a new connection, which the kernel accepts and
    nothing answers, and waits for that before the connection can be released or a transaction
    rolled back, so a request took twice its timeout or more. Closing the socket needs no answer:
    the server ends the session, rolling back any open transaction, when it next looks at it.
    `unhurried(deadline_s)` gives a longer deadline to the few operator calls that import or
    aggregate a whole file or campaign.
    """

    __slots__ = ("_deadline_s",)

    def __init__(self, *args: Any, deadline_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline_s = deadline_s

    def acquire(self, *, timeout: float | None = None, deadline_s: float | None = None) -> HeldConnection:
        return HeldConnection(self, self._deadline_s if deadline_s is None else deadline_s, timeout)

    def unhurried(self, deadline_s: float) -> UnhurriedPool:
        """The same connections for work that may take longer: `deadline_s` bounds each hold."""
        return UnhurriedPool(self, deadline_s)


class UnhurriedPool:
    """A BoundedPool seen with a longer deadline, with the pool methods callers use."""

    __slots__ = ("_deadline_s", "_pool")

    def __init__(self, pool: BoundedPool, deadline_s: float) -> None:
        self._pool = pool
        self._deadline_s = deadline_s

    def acquire(self, *, timeout: float | None = None) -> HeldConnection:
        return HeldConnection(self._pool, self._deadline_s, timeout)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            return str(await conn.execute(query, *args))

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        async with self.acquire() as conn:
            return list(await conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any, column: int = 0) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args, column=column)


class HeldConnection:
    """`async with pool.acquire() as conn` on a BoundedPool (awaiting it acquires without a deadline
    on the hold, as asyncpg does).

    One timer bounds both the wait for a connection and its hold: while waiting it cancels the
    waiting task (TimeoutError, as `asyncio.timeout` would), once held it closes the connection.
    asyncpg's own acquire timeout would add an `asyncio.timeout` context to every acquisition and
    another to its release; one timer handle per request is all the deadline needs.
    """

    __slots__ = ("_acquire_timeout_s", "_alarm", "_cancelling", "_conn", "_deadline_s", "_expired", "_pool",
                 "_started", "_task")

    def __init__(self, pool: BoundedPool, deadline_s: float, acquire_timeout_s: float | None) -> None:
        self._pool = pool
        self._deadline_s = deadline_s
        self._acquire_timeout_s = deadline_s if acquire_timeout_s is None else min(acquire_timeout_s, deadline_s)
        self._conn: Any = None
        self._alarm: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._expired = False
        self._started = 0.0

    def __await__(self) -> Any:
        return asyncpg.Pool.acquire(self._pool, timeout=self._acquire_timeout_s).__await__()

    async def __aenter__(self) -> Any:
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        if self._acquire_timeout_s < self._deadline_s:  # a shorter wait asked for: asyncpg's own bound
            try:
                self._conn = await asyncpg.Pool.acquire(self._pool, timeout=self._acquire_timeout_s)
            except BaseException:
                HOLD_SECONDS.observe(loop.time() - self._started)
                raise
            self._alarm = loop.call_at(self._started + self._deadline_s, self._expire)
            return self._conn
        task = self._task = asyncio.current_task()
        assert task is not None
        self._cancelling = task.cancelling()
        self._alarm = loop.call_at(self._started + self._deadline_s, self._expire)
        try:
            self._conn = await asyncpg.Pool.acquire(self._pool)
        except asyncio.CancelledError as exc:
            self._alarm.cancel()
            HOLD_SECONDS.observe(loop.time() - self._started)
            if self._expired and task.uncancel() <= self._cancelling:
                raise TimeoutError(f"no database connection within the {self._deadline_s:.1f} s deadline") from exc
            raise
        except BaseException:
            self._alarm.cancel()
            HOLD_SECONDS.observe(loop.time() - self._started)
            raise
        return self._conn

    def _expire(self) -> None:
        self._expired = True
        if self._conn is None:  # still waiting for a connection (or opening one)
            assert self._task is not None
            self._task.cancel()
            return
        DEADLINES_MISSED.inc()
        log.warning("a database connection outlived its %.1f s deadline: closed", self._deadline_s)
        self._conn.terminate()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: Any) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        HOLD_SECONDS.observe(asyncio.get_running_loop().time() - self._started)
        # The release's bound, as asyncpg's acquire timeout set it: a connection left inside a
        # transaction is rolled back on release, and a hung server must not keep that waiting.
        await self._pool.release(self._conn, timeout=self._deadline_s)
        if self._expired and exc is not None and not isinstance(exc, TimeoutError):
            # What asyncpg raises on a connection closed mid-use varies (connection lost, released
            # to the pool, closed); the caller's one error is the deadline.
            raise TimeoutError(f"database work exceeded its {self._deadline_s:.1f} s deadline") from exc


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 16,
                      command_timeout_s: float = 30, *, pooler: str = "none",
                      deadline_s: float | None = None) -> asyncpg.Pool:
    """The pool; with `deadline_s`, a BoundedPool: waiting for a connection (opening one included)
    and holding it end by then, so the API answers 503 rather than queue behind a dead server.
    `command_timeout_s` stays the backstop of a statement (and of a hold given a longer deadline)."""
    if deadline_s is not None:
        bounded = BoundedPool(
            dsn, **connect_options(pooler), deadline_s=deadline_s,
            connection_class=asyncpg.Connection, record_class=asyncpg.Record,
            min_size=min_size, max_size=max_size, max_queries=50_000, loop=None, command_timeout=command_timeout_s,
            init=_init_connection, reset=_no_reset, max_inactive_connection_lifetime=300)
        await bounded
        return bounded
    pool = await asyncpg.create_pool(
        dsn,
        **connect_options(pooler),
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout_s,
        init=_init_connection,
        reset=_no_reset,
        max_inactive_connection_lifetime=300,
    )
    assert pool is not None
    return pool


async def connect(dsn: str, *, pooler: str = "none") -> asyncpg.Connection:
    """One connection outside any pool (CLI commands, migrations), with the pool's codecs."""
    conn = await asyncpg.connect(dsn, **connect_options(pooler))
    await _init_connection(conn)
    return conn


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    package: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover_migrations() -> list[Migration]:
    found: list[Migration] = []
    for package in MIGRATION_PACKAGES:
        try:
            folder = importlib.resources.files(package) / "migrations"
        except ModuleNotFoundError:
            continue
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = _MIGRATION_NAME.match(entry.name)
            if match:
                found.append(Migration(int(match.group(1)), entry.name, package, entry.read_text()))
    found.sort(key=lambda m: m.number)
    numbers = [m.number for m in found]
    if len(numbers) != len(set(numbers)):
        raise RuntimeError(f"duplicate migration numbers: {numbers}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; returns the names applied now.

    Each file runs in its own transaction under a transaction-level advisory lock and is applied
    only if `schema_migrations` does not list it yet, so concurrent starts apply it once.
    """
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_ID)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   number integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT number, name, checksum FROM schema_migrations")
    done: dict[int, Any] = {r["number"]: r for r in rows}
    for migration in discover_migrations():
        previous = done.get(migration.number)
        if previous is not None:
            if previous["checksum"] != migration.checksum:
                log.warning("migration %s changed after it was applied", migration.name)
            continue
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_ID)
            if await conn.fetchval("SELECT 1 FROM schema_migrations WHERE number = $1", migration.number):
                continue  # another process applied it meanwhile
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (number, name, checksum) VALUES ($1, $2, $3)",
                migration.number, migration.name, migration.checksum,
            )
        applied_now.append(migration.name)
        log.info("applied migration %s", migration.name)
    return applied_now
