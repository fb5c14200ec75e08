"""`stimulus worker reconcile`: fetch the banks' settlement files and reconcile, again and again.

Run as many replicas as you like: each round, the replica that takes the `reconciliation` lease
fetches and reconciles while the others skip the round. The lease is renewed in the background
for the whole round, so a replica killed mid-round is replaced `ROUND_LEASE_TTL_S` later by
whichever replica's round comes next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from kernel.errors import DomainError
from kernel.leases import Lease
from kernel.settings import Settings
from merchants import reconciler
from merchants.reconciler import RunOptions
from merchants.settlement_fetch import fetch_days, recent_days
from wallet_adapter.provider import BankError

log = logging.getLogger("stimulus.reconcile")

ROUND_LEASE_TTL_S = 10.0


async def reconcile_forever(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event, every_s: float,
                            options: RunOptions) -> None:
    """Yesterday's (until complete) and today's files from every bank, then a run, until stopped."""
    while not stop.is_set():
        try:
            await reconcile_round(settings, pool, options)
        except DomainError as exc:  # another run holds the lease: this round is its
            log.info("reconciliation skipped: %s", exc.detail)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, BankError) as exc:
            log.warning("reconciliation failed, retrying: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)


async def reconcile_round(settings: Settings, pool: asyncpg.Pool, options: RunOptions) -> reconciler.RunSummary | None:
    """One round, if this replica takes the lease; None when another holds it."""
    lease = Lease(reconciler.RECONCILE_LEASE, ROUND_LEASE_TTL_S)
    if not await lease.take(pool):
        log.debug("reconciliation: another replica or run holds the lease")
        return None
    try:
        async with lease.kept(pool), pool.acquire() as conn:
            await fetch_days(settings, conn, (), recent_days(), reconciler.RECONCILER, skip_complete=True)
            lease.check()
            summary = await reconciler.run(conn, options, lease=lease)
    finally:
        await lease.release(pool)
    if summary.counts.get("matched") or any(summary.counts.get(k) for k in (
            "amount_mismatch", "duplicate_notices", "duplicate_lines", "missing_at_bank", "missing_at_merchant")):
        log.info("reconciliation run %s: %s %s", summary.run_id, summary.outcome, summary.counts)
    return summary
