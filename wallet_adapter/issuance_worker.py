"""Issuance workers: consume a bank's stream, credit packets in batches, record the outcomes.

For each bank a worker runs `slots` readers and one reclaimer. A reader takes up to
`entries_per_batch` entries (up to 500 packets, the bank's batch limit) and:

1. loads the rows and their packets from PostgreSQL (the truth; the entry only names them);
2. credits the packets still `issuing` with one batch call, each under the one idempotency key
   of its packet, so any repeat at any time is answered with the original credit;
3. commits every outcome in one transaction: packets issuing -> issued with allocated -> issued
   postings, refusals -> failed (or cancelled), the outbox rows done;
4. only then acknowledges and deletes the entries.

A crash anywhere repeats at most the bank call, which the bank answers from its books. While a
bank is unavailable (its circuit open) a reader keeps its batch, retries with backoff and keeps
the entries alive (XCLAIM JUSTID, not a delivery); readers stop taking new work for that bank.
The reclaimer takes over entries idle past `claim_idle_s` (XAUTOCLAIM: their consumer died) and
parks those delivered more than `max_deliveries` times in the dead-letter stream with an alert,
marking their rows dead in PostgreSQL so nothing publishes them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from lottery import campaigns
from wallet_adapter import packets, streams
from wallet_adapter.bank_protocol import (
    CreditRefused,
    CreditRequest,
    CreditResult,
    Restrictions,
    idempotency_key_for,
)
from wallet_adapter.banks import BankRegistry
from wallet_adapter.circuit_breaker import BreakerState
from wallet_adapter.packets import Credited, Refused
from wallet_adapter.progress import BANK_CALLS, BATCH_ITEMS, DEAD_LETTERS, PACKETS, REDELIVERED
from wallet_adapter.provider import BankUnavailable, CircuitOpen

log = logging.getLogger("wallet_adapter.issuance_worker")

T = TypeVar("T")
REPORT_EVERY_S = 10

TRANSIENT_DB = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                asyncpg.InsufficientResourcesError, asyncpg.DeadlockDetectedError,
                asyncpg.SerializationError, OSError, TimeoutError)


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class WorkerOptions:
    prefix: str = streams.DEFAULT_PREFIX
    consumer: str = field(default_factory=default_consumer)
    slots: int = 4  # batches in hand per bank
    entries_per_batch: int = 5  # x ENTRY_MAX_ITEMS = the bank's 500-item batch limit
    block_ms: int = 1000
    claim_idle_s: float = 30.0
    claim_every_s: float = 5.0
    keep_alive_s: float = 5.0
    max_deliveries: int = 5
    max_backoff_s: float = 5.0


class Stopped(Exception):
    """The worker was asked to stop with a batch in hand: it is left pending for another."""


@dataclass(frozen=True)
class _Row:
    outbox_id: int
    packet_id: int
    campaign_id: str
    bank_code: str
    open: bool
    state: str
    amount_fen: int
    wallet_bank: str | None
    wallet_id: str | None
    refused_by: tuple[str, ...]
    key: str  # the packet's one idempotency key, derived once


@dataclass
class _Outcomes:
    credited: list[Credited] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    finished: list[tuple[int, int]] = field(default_factory=list)  # (outbox row, packet): nothing more to do
    dead: dict[int, str] = field(default_factory=dict)  # outbox row -> why it needs a human


@dataclass(frozen=True)
class _Terms:
    expires_at: datetime
    restrictions: Restrictions


# Row by row through the primary keys (LATERAL): statistics taken before a bulk start say no
# packet is `issuing`, and a plan built on them would scan the whole table for every batch.
_LOAD = """
SELECT o.id AS outbox_id, o.packet_id, o.campaign_id, o.bank_code,
       (o.done_at IS NULL AND o.dead_at IS NULL) AS open,
       p.state, p.amount_fen, p.wallet_bank, p.wallet_id, p.refused_by
FROM issuance_outbox o,
     LATERAL (SELECT state, amount_fen, wallet_bank, wallet_id, refused_by FROM packets
              WHERE id = o.packet_id) p
