"""Leases: one holder at a time for a singleton, on a row that expires unless it is renewed.

The singletons (the issuance dispatcher, which also runs the deadline jobs; a campaign's expiry;
a reconciliation round) once held session advisory locks. A session lock lives on one server
connection: behind PgBouncer in transaction mode that connection goes back to the pooler with the
lock on it, the next client to get it holds the lock, and a pooled connection stays parked for as
long as the leader lives. A lease is a row in `leases` (name, holder, expires_at) written by
single statements, so it works through any pooler:

* `take` claims the row when it is free, expired, or already this holder's;
* `renew` pushes the expiry out, and fails once another holder has taken the row over. Inside a
  transaction it is also the fence: it locks the row until commit, so nobody takes the lease over
  while that transaction writes, and a holder that lost the lease writes nothing. Work that must
  not be done twice goes in transactions that `fence` first;
* `release` expires the row at once, so a holder that stops is replaced without waiting;
* `kept` renews in the background while the holder works, and marks the lease lost when it fails.

A holder killed without releasing is replaced once its lease expires: `ttl_s` bounds how long
the others wait. The times are the database's, so the holders' clocks do not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeAlias

import asyncpg

from kernel.errors import Conflict

log = logging.getLogger("stimulus.leases")

TRANSIENT = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

_TAKE = """
INSERT INTO leases AS l (name, holder, expires_at)
VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
    SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at, renewed_at = clock_timestamp(),
        term = l.term + (l.holder <> EXCLUDED.holder)::int,
        taken_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.taken_at ELSE clock_timestamp() END
    WHERE l.expires_at < clock_timestamp() OR l.holder = EXCLUDED.holder
RETURNING term"""

_RENEW = """
UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => $3), renewed_at = clock_timestamp()
WHERE name = $1 AND holder = $2
RETURNING term"""

_RELEASE = "UPDATE leases SET expires_at = clock_timestamp() WHERE name = $1 AND holder = $2"

Database: TypeAlias = asyncpg.Pool | asyncpg.Connection


class LeaseLost(Conflict):
    code = "lease_lost"
    title = "Another holder took the lease over"


def process_holder() -> str:
    """Who holds: the host and process (so an operator can find it), and a random part (so two
    leases taken in one process, or a restarted process with the same pid, are told apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class Lease:
    name: str
    ttl_s: float
    holder: str = field(default_factory=process_holder)
    term: int = 0          # the term held; 0 while not held
    lost: bool = False     # set when a renewal found another holder (or none for a whole ttl)

    @property
    def held(self) -> bool:
        return self.term > 0 and not self.lost

    async def take(self, db: Database) -> bool:
        term = await db.fetchval(_TAKE, self.name, self.holder, self.ttl_s)
        if term is None:
            return False
        self.term, self.lost = int(term), False
        return True

    async def renew(self, db: Database) -> bool:
        """Push the expiry out; False (and the lease marked lost) when another holder has it."""
        term = await db.fetchval(_RENEW, self.name, self.holder, self.ttl_s)
        if term is None:
            self.lost = True
            return False
        return True

    async def fence(self, conn: asyncpg.Connection) -> None:
        """Inside a transaction: renew, and hold the row until commit; LeaseLost if it is not ours."""
        if not await self.renew(conn):
            raise LeaseLost(f"the lease {self.name!r} was taken over", code="lease_lost")

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(f"the lease {self.name!r} was lost", code="lease_lost")

    async def release(self, db: Database) -> None:
        """Expire the lease now (best effort: an unreachable database lets it expire by itself)."""
        term, self.term = self.term, 0
        if term:
            with contextlib.suppress(*TRANSIENT):
                await db.execute(_RELEASE, self.name, self.holder)

    def keep(self, pool: asyncpg.Pool, every_s: float | None = None) -> asyncio.Task[None]:
        """Renew in the background (every third of the ttl) until the task is cancelled."""
        return asyncio.create_task(self._keep(pool, every_s or self.ttl_s / 3), name=f"lease:{self.name}")

    @contextlib.asynccontextmanager
    async def kept(self, pool: asyncpg.Pool, every_s: float | None = None) -> AsyncIterator[Lease]:
        """Renew in the background for the duration of the block."""
        task = self.keep(pool, every_s)
        try:
            yield self
        finally:
            await stop_keeping(task)

    async def _keep(self, pool: asyncpg.Pool, every_s: float) -> None:
        renewed = time.monotonic()
        while not self.lost:
            await asyncio.sleep(every_s)
            try:
                if not await self.renew(pool):
                    log.warning("lease %s (term %d): taken over by another holder", self.name, self.term)
                    return
                renewed = time.monotonic()
            except TRANSIENT as exc:
                if time.monotonic() - renewed >= self.ttl_s:
                    # Unrenewed for a whole ttl: another holder may have it by now.
                    self.lost = True
                    log.warning("lease %s: not renewed for %.0f s (%s); treating it as lost",
                                self.name, self.ttl_s, exc)
                    return
                log.warning("lease %s: renewal failed, retrying: %s", self.name, exc)
            except Exception:  # a keeper that cannot go on must not leave its holder believing it leads
                self.lost = True
                log.exception("lease %s: renewal broke; treating the lease as lost", self.name)
                return


async def stop_keeping(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def current_holder(db: Database, name: str) -> tuple[str, int] | None:
    """The live holder and term of a lease, or None when it is free or expired."""
    row = await db.fetchrow("SELECT holder, term FROM leases WHERE name = $1 AND expires_at > clock_timestamp()",
                            name)
    return None if row is None else (row["holder"], int(row["term"]))
