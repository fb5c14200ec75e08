"""The issuance dispatcher: moves outbox rows from PostgreSQL onto one Redis stream per bank.

PostgreSQL is the truth and Redis may forget: a restart, a failover or a FLUSHALL can drop
entries. So the dispatcher remembers which entry carries which rows, checks that those entries
still exist, and puts rows whose entry vanished (while the rows are not done) back to
"unpublished"; rows published long ago on an entry it does not know (after its own restart) are
put back after `republish_after_s`. Workers commit outcomes before they delete an entry, so a
vanished entry with open rows means lost work, never finished work. Duplicates this may create
are harmless: a worker skips a row that is done.

It publishes only while a stream holds fewer than `max_entries` entries, so Redis holds a few
seconds of work per bank, not the whole campaign. One dispatcher leads, holding the
`issuance-dispatcher` lease (`kernel.leases`: a row renewed every few seconds, so it works behind
PgBouncer in transaction mode); the others wait, and take over within `lease_ttl_s` of a leader
that died. Every write that moves outbox rows renews the lease first in its own transaction, so a
leader that lost the lease (paused, cut off) publishes nothing a new leader also publishes. The
leader also runs the deadline jobs: after a campaign's claim deadline,
unclaimed packets are cancelled back to the budget and claims close; after its spending deadline,
the packets expire and their unspent balances are reclaimed from the banks (`expiry.expire`, run
again each round until nothing is left), so no operator has to be awake at midnight for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from kernel.errors import WrongState
from kernel.leases import Lease, LeaseLost, stop_keeping
from lottery import campaigns
from wallet_adapter import expiry, issuance, streams
from wallet_adapter.banks import BankRegistry
from wallet_adapter.progress import CANCELLED, OUTBOX_OPEN, REPUBLISHED

log = logging.getLogger("wallet_adapter.outbox")

LEADER_LEASE = "issuance-dispatcher"
TRANSIENT = (asyncpg.PostgresError, asyncpg.InterfaceError, RedisError, OSError, TimeoutError)
ACTOR = "system:issuance-dispatcher"
# Drawn and not yet expired: the states in which packets can still hold money at the banks.
EXPIRABLE_CAMPAIGN_STATES = ("drawn", "issuing", "spending")
REPORT_EVERY_S = 10


@dataclass(frozen=True)
class DispatcherOptions:
    prefix: str = streams.DEFAULT_PREFIX
    max_entries: int = 40  # per stream: 4,000 packets waiting or in hand per bank
    poll_s: float = 0.1
    check_s: float = 2.0
    republish_after_s: float = 60.0
    deadline_job_s: float = 10.0
    gauges_s: float = 5.0
    max_backoff_s: float = 5.0
    lease_ttl_s: float = 5.0    # how long the others wait for a leader that stopped renewing
    follow_s: float = 1.0       # how often a follower tries to take the lead


@dataclass
class _Stream:
    bank_code: str
    key: str
    in_flight: dict[str, tuple[int, ...]] = field(default_factory=dict)  # entry id -> outbox ids


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, bank_codes: Sequence[str],
                 options: DispatcherOptions | None = None, banks: BankRegistry | None = None) -> None:
        self.pool = pool
        self.redis = redis
        self.options = opts = options or DispatcherOptions()
        self.banks = banks  # for the claim-deadline job's status queries; None skips refused packets
        self.streams = [_Stream(code, streams.stream_key(opts.prefix, code)) for code in bank_codes]
        self.lease = Lease(LEADER_LEASE, opts.lease_ttl_s)
        self._keeper: asyncio.Task[None] | None = None
        self._due: dict[str, float] = {}
        self.published = 0
        self._reported = 0

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        try:
            while not stop.is_set():
                try:
                    if not await self._lead():
                        await _wait(stop, self.options.follow_s)
                        continue
                    moved = await self.cycle()
                    failures = 0
                    if not moved:
                        await _wait(stop, self.options.poll_s)
                except LeaseLost as exc:
                    log.warning("dispatcher: %s; following", exc.detail)
                    await self._step_down()
                except TRANSIENT as exc:
                    failures += 1
                    delay = min(self.options.max_backoff_s, 0.1 * 2 ** min(failures, 6))
                    log.warning("dispatcher: %s: %s; again in %.1fs", type(exc).__name__, exc, delay)
                    await self._step_down()
                    await _wait(stop, delay)
                except Exception:  # a bug must not stop publishing for every campaign: log, back off
                    failures += 1
                    log.exception("dispatcher cycle failed")
                    await _wait(stop, self.options.max_backoff_s)
        finally:
            await self._step_down()

    async def cycle(self) -> int:
        """One round: publish what fits, and the periodic checks that are due."""
        moved = await self.publish()
        if self._is_due("check", self.options.check_s):
            await self.recover_lost()
        if self._is_due("stale", self.options.republish_after_s / 4):
            await self.republish_stale()
        if self._is_due("deadline", self.options.deadline_job_s):
            await self.claim_deadlines()
            await self.spending_deadlines()
        if self._is_due("gauges", self.options.gauges_s):
            await self.update_gauges()
        if self._is_due("report", REPORT_EVERY_S) and self.published != self._reported:
            log.info("dispatcher: %d work items published in the last %ds (%d in all)",
                     self.published - self._reported, REPORT_EVERY_S, self.published)
            self._reported = self.published
        return moved

    def _is_due(self, name: str, every_s: float) -> bool:
        now = time.monotonic()
        if now < self._due.get(name, 0.0):
            return False
        self._due[name] = now + every_s
        return True

    async def _lead(self) -> bool:
        if self._keeper is not None and self.lease.held:
            return True
        await self._step_down()
        if not await self.lease.take(self.pool):
            return False
        self._keeper = self.lease.keep(self.pool)
        log.info("dispatcher: leading (term %d, %s)", self.lease.term, self.lease.holder)
        await self.resume()
        return True

    async def _step_down(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            await stop_keeping(keeper)
            await self.lease.release(self.pool)

    async def resume(self) -> None:
        """On taking the lead: learn what the streams hold, and put back rows published on an
        entry that no longer exists (lost while no dispatcher was watching)."""
        known: list[str] = []
        for stream in self.streams:
            await streams.ensure_group(self.redis, stream.key)
            entries = await streams.all_entries(self.redis, stream.key, self.options.max_entries * 4)
            stream.in_flight = {e.entry_id: e.outbox_ids for e in entries}
            known.extend(stream.in_flight)
        async with self.pool.acquire() as conn, conn.transaction():
            await self.lease.fence(conn)
            reset = await conn.fetch(
                """UPDATE issuance_outbox SET published_at = NULL
                   WHERE done_at IS NULL AND dead_at IS NULL AND published_at IS NOT NULL
                     AND NOT (stream_entry = ANY($1::text[])) RETURNING bank_code""", known)
        self._count_republished(reset)

    async def publish(self) -> int:
        lengths = await streams.lengths(self.redis, [s.key for s in self.streams])
        moved = 0
        for stream, length in zip(self.streams, lengths, strict=True):
            room = self.options.max_entries - length
            if room > 0:
                if length == 0:
                    await streams.ensure_group(self.redis, stream.key)
                moved += await self._publish_bank(stream, room * streams.ENTRY_MAX_ITEMS)
        self.published += moved
        return moved

    async def _publish_bank(self, stream: _Stream, limit: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            await self.lease.fence(conn)
            ids = [r["id"] for r in await conn.fetch(
                """SELECT id FROM issuance_outbox
                   WHERE bank_code = $1 AND done_at IS NULL AND dead_at IS NULL AND published_at IS NULL
                     AND not_before <= now()
                   ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED""", stream.bank_code, limit)]
            if not ids:
                return 0
            size = streams.ENTRY_MAX_ITEMS
            chunks = [tuple(ids[i:i + size]) for i in range(0, len(ids), size)]
            entry_ids = await streams.publish(self.redis, stream.key, chunks)
            await conn.execute(
                """UPDATE issuance_outbox o SET published_at = now(), publish_count = publish_count + 1,
                          stream_entry = e.entry
                   FROM unnest($1::bigint[], $2::text[]) AS e(id, entry)
                   WHERE o.id = ANY($1::bigint[]) AND o.id = e.id""",
                ids, [entry for entry, chunk in zip(entry_ids, chunks, strict=True) for _ in chunk])
        stream.in_flight.update(zip(entry_ids, chunks, strict=True))
        return len(ids)

    async def recover_lost(self) -> int:
        """Rows whose entry vanished from Redis while they were not done go back to unpublished."""
        total = 0
        for stream in self.streams:
            entries = list(stream.in_flight)
            still = await streams.present(self.redis, stream.key, entries)
            gone = [e for e in entries if e not in still]
            if not gone:
                continue
            ids = [i for e in gone for i in stream.in_flight.pop(e)]
            async with self.pool.acquire() as conn, conn.transaction():
                await self.lease.fence(conn)
                reset = await conn.fetch(
                    """UPDATE issuance_outbox SET published_at = NULL
                       WHERE id = ANY($1::bigint[]) AND stream_entry = ANY($2::text[])
                         AND done_at IS NULL AND dead_at IS NULL RETURNING bank_code""", ids, gone)
            total += self._count_republished(reset)
        return total

    async def republish_stale(self) -> int:
        """The safety net: published long ago on an entry this dispatcher does not know."""
        known = [e for s in self.streams for e in s.in_flight]
        async with self.pool.acquire() as conn, conn.transaction():
            await self.lease.fence(conn)
            reset = await conn.fetch(
                """UPDATE issuance_outbox SET published_at = NULL
                   WHERE done_at IS NULL AND dead_at IS NULL AND published_at IS NOT NULL
                     AND published_at < now() - make_interval(secs => $1)
                     AND NOT (stream_entry = ANY($2::text[])) RETURNING bank_code""",
                self.options.republish_after_s, known)
        return self._count_republished(reset)

    def _count_republished(self, rows: Sequence[asyncpg.Record]) -> int:
        by_bank: dict[str, int] = {}
        for r in rows:
            by_bank[r["bank_code"]] = by_bank.get(r["bank_code"], 0) + 1
        for bank, n in by_bank.items():
            REPUBLISHED.labels(bank).inc(n)
            log.warning("dispatcher: %d work items for %s were lost from Redis; publishing them again",
                        n, bank)
        return len(rows)

    async def claim_deadlines(self) -> None:
        """Cancel what nobody claimed in time and close claims, for every campaign past its deadline."""
        for campaign in await campaigns.list_all(self.pool, limit=1000):
            if campaign.state not in issuance.CLAIMABLE_CAMPAIGN_STATES:
                continue
            if not await issuance.claim_deadline_passed(self.pool, campaign):
                continue
            cancelled = await issuance.cancel_unclaimed(self.pool, campaign, ACTOR)
            if self.banks is not None:
                cancelled += (await expiry.settle_failed(self.pool, self.banks, campaign.id)).cancelled
            if cancelled:
                CANCELLED.inc(cancelled)
                log.info("campaign %s: %d unclaimed packets cancelled back to the budget",
                         campaign.id, cancelled)
            await issuance.close_claims(self.pool, campaign, ACTOR)

    async def spending_deadlines(self) -> None:
        """Expire every drawn campaign past its spending deadline; a partial round is finished by the next."""
        if self.banks is None:
            return
        for campaign in await campaigns.list_all(self.pool, limit=1000):
            if campaign.state not in EXPIRABLE_CAMPAIGN_STATES:
                continue
            if not await self.pool.fetchval("SELECT now() >= $1::timestamptz", campaign.spending_deadline):
                continue
            try:
                report = await expiry.expire(self.pool, self.banks, campaign.id, ACTOR)
            except (WrongState, LeaseLost) as exc:  # another run holds it or took it over, or the state moved
                log.info("campaign %s: expiry not run now: %s", campaign.id, exc.detail)
                continue
            log.info("campaign %s: spending deadline passed; %d packets reclaimed (%d fen), %d spent out, "
                     "%d cancelled, %d left; campaign %s", campaign.id, report.reclaimed, report.reclaimed_fen,
                     report.spent, report.cancelled, report.left, report.campaign_state)

    async def update_gauges(self) -> None:
        rows = await self.pool.fetch(
            """SELECT bank_code, 'unpublished' AS stage, count(*) AS n FROM issuance_outbox
               WHERE done_at IS NULL AND dead_at IS NULL AND published_at IS NULL GROUP BY bank_code
               UNION ALL
               SELECT bank_code, 'published', count(*) FROM issuance_outbox
               WHERE done_at IS NULL AND dead_at IS NULL AND published_at IS NOT NULL GROUP BY bank_code""")
        seen = {(r["bank_code"], r["stage"]): int(r["n"]) for r in rows}
        for stream in self.streams:
            for stage in ("unpublished", "published"):
                OUTBOX_OPEN.labels(stream.bank_code, stage).set(seen.get((stream.bank_code, stage), 0))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
