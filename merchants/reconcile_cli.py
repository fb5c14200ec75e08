"""`stimulus reconcile ...` and `stimulus worker reconcile`, mounted by merchants.cli.

    stimulus reconcile fetch [--bank B ...] [--date YYYY-MM-DD ...] --token T   from the banks' API
    stimulus reconcile import FILE --bank B --token T                           a CSV or NDJSON file
    stimulus reconcile run [--window-s S] [--grace-s S]                          pair and classify
    stimulus reconcile breaks [--campaign C] [--class K] [--all]
    stimulus reconcile resolve BREAK_ID --reason R --token T
    stimulus reconcile runs
    stimulus worker reconcile [--every-s S]             fetch today's and yesterday's files, run
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import click
import msgspec
from rich.console import Console
from rich.table import Table

from kernel.command_line import (
    require_operator,
    run,
    run_until_stopped,
    token_option,
    worker_pool,
    worker_settings,
)
from kernel.settings import load_settings
from merchants import reconciler, settlement
from merchants.reconcile_worker import reconcile_forever
from merchants.reconciler import RunOptions, RunSummary
from merchants.settlement import ImportResult
from merchants.settlement_fetch import fetch_days, recent_days

T = TypeVar("T")
console = Console()
window_option = click.option("--window-s", type=click.FloatRange(0, 86_400), default=reconciler.DEFAULT_WINDOW_S,
                             show_default=True, help="how far a notice's time may be from the bank's")
grace_option = click.option("--grace-s", type=click.FloatRange(0, 30 * 86_400), default=reconciler.DEFAULT_GRACE_S,
                            show_default=True, help="how long merchants have to notify a settled spend")


def _print_import(result: ImportResult) -> None:
    verb = "imported" if result.created else "already imported, nothing changed:"
    console.print(f"{result.bank_code} {result.settlement_date} ({result.format}, "
                  f"{'complete' if result.complete else 'intraday'}): {verb} file {result.file_id}, "
                  f"{result.lines:,} lines, {result.repeated:,} repeated, {result.rejected:,} rejected; "
                  f"covers until {result.covers_until.isoformat(timespec='seconds')}")
    for reject in result.rejects[:50]:
        console.print(f"  line {reject.line_no}: {reject.error}", style="yellow", markup=False)


def _print_run(summary: RunSummary) -> None:
    table = Table(title=f"reconciliation run {summary.run_id}: {summary.outcome} ({summary.elapsed_s:.1f} s)",
                  show_header=False)
    for key, value in summary.counts.items():
        table.add_row(key, f"{value:,}")
    console.print(table)


@click.group("reconcile")
def reconcile_group() -> None:
    """Settlement files and the reconciliation of merchants' notices with them."""


@reconcile_group.command("fetch")
@click.option("--bank", "codes", multiple=True, help="a bank code (repeat; default: every configured bank)")
@click.option("--date", "dates", multiple=True, type=click.DateTime(["%Y-%m-%d"]),
              help="a settlement day, UTC+8 (repeat; default: yesterday and today)")
@click.option("--format", "file_format", type=click.Choice(["csv", "ndjson"]), default="csv", show_default=True)
@token_option
def reconcile_fetch(codes: tuple[str, ...], dates: tuple[datetime, ...], file_format: str, token: str) -> None:
    """Fetch the banks' settlement files through their API and store them (once per file)."""
    settings = load_settings()

    async def go(conn: asyncpg.Connection) -> list[ImportResult]:
        actor = (await require_operator(conn, token)).actor
        return await fetch_days(settings, conn, codes, recent_days(dates), actor, file_format)
    for result in run(go):
        _print_import(result)