WHERE o.id = ANY($1::bigint[])
"""


class IssuanceWorker:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, banks: BankRegistry,
                 options: WorkerOptions | None = None) -> None:
        self.pool = pool
        self.redis = redis
        self.banks = banks
        self.options = options or WorkerOptions()
        self._terms: dict[str, _Terms] = {}
        self.processed = 0

    async def run(self, stop: asyncio.Event, bank_codes: Sequence[str] | None = None) -> None:
        codes = list(bank_codes or self.banks.codes)
        tasks = [asyncio.create_task(self._reader(code, stop), name=f"reader-{code}-{n}")
                 for code in codes for n in range(self.options.slots)]
        tasks += [asyncio.create_task(self._reclaimer(code, stop), name=f"reclaimer-{code}") for code in codes]
        tasks.append(asyncio.create_task(self._report(stop), name="report"))
        log.info("issuance worker %s: %d readers on %s", self.options.consumer, len(tasks) - len(codes),
                 ",".join(codes))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- loops ---------------------------------------------------------------------------------

    async def _report(self, stop: asyncio.Event) -> None:
        last = 0
        while not stop.is_set():
            await _wait(stop, REPORT_EVERY_S)
            if self.processed != last:
                log.info("issuance worker %s: %d work items settled in the last %ds (%d in all)",
                         self.options.consumer, self.processed - last, REPORT_EVERY_S, self.processed)
                last = self.processed

    async def _reader(self, bank: str, stop: asyncio.Event) -> None:
        key = streams.stream_key(self.options.prefix, bank)
        client = self.banks.client(bank)
        failures = 0
        while not stop.is_set():
            try:
                if client.circuit_state is BreakerState.OPEN:
                    await _wait(stop, 0.5)  # the readers holding batches probe the bank
                    continue
                entries = await streams.read_new(self.redis, key, self.options.consumer,
                                                 self.options.entries_per_batch, self.options.block_ms)
                if entries:
                    await self.process(bank, entries, stop)
                failures = 0
            except Stopped:
                return
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost the stream: recreate it and carry on
                    with contextlib.suppress(RedisError, OSError):
                        await streams.ensure_group(self.redis, key)
                    continue
                failures = await self._pause(stop, failures, f"reader {bank}", exc)
            except (RedisError, *TRANSIENT_DB) as exc:
                failures = await self._pause(stop, failures, f"reader {bank}", exc)
            except Exception:
                # A bug or a bank that breaks the protocol: the entries stay pending and come back
                # through the reclaimer, where too many deliveries park them for a human.
                log.exception("issuance batch for %s failed; its entries stay pending", bank)
                failures = await self._pause(stop, failures, f"reader {bank}", None)

    async def _reclaimer(self, bank: str, stop: asyncio.Event) -> None:
        key = streams.stream_key(self.options.prefix, bank)
        opts = self.options
        failures = 0
        while not stop.is_set():
            await _wait(stop, opts.claim_every_s)
            try:
                while not stop.is_set():
                    entries = await streams.claim_idle(self.redis, key, opts.consumer,
                                                       int(opts.claim_idle_s * 1000), opts.entries_per_batch)
                    if not entries:
                        break
                    REDELIVERED.labels(bank).inc(len(entries))
                    poison = [e for e in entries if e.deliveries > opts.max_deliveries]
                    for entry in poison:
                        await self.dead_letter(bank, entry, f"delivered {entry.deliveries} times")
                    rest = [e for e in entries if e.deliveries <= opts.max_deliveries]
                    if rest:
                        log.warning("%s: took over %d stream entries idle for %.0fs", bank, len(rest),
                                    opts.claim_idle_s)
                        await self.process(bank, rest, stop)
                failures = 0
            except Stopped:
                return
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    failures = await self._pause(stop, failures, f"reclaimer {bank}", exc)
            except (RedisError, *TRANSIENT_DB) as exc:
                failures = await self._pause(stop, failures, f"reclaimer {bank}", exc)
            except Exception:
                log.exception("taking over entries of %s failed", bank)
                failures = await self._pause(stop, failures, f"reclaimer {bank}", None)

    async def _pause(self, stop: asyncio.Event, failures: int, what: str, exc: BaseException | None) -> int:
        delay = min(self.options.max_backoff_s, 0.1 * 2 ** min(failures, 6))
        if exc is not None:
            log.warning("%s: %s: %s; again in %.1fs", what, type(exc).__name__, exc, delay)
        await _wait(stop, delay)
        return failures + 1

    # -- one batch -------------------------------------------------------------------------------

    async def process(self, bank: str, entries: Sequence[streams.Entry], stop: asyncio.Event) -> None:
        key = streams.stream_key(self.options.prefix, bank)
        alive = asyncio.create_task(self._keep_alive(key, [e.entry_id for e in entries]))
        try:
            ids = list(dict.fromkeys(i for e in entries for i in e.outbox_ids))
            rows = await self._retry_db(stop, lambda: self._load(ids))
            outcomes = _Outcomes()
            work = self._sort(bank, ids, rows, outcomes)
            if work:
                await self._credit(bank, work, outcomes, stop)
            if outcomes.credited or outcomes.refused or outcomes.dead or outcomes.finished:
                await self._retry_db(stop, lambda: self._commit(outcomes))
        finally:
            alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await alive
        for outbox_id, reason in outcomes.dead.items():
            DEAD_LETTERS.labels(bank, "anomaly").inc()
            log.error("ALERT issuance: outbox row %d parked for an operator: %s", outbox_id, reason)
            await streams.dead_letter(self.redis, self.options.prefix, bank, entries[0], [outbox_id], reason)
        await streams.ack(self.redis, key, [e.entry_id for e in entries])
        self.processed += len(ids)

    async def _keep_alive(self, key: str, entry_ids: list[str]) -> None:
        while True:
            await asyncio.sleep(self.options.keep_alive_s)
            with contextlib.suppress(RedisError, OSError):
                await streams.keep_alive(self.redis, key, self.options.consumer, entry_ids)

    async def _load(self, ids: list[int]) -> dict[int, _Row]:
        records = await self.pool.fetch(_LOAD, ids)
        return {r["outbox_id"]: _Row(r["outbox_id"], r["packet_id"], r["campaign_id"], r["bank_code"],
                                     r["open"], r["state"], r["amount_fen"], r["wallet_bank"], r["wallet_id"],
                                     tuple(r["refused_by"]), idempotency_key_for(r["campaign_id"], str(r["packet_id"])))
                for r in records}

    def _sort(self, bank: str, ids: list[int], rows: dict[int, _Row], outcomes: _Outcomes) -> list[_Row]:
        """The rows that need a credit now; the rest are settled into `outcomes` without the bank."""
        work: list[_Row] = []
        seen_packets: set[int] = set()
        for outbox_id in ids:
            row = rows.get(outbox_id)
            if row is None:
                log.warning("%s: outbox row %d does not exist here; dropping its stream reference", bank, outbox_id)
            elif not row.open:
                continue  # done or dead already: a duplicate delivery
            elif row.bank_code != bank or row.wallet_bank != bank:
                outcomes.dead[outbox_id] = f"row for {row.bank_code}, packet bound to {row.wallet_bank}, stream {bank}"
            elif row.state != packets.ISSUING:
                outcomes.finished.append((outbox_id, row.packet_id))  # it reached an outcome another way
            elif row.packet_id in seen_packets:
                outcomes.finished.append((outbox_id, row.packet_id))
            else:
                seen_packets.add(row.packet_id)
                work.append(row)
        return work

    async def _credit(self, bank: str, work: list[_Row], outcomes: _Outcomes, stop: asyncio.Event) -> None:
        client = self.banks.client(bank)
        attempt = 0
        while True:
            if stop.is_set():
                raise Stopped
            started = time.monotonic()
            try:
                earlier = await self._earlier_credits(bank, work)
                todo = [row for row in work if row.packet_id not in earlier]
                requests = [await self._request(row) for row in todo]
                results = await client.credit_batch(requests) if requests else []
                break
            except BankUnavailable as exc:
                attempt += 1
                wait_s = exc.retry_after_s if isinstance(exc, CircuitOpen) else min(
                    self.options.max_backoff_s, 0.2 * 2 ** min(attempt, 5))
                log.warning("bank %s unavailable for %d packets (%s); holding them, retry in %.1fs",
                            bank, len(work), exc, wait_s)
                await _wait(stop, max(0.05, wait_s))
        BANK_CALLS.labels(bank).observe(time.monotonic() - started)
        BATCH_ITEMS.observe(len(work))
        outcomes.credited.extend(earlier.values())
        by_key = {row.key: row for row in todo}
        for result in results:
            row = by_key[result.idempotency_key]
            if isinstance(result, CreditResult):
                outcomes.credited.append(Credited(row.packet_id, bank, result.wallet_id, result.credit_id,
                                                  result.credited_at))
            elif isinstance(result, CreditRefused) and result.status == 422:
                outcomes.refused.append(Refused(row.packet_id, bank, row.wallet_id or "", result.code))
            else:
                outcomes.dead[row.outbox_id] = f"bank refused with {result.status} {result.code}: {result.detail}"
                continue
            outcomes.finished.append((row.outbox_id, row.packet_id))
        for row in work:
            if row.packet_id in earlier:
                outcomes.finished.append((row.outbox_id, row.packet_id))

    async def _earlier_credits(self, bank: str, work: list[_Row]) -> dict[int, Credited]:
        """A packet re-claimed at this bank after another refused it: a late success at the
        refusing bank is the credit (asking it first is what keeps a packet from two banks)."""
        found: dict[int, Credited] = {}
        for row in work:
            for other in row.refused_by:
                if other == bank or other not in self.banks.codes:
                    continue
                record = await self.banks.client(other).status(row.key)
                if record is not None:
                    found[row.packet_id] = Credited(row.packet_id, other, record.wallet_id, record.credit_id,
                                                    record.credited_at)
                    break
        return found

    async def _request(self, row: _Row) -> CreditRequest:
        terms = self._terms.get(row.campaign_id)
        if terms is None:  # campaign terms are fixed at creation, so they are cached for good
            campaign = await campaigns.fetch(self.pool, row.campaign_id)
            city = campaign.eligibility.city
            terms = _Terms(campaign.spending_deadline, Restrictions(region=city or None))
            self._terms[row.campaign_id] = terms
        assert row.wallet_id is not None
        return CreditRequest(
            idempotency_key=row.key, wallet_id=row.wallet_id,
            amount_fen=row.amount_fen, expires_at=terms.expires_at, restrictions=terms.restrictions,
            campaign_id=row.campaign_id, packet_id=str(row.packet_id))

    async def _commit(self, outcomes: _Outcomes) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            issued = await packets.apply_issued(conn, outcomes.credited)
            failed, cancelled = await packets.apply_refused(conn, outcomes.refused)
            if outcomes.dead:
                await conn.execute(
                    """UPDATE issuance_outbox o SET dead_at = now(), dead_reason = d.reason
                       FROM unnest($1::bigint[], $2::text[]) AS d(id, reason)
                       WHERE o.id = ANY($1::bigint[]) AND o.id = d.id AND o.done_at IS NULL""",
                    list(outcomes.dead), list(outcomes.dead.values()))
            # Rows of packets that just moved were closed with them; the rest are closed here.
            closed = set(issued) | set(failed) | set(cancelled)
            finished = [outbox_id for outbox_id, packet_id in outcomes.finished if packet_id not in closed]
            if finished:
                await conn.execute(
                    """UPDATE issuance_outbox SET done_at = now()
                       WHERE id = ANY($1::bigint[]) AND done_at IS NULL AND dead_at IS NULL""",
                    finished)
        moved = set(issued)
        for credit in outcomes.credited:
            PACKETS.labels(credit.bank_code, "issued" if credit.packet_id in moved else "repeat").inc()
        for refusal in outcomes.refused:
            outcome = "failed" if refusal.packet_id in failed else (
                "cancelled" if refusal.packet_id in cancelled else "stale")
            PACKETS.labels(refusal.bank_code, outcome).inc()

    async def _retry_db(self, stop: asyncio.Event, step: Callable[[], Awaitable[T]]) -> T:
        failures = 0
        while True:
            if stop.is_set():
                raise Stopped
            try:
                return await step()
            except TRANSIENT_DB as exc:
                failures = await self._pause(stop, failures, "database", exc)

    async def dead_letter(self, bank: str, entry: streams.Entry, reason: str) -> None:
        """Park a poison entry: its open rows are marked dead first, so nothing republishes them."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """UPDATE issuance_outbox SET dead_at = now(), dead_reason = $2
                   WHERE id = ANY($1::bigint[]) AND done_at IS NULL AND dead_at IS NULL RETURNING id""",
                list(entry.outbox_ids), reason)
        dead = [r["id"] for r in rows]
        DEAD_LETTERS.labels(bank, "deliveries").inc(len(dead))
        log.error("ALERT issuance: stream entry %s of %s (%d open rows) parked in the dead-letter stream: %s",
                  entry.entry_id, bank, len(dead), reason)
        await streams.dead_letter(self.redis, self.options.prefix, bank, entry, dead, reason)
        await streams.ack(self.redis, streams.stream_key(self.options.prefix, bank), [entry.entry_id])


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
