"""`stimulus report` and `stimulus statement`, mounted by merchants.cli.

    stimulus report CAMPAIGN [--html FILE] [--json]      money, breaks, spend, multiplier
    stimulus statement MERCHANT [--campaign C] [--from D] [--to D] [--csv]
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table

from kernel.command_line import echo_json, run
from merchants import report_html, reports
from merchants.reports import CampaignReport, SpendRow


def yuan(fen: int) -> str:
    return f"¥{report_html.yuan(fen)}"


def _spend_table(title: str, rows: list[SpendRow]) -> Table:
    table = Table(title=title)
    for column in ("", "payments", "spent", "reconciled"):
        table.add_column(column, justify="left" if not column else "right")
    for row in rows:
        table.add_row(row.key, f"{row.payments:,}", yuan(row.spent_fen), yuan(row.matched_fen))
    return table


def print_report(report: CampaignReport, console: Console) -> None:
    m = report.money
    money = Table(title=f"{report.name} ({report.campaign_id}, {report.state})", show_header=False)
    money.add_column(justify="left")
    money.add_column(justify="right")
    for label, fen in (("budget", m.budget_fen), ("allocated, not credited", m.allocated_fen),
                       ("issued to wallets", m.issued_fen), ("cancelled (back to budget)", m.cancelled_fen),
                       ("redeemed (reconciled)", m.redeemed_fen), ("pending reconciliation", m.pending_fen),
                       ("reclaimed (back to budget)", m.reclaimed_fen), ("outstanding", m.outstanding_fen)):
        money.add_row(label, yuan(fen))
    multiplier = ("n/a (no basket totals reported)" if report.consumption_multiplier is None
                  else f"{report.consumption_multiplier:.2f}x ({yuan(report.basket_fen)} baskets / "
                       f"{yuan(report.basket_subsidy_fen)} packet money)")
    money.add_row("consumption multiplier", multiplier)
    console.print(money)
    breaks = Table(title="reconciliation breaks")
    for column in ("class", "open", "open amount", "resolved"):
        breaks.add_column(column, justify="left" if column == "class" else "right")
    for b in report.breaks:
        breaks.add_row(b.break_class, f"{b.open:,}", yuan(b.open_fen), f"{b.resolved:,}")
    console.print(breaks)
    console.print(_spend_table("spend by day (UTC+8)", report.spend_by_day))
    console.print(_spend_table("spend by district", report.spend_by_district))
    console.print(_spend_table("spend by category (MCC)", report.spend_by_category))


def _fetch_report(campaign_id: str) -> CampaignReport:
    return run(lambda conn: reports.campaign_report(conn, campaign_id))


@click.command("report")
@click.argument("campaign_id")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the report as a printable HTML page with charts")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON instead of tables")
def report_command(campaign_id: str, html_out: Path | None, as_json: bool) -> None:
    """The campaign report: issued, redeemed, reclaimed, outstanding, breaks, spend, multiplier."""
    report = _fetch_report(campaign_id)
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(report)).decode())
    else:
        print_report(report, Console())
    if html_out is not None:
        html_out.write_text(report_html.render(report), encoding="utf-8")
        click.echo(f"report written to {html_out}", err=True)


@click.command("statement")
@click.argument("merchant_id")
@click.option("--campaign", default=None)
@click.option("--from", "since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="first day (UTC+8)")
@click.option("--to", "until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="last day (UTC+8)")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of JSON")
def statement_command(merchant_id: str, campaign: str | None, since: datetime | None, until: datetime | None,
                      as_csv: bool) -> None:
    """A merchant's statement: every notice with its reconciliation status and the totals."""
    first: date | None = since.date() if since else None
    last: date | None = until.date() if until else None
    statement = run(lambda conn: reports.merchant_statement(conn, merchant_id, campaign, first, last))
    if as_csv:
        click.echo(reports.statement_csv(statement), nl=False)
    else:
        echo_json(statement)


commands = [report_command, statement_command]