@reconcile_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--bank", required=True, help="the bank the file comes from (checked against its trailer)")
@token_option
def reconcile_import(file: Path, bank: str, token: str) -> None:
    """Import a settlement file handed over by a bank: CSV or NDJSON, strictly parsed."""
    raw = file.read_bytes()

    async def go(conn: asyncpg.Connection) -> ImportResult:
        actor = (await require_operator(conn, token)).actor
        return await settlement.import_file(conn, raw, source="uploaded", actor=actor, expect_bank=bank)
    _print_import(run(go))


@reconcile_group.command("run")
@window_option
@grace_option
@click.option("--chunk", type=click.IntRange(1, 10_000_000), default=reconciler.DEFAULT_CHUNK, show_default=True,
              help="notices per transaction")
def reconcile_run(window_s: float, grace_s: float, chunk: int) -> None:
    """Pair notices with settlement lines and classify what is left; exits 2 when breaks are open."""
    options = RunOptions(window_s=window_s, grace_s=grace_s, chunk=chunk)
    summary = run(lambda conn: reconciler.run(conn, options))
    _print_run(summary)
    if summary.outcome in ("breaks", "incomplete"):
        raise SystemExit(2)


@reconcile_group.command("runs")
@click.option("--limit", type=click.IntRange(1, 500), default=10, show_default=True)
def reconcile_runs(limit: int) -> None:
    """Recent runs and their outcomes."""
    for view in run(lambda conn: reconciler.recent_runs(conn, limit)):
        counts = ", ".join(f"{k} {v:,}" for k, v in view.counts.items() if v)
        click.echo(f"{view.id}\t{view.started_at:%Y-%m-%d %H:%M:%S}\t{view.outcome or 'running'}\t{counts}")


@reconcile_group.command("breaks")
@click.option("--campaign", default=None)
@click.option("--class", "break_class", type=click.Choice(reconciler.BREAK_CLASSES), default=None)
@click.option("--all", "include_resolved", is_flag=True, help="resolved breaks too")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
def reconcile_breaks(campaign: str | None, break_class: str | None, include_resolved: bool, as_json: bool,
                     limit: int) -> None:
    """Breaks with their class, the notice and line they concern, and any resolution."""
    found = run(lambda conn: reconciler.list_breaks(conn, campaign_id=campaign, break_class=break_class,
                                                     open_only=not include_resolved, limit=limit))
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(found)).decode())
        return
    table = Table(title=f"{len(found):,} {'' if include_resolved else 'open '}breaks")
    for column in ("id", "class", "campaign", "merchant", "txn", "spend", "fen", "resolution"):
        table.add_column(column)
    for b in found:
        table.add_row(str(b.id), b.break_class, b.campaign_id or "", b.merchant_id or "", b.merchant_txn_id or "",
                      b.spend_id or "", f"{b.amount_fen or 0:,}", b.resolution or "")
    console.print(table)


@reconcile_group.command("resolve")
@click.argument("break_id", type=int)
@click.option("--reason", required=True, help="why the break is closed (audit-logged)")
@token_option
def reconcile_resolve(break_id: int, reason: str, token: str) -> None:
    """Resolve a break with the reason; the money stays as it is."""
    async def go(conn: asyncpg.Connection) -> reconciler.Break:
        actor = (await require_operator(conn, token)).actor
        return await reconciler.resolve(conn, break_id, reason, actor)
    resolved = run(go)
    click.echo(f"break {resolved.id} ({resolved.break_class}) resolved: {resolved.resolution}")


@click.command("reconcile")
@click.option("--every-s", type=click.FloatRange(1, 86_400), default=60.0, show_default=True)
@window_option
@grace_option
def reconcile_worker(every_s: float, window_s: float, grace_s: float) -> None:
    """Fetch settlement files and reconcile, every so often, until stopped."""
    settings = worker_settings()

    async def main(stop: asyncio.Event) -> None:
        async with worker_pool(settings, 4) as pool:
            await reconcile_forever(settings, pool, stop, every_s, RunOptions(window_s=window_s, grace_s=grace_s))
    run_until_stopped(main)


commands = [reconcile_group]
worker_subcommands = [reconcile_worker]
