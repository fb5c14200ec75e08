"""`stimulus audit ledger`: the ledger's invariants, checked from the books at any time.

Shared checks live here: every posting sums to zero over at least two legs; per campaign, what
sits in allocated + issued + redeemed + reclaimed never exceeds the funded budget, and no
account that holds money is negative. Domain packages add their own checks (e.g. that every
packet's postings match its history, that the registration tallies equal the registrations) through a module exposing
`async def ledger_checks(conn, campaign_id) -> list[LedgerBreak]`, found by name like the
domains' API modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

import asyncpg

from kernel.ledger import LedgerBreak, check_postings_balanced

DOMAIN_CHECK_MODULES = ("lottery.ledger_checks", "wallet_adapter.ledger_checks", "merchants.ledger_checks")
HELD_KINDS = ("allocated", "issued", "redeemed", "reclaimed")
NEVER_NEGATIVE = ("budget", *HELD_KINDS)

DomainCheck = Callable[[asyncpg.Connection, str | None], Awaitable[list[LedgerBreak]]]


def _domain_checks() -> list[DomainCheck]:
    checks: list[DomainCheck] = []
    for name in DOMAIN_CHECK_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        checks.append(module.ledger_checks)
    return checks


async def check_budgets(conn: asyncpg.Connection, campaign_id: str | None = None) -> list[LedgerBreak]:
    rows = await conn.fetch(
        """SELECT a.campaign_id, a.kind, COALESCE(sum(e.amount_fen), 0)::bigint AS balance
           FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account = a.account
           WHERE a.campaign_id IS NOT NULL AND ($1::text IS NULL OR a.campaign_id = $1)
           GROUP BY a.campaign_id, a.kind""", campaign_id)
    by_campaign: dict[str, dict[str, int]] = {}
    for r in rows:
        by_campaign.setdefault(r["campaign_id"], {})[r["kind"]] = int(r["balance"])
    breaks: list[LedgerBreak] = []
    for campaign, balances in sorted(by_campaign.items()):
        funded = -balances.get("funding", 0)
        held = sum(balances.get(kind, 0) for kind in HELD_KINDS)
        if held > funded:
            breaks.append(LedgerBreak("within_budget", f"campaign {campaign}: allocated + issued + redeemed"
                                      f" + reclaimed = {held} fen exceeds the funded budget {funded} fen"))
        for kind in NEVER_NEGATIVE:
            if balances.get(kind, 0) < 0:
                breaks.append(LedgerBreak("no_negative_balance",
                                          f"campaign {campaign}: {kind} is {balances[kind]} fen"))
    return breaks


async def audit(conn: asyncpg.Connection, campaign_id: str | None = None) -> list[LedgerBreak]:
    """Every break found, in a repeatable-read snapshot so the checks see one state of the books."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        breaks = await check_postings_balanced(conn)
        breaks += await check_budgets(conn, campaign_id)
        for check in _domain_checks():
            breaks += await check(conn, campaign_id)
    return breaks
