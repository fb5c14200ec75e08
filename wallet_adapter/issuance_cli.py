"""`stimulus issue ...`, `stimulus packets ...` and the issuance workers, mounted by stimulus.cli.

    stimulus issue start CAMPAIGN --token T      request bulk issuance (`stimulus approve` runs it)
    stimulus issue progress CAMPAIGN             progress bars per bank until nothing is pending
    stimulus issue dead-letters CAMPAIGN         work items parked for an operator
    stimulus issue requeue CAMPAIGN --token T    put parked items back in the pipeline
    stimulus packets cancel-unclaimed CAMPAIGN   the claim-deadline job, by hand
    stimulus packets expire CAMPAIGN --token T   reclaim unspent balances at the spending deadline
    stimulus worker issuance | issuance-dispatcher
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TypeVar

import asyncpg
import click
import redis.asyncio as redis_asyncio
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from kernel import approvals, audit_log
from kernel.command_line import (
    console,
    echo_json,
    require_operator,
    run,
    run_until_stopped,
    run_with_pool,
    token_option,
    worker_settings,
)
from kernel.db import create_pool
from kernel.redis_clients import worker_client
from kernel.settings import Settings
from wallet_adapter import expiry, issuance, streams
from wallet_adapter.banks import BankRegistry, issuance_client_options
from wallet_adapter.outbox import Dispatcher, DispatcherOptions
from wallet_adapter.progress import issuance_progress

T = TypeVar("T")


@click.group("issue")
def issue_group() -> None:
    """Issue red packets: bulk start, progress, dead letters."""


@issue_group.command("start")
@click.argument("campaign_id")
@token_option
def issue_start(campaign_id: str, token: str) -> None:
    """Request bulk issuance to the wallets given at registration (a second operator approves)."""
    async def go(conn: asyncpg.Connection) -> approvals.Approval:
        maker = await require_operator(conn, token)
        return await approvals.request(conn, issuance.BULK_START, campaign_id, {}, maker.actor)
    echo_json(run(go))


@issue_group.command("progress")
@click.argument("campaign_id")
@click.option("--interval", "interval_s", type=float, default=1.0, show_default=True)
@click.option("--once", is_flag=True, help="print the figures once, as JSON")
def issue_progress(campaign_id: str, interval_s: float, once: bool) -> None:
    """Progress bars per bank (issued of claimed), rate and ETA, until nothing is pending."""
    if once:
        echo_json(run(lambda conn: issuance_progress(conn, campaign_id)))
        return

    async def watch(settings: Settings, pool: asyncpg.Pool) -> None:
        columns = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[detail]}"))
        with Progress(*columns, console=console) as bars:
            tasks: dict[str, TaskID] = {}
            while True:
                now = await issuance_progress(pool, campaign_id)
                for bank in now.banks:
                    if bank.bank_code not in tasks:
                        tasks[bank.bank_code] = bars.add_task(bank.bank_code, detail="")
                    bars.update(tasks[bank.bank_code], completed=bank.issued,
                                total=bank.issued + bank.pending + bank.failed,
                                detail=f"failed {bank.failed}  dead {bank.dead_letters}")
                eta = "-" if now.eta_s is None else f"{now.eta_s:.0f}s"
                bars.console.print(f"{now.issued} issued, {now.pending} pending, {now.failed} failed, "
                                   f"{now.unclaimed} unclaimed; {now.rate_per_s:.0f}/s, ETA {eta}",
                                   end="\r")
                if now.pending == 0 and now.issued + now.failed > 0:
                    return
                await asyncio.sleep(interval_s)
    run_with_pool(watch)


@issue_group.command("dead-letters")
@click.argument("campaign_id")
def issue_dead_letters(campaign_id: str) -> None:
    """Work items parked for an operator, with the reason."""
    async def go(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        rows = await conn.fetch(
            """SELECT o.id, o.packet_id, o.bank_code, o.dead_at, o.dead_reason, p.ticket, p.state
               FROM issuance_outbox o JOIN packets p ON p.id = o.packet_id
               WHERE o.campaign_id = $1 AND o.dead_at IS NOT NULL AND o.done_at IS NULL ORDER BY o.id""",
            campaign_id)
        return [dict(r) for r in rows]
    echo_json(run(go))


@issue_group.command("requeue")
@click.argument("campaign_id")
@token_option
def issue_requeue(campaign_id: str, token: str) -> None:
    """Put dead-lettered work items back in the pipeline (after the cause is fixed)."""
    async def go(conn: asyncpg.Connection) -> dict[str, int]:
        operator = await require_operator(conn, token)
        async with conn.transaction():
            count = len(await conn.fetch(
                """UPDATE issuance_outbox SET dead_at = NULL, dead_reason = NULL, published_at = NULL
                   WHERE campaign_id = $1 AND dead_at IS NOT NULL AND done_at IS NULL RETURNING id""",
                campaign_id))
            await audit_log.append(conn, actor=operator.actor, action="issuance.requeue", subject=campaign_id,
                                   details={"work_items": count})
        return {"requeued": count}
    echo_json(run(go))


@click.group("packets")
def packets_group() -> None:
    """Packets after issuance: the claim deadline and expiry."""


@packets_group.command("cancel-unclaimed")
@click.argument("campaign_id")
@token_option
def packets_cancel_unclaimed(campaign_id: str, token: str) -> None:
    """After the claim deadline: cancel unclaimed and refused packets back to the budget (re-runnable;
    the dispatcher also does this on its own)."""
    async def go(settings: Settings, pool: asyncpg.Pool) -> dict[str, Any]:
        from lottery import campaigns

        operator = await require_operator(pool, token)
        campaign = await campaigns.fetch(pool, campaign_id)
        cancelled = await issuance.cancel_unclaimed(pool, campaign, operator.actor)
        banks = await BankRegistry.open(settings, issuance_client_options())
        try:
            refused = await expiry.settle_failed(pool, banks, campaign_id)
        finally:
            await banks.aclose()
        closed = await issuance.close_claims(pool, await campaigns.fetch(pool, campaign_id), operator.actor)
        return {"cancelled": cancelled + refused.cancelled, "issued_late": refused.issued_late,
                "left": refused.left, "claims_closed": closed}
    echo_json(run_with_pool(go))


@packets_group.command("expire")
@click.argument("campaign_id")
@token_option
def packets_expire(campaign_id: str, token: str) -> None:
    """At the spending deadline: reclaim unspent balances from the banks back to the budget.

    The issuance dispatcher inside `stimulus up` does this by itself once the deadline passes; the
    command runs it now. Re-runnable: run it again until `left` is 0 (the campaign then becomes
    `expired`)."""
    async def go(settings: Settings, pool: asyncpg.Pool) -> expiry.ExpiryReport:
        operator = await require_operator(pool, token)
        banks = await BankRegistry.open(settings, issuance_client_options(concurrency=32))
        try:
            return await expiry.expire(pool, banks, campaign_id, operator.actor)
        finally:
            await banks.aclose()
    report = run_with_pool(go)
    echo_json(report)
    if report.left:
        sys.exit(3)


# -- workers -----------------------------------------------------------------------------------


async def _connect(settings: Settings, pool_max: int) -> tuple[asyncpg.Pool, redis_asyncio.Redis]:
    assert settings.database_url and settings.redis_url
    deadline = time.monotonic() + 60
    while True:  # a worker may start before the servers are up (or while one restarts)
        try:
            pool = await create_pool(settings.database_url, 1, pool_max, settings.db_command_timeout_s,
                                     pooler=settings.db_pooler)
            break
        except (OSError, asyncpg.PostgresError) as exc:
            if time.monotonic() > deadline:
                raise
            console.print(f"waiting for PostgreSQL: {exc}")
            await asyncio.sleep(1)
    return pool, worker_client(settings)


@click.command("issuance")
@click.option("--bank", "bank_codes", multiple=True, help="consume only these banks' streams (default: all)")
@click.option("--slots", type=click.IntRange(1, 64), default=4, show_default=True, help="batches in hand per bank")
@click.option("--bank-concurrency", type=click.IntRange(1, 256), default=8, show_default=True,
              help="calls in flight per bank (credits and status queries)")
@click.option("--bank-timeout-s", type=click.FloatRange(0.1, 60), default=5.0, show_default=True)
@click.option("--claim-idle-s", type=click.FloatRange(0.5, 3600), default=30.0, show_default=True,
              help="take over stream entries idle this long (their worker died)")
@click.option("--max-deliveries", type=click.IntRange(1, 100), default=5, show_default=True,
              help="deliveries after which an entry goes to the dead-letter stream")
@click.option("--prefix", default=streams.DEFAULT_PREFIX, show_default=True, help="Redis key prefix")
def issuance_worker_command(bank_codes: tuple[str, ...], slots: int, bank_concurrency: int,
                            bank_timeout_s: float, claim_idle_s: float, max_deliveries: int, prefix: str) -> None:
    """Consume the banks' issuance streams and credit packets (run several for scale-out)."""
    from wallet_adapter.issuance_worker import IssuanceWorker, WorkerOptions

    settings = worker_settings(need_redis=True)

    async def main(stop: asyncio.Event) -> None:
        pool, redis = await _connect(settings, pool_max=max(4, slots * 2))
        banks = await BankRegistry.open(settings, issuance_client_options(bank_concurrency, bank_timeout_s),
                                        codes=bank_codes or None)
        options = WorkerOptions(prefix=prefix, slots=slots, claim_idle_s=claim_idle_s,
                                keep_alive_s=max(0.2, claim_idle_s / 3), max_deliveries=max_deliveries,
                                claim_every_s=max(0.2, min(5.0, claim_idle_s / 2)))
        try:
            await IssuanceWorker(pool, redis, banks, options).run(stop)
        finally:
            await banks.aclose()
            await redis.aclose()
            await pool.close()
    run_until_stopped(main)
    sys.exit(0)


