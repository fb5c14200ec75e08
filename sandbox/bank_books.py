"""The sandbox bank's writer and readers over its SQLite books.

Every write (credit, batch, spend, refund, reclaim) goes through one writer thread that drains
whatever requests are waiting (up to `MAX_GROUP_COMMIT`), applies them in order inside one
transaction (one savepoint each, so one refusal or bug spoils only its own request) and commits
with `synchronous=FULL` before any of them is answered: one fsync per group instead of one per
credit. Reads run on a small pool of read-only connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from sandbox.bank_records import (
    MAX_GROUP_COMMIT,
    MAX_PENDING_WRITES,
    READER_THREADS,
    SCHEMA,
    SQLITE_CACHE_KIB,
    SQLITE_MMAP_BYTES,
    Refusal,
    record_credits,
)
from wallet_adapter.bank_protocol import (
    CreditRequest,
    CreditResult,
)

log = logging.getLogger("sandbox.bank")

T = TypeVar("T")


@dataclass(slots=True)
class _Job:
    apply: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _CreditJob:
    """Credits are the hot path: consecutive credit jobs are applied together, set-wise."""

    bank_code: str
    items: list[CreditRequest]
    future: asyncio.Future[Any]


_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class Books:
    """The bank's SQLite file: one group-committing writer thread, a few reader threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_Job | _CreditJob | None] = queue.SimpleQueue()
        self._pending = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connect(self, *, read_only: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=30)
        # Keep the books' pages in memory: every page read is a syscall otherwise, and syscalls
        # are what this machine is slowest at (random keys touch pages all over the B-trees).
        conn.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        conn.execute(f"PRAGMA mmap_size = {SQLITE_MMAP_BYTES}")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        else:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")  # WAL + NORMAL may lose the last commits
        return conn

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect(read_only=False)
        conn.executescript(SCHEMA)
        self._loop = loop
        self._writer = threading.Thread(target=self._write_loop, args=(conn,),
                                        name="bank-writer", daemon=True)
        self._writer.start()
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="bank-reader")

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        with self._lock:
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()

    async def write(self, apply: Callable[[sqlite3.Connection], T]) -> T:
        """Run `apply` in the writer's next transaction; return once that has committed."""
        future = self._enqueue(lambda f: _Job(apply, f))
        return cast(T, await future)

    async def credit(self, bank_code: str,
                     items: list[CreditRequest]) -> list[CreditResult | Refusal]:
        """Apply credits in the writer's next transaction; return once that has committed."""
        future = self._enqueue(lambda f: _CreditJob(bank_code, items, f))
        return cast(list[CreditResult | Refusal], await future)

    def _enqueue(self, job: Callable[[asyncio.Future[Any]], _Job | _CreditJob]
                 ) -> asyncio.Future[Any]:
        if self._writer is None:
            raise Refusal(503, "unavailable", "the bank is closing; nothing was done")
        if self._pending >= MAX_PENDING_WRITES:
            raise Refusal(503, "unavailable", "too many writes waiting; nothing was done")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending += 1
        self._queue.put(job(future))
        return future

    async def read(self, fetch: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fetch` on a read-only connection, in one snapshot."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._read, fetch)

    def _read(self, fetch: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(read_only=True)
            self._local.conn = conn
            with self._lock:
                self._reader_connections.append(conn)
        conn.execute("BEGIN")
        try:
            return fetch(conn)
        finally:
            conn.execute("COMMIT")

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        assert self._loop is not None
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                group = [job]
                stopping = False
                while len(group) < MAX_GROUP_COMMIT:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stopping = True
                        break
                    group.append(job)
                self._loop.call_soon_threadsafe(self._settle, self._commit(conn, group))
                if stopping:
                    return
        finally:
            conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, group: list[_Job | _CreditJob]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            start = 0
            while start < len(group):
                job = group[start]
                if isinstance(job, _CreditJob):
                    end = start
                    while end < len(group) and isinstance(group[end], _CreditJob):
                        end += 1
                    segment = cast(list[_CreditJob], group[start:end])
                    results = record_credits(conn, [(j.bank_code, item) for j in segment
                                                    for item in j.items])
                    offset = 0
                    for credit_job in segment:
                        count = len(credit_job.items)
                        outcomes.append((credit_job.future, results[offset:offset + count], None))
                        offset += count
                    start = end
                    continue
                conn.execute("SAVEPOINT job")
                try:
                    outcomes.append((job.future, job.apply(conn), None))
                except Exception as exc:  # a refusal, or a bug: it spoils this request only
                    conn.execute("ROLLBACK TO job")
                    outcomes.append((job.future, None, exc))
                conn.execute("RELEASE job")
                start += 1
            conn.execute("COMMIT")
        except Exception:  # nothing of the group is durable: every request in it fails
            log.exception("the group commit of %d requests failed", len(group))
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            failure = Refusal(503, "unavailable", "the bank could not store the request")
            return [(job.future, None, failure) for job in group]
        return outcomes

    def _settle(self, outcomes: list[_Outcome]) -> None:
        self._pending -= len(outcomes)
        for future, value, error in outcomes:
            if future.done():  # the caller went away; the effect stands, as at a real bank
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
