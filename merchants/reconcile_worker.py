"""`stimulus worker reconcile`: fetch the banks' settlement files and reconcile, again and again."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from merchants import reconciler
from merchants.reconciler import RunOptions
from merchants.settlement_fetch import fetch_days, recent_days
from stimulus.errors import DomainError
from stimulus.settings import Settings
from wallet_adapter.provider import BankError

log = logging.getLogger("stimulus.reconcile")


async def reconcile_forever(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event, every_s: float,
                            options: RunOptions) -> None:
    """Yesterday's (until complete) and today's files from every bank, then a run, until stopped."""
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                await fetch_days(settings, conn, (), recent_days(), reconciler.RECONCILER, skip_complete=True)
                summary = await reconciler.run(conn, options)
            if summary.counts.get("matched") or any(summary.counts.get(k) for k in (
                    "amount_mismatch", "duplicate_notices", "duplicate_lines", "missing_at_bank",
                    "missing_at_merchant")):
                log.info("reconciliation run %s: %s %s", summary.run_id, summary.outcome, summary.counts)
        except DomainError as exc:  # another run holds the lock: this round is its
            log.info("reconciliation skipped: %s", exc.detail)
        except (OSError, asyncpg.PostgresError, BankError) as exc:
            log.warning("reconciliation failed, retrying: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