@click.command("issuance-dispatcher")
@click.option("--max-entries", type=click.IntRange(1, 10_000), default=40, show_default=True,
              help="stream entries (of up to 100 packets) waiting or in hand per bank")
@click.option("--republish-after-s", type=click.FloatRange(1, 86_400), default=60.0, show_default=True)
@click.option("--prefix", default=streams.DEFAULT_PREFIX, show_default=True, help="Redis key prefix")
def dispatcher_command(max_entries: int, republish_after_s: float, prefix: str) -> None:
    """Publish the issuance outbox to the banks' streams and run the claim-deadline job."""
    settings = worker_settings(need_redis=True)

    async def main(stop: asyncio.Event) -> None:
        pool, redis = await _connect(settings, pool_max=4)
        banks: BankRegistry | None = None
        try:
            banks = await BankRegistry.open(settings, issuance_client_options())
        except Exception as exc:  # publishing must not wait for a bank; the deadline job can
            console.print(f"no bank clients ({exc}); refused packets wait for `packets cancel-unclaimed`")
        options = DispatcherOptions(prefix=prefix, max_entries=max_entries, republish_after_s=republish_after_s)
        try:
            await Dispatcher(pool, redis, settings.bank_codes, options, banks).run(stop)
        finally:
            if banks is not None:
                await banks.aclose()
            await redis.aclose()
            await pool.close()
    run_until_stopped(main)
    sys.exit(0)


commands = [issue_group, packets_group]
worker_subcommands = [issuance_worker_command, dispatcher_command]
