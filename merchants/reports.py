"""The campaign report and the merchants' statements, read from the books in one snapshot.

Money comes from where it is true: what was credited and reclaimed from the packets, what was
redeemed from the ledger (it moves only on a reconciled match), what is still pending from the
notices. Spend is counted by the merchant's district and category and by the purchase's day in
the banks' time zone (UTC+8), net of reversals; "matched" is the part reconciled with a bank.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime

import asyncpg
import msgspec

from kernel.errors import NotFound

BANK_TIME_ZONE = "Asia/Shanghai"  # the banks' settlement days (UTC+8)
BREAK_CLASSES = ("missing_at_bank", "missing_at_merchant", "amount_mismatch", "duplicate", "late")


class Money(msgspec.Struct, frozen=True):
    budget_fen: int
    allocated_fen: int          # drawn, not yet credited
    issued_fen: int             # credited to wallets
    cancelled_fen: int          # never claimed or never issuable: back to the budget
    redeemed_fen: int           # spent and reconciled with a bank
    pending_fen: int            # notified by merchants, not reconciled yet
    reclaimed_fen: int          # unspent at the spending deadline: back to the budget
    outstanding_fen: int        # issued and neither redeemed nor reclaimed


class SpendRow(msgspec.Struct, frozen=True):
    key: str
    payments: int
    spent_fen: int              # payments minus reversals
    matched_fen: int            # of which reconciled


class BreakCount(msgspec.Struct, frozen=True):
    break_class: str = msgspec.field(name="class")
    open: int = 0
    resolved: int = 0
    open_fen: int = 0


class CampaignReport(msgspec.Struct, frozen=True):
    campaign_id: str
    name: str
    state: str
    generated_at: datetime
    packets: dict[str, int]
    money: Money
    notices: dict[str, int]
    breaks: list[BreakCount]
    spend_by_day: list[SpendRow]
    spend_by_district: list[SpendRow]
    spend_by_category: list[SpendRow]
    basket_fen: int             # whole baskets of the payments that reported one
    basket_subsidy_fen: int     # packet money in those same payments
    consumption_multiplier: float | None  # basket / subsidy, when baskets were reported


_SPEND = """
SELECT {key} AS key,
       count(*) FILTER (WHERE n.kind = 'payment') AS payments,
       COALESCE(sum(CASE n.kind WHEN 'payment' THEN n.amount_fen ELSE -n.amount_fen END), 0)::bigint AS spent_fen,
       COALESCE(sum(CASE n.kind WHEN 'payment' THEN n.amount_fen ELSE -n.amount_fen END)
                FILTER (WHERE n.status = 'matched'), 0)::bigint AS matched_fen
FROM redemption_notices n JOIN merchants m ON m.id = n.merchant_id
WHERE n.campaign_id = $1 AND n.status <> 'break'
GROUP BY 1 ORDER BY 1
"""


async def _spend(conn: asyncpg.Connection, campaign_id: str, key: str) -> list[SpendRow]:
    rows = await conn.fetch(_SPEND.format(key=key), campaign_id)
    return [SpendRow(str(r["key"]), int(r["payments"]), int(r["spent_fen"]), int(r["matched_fen"])) for r in rows]


async def campaign_report(conn: asyncpg.Connection, campaign_id: str) -> CampaignReport:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        campaign = await conn.fetchrow("SELECT id, name, state, budget_fen, now() AS now FROM campaigns WHERE id = $1",
                                       campaign_id)
        if campaign is None:
            raise NotFound(f"no campaign {campaign_id!r}", code="campaign_not_found")
        packets = {r["state"]: int(r["n"]) for r in await conn.fetch(
            "SELECT state, count(*) AS n FROM packets WHERE campaign_id = $1 GROUP BY state", campaign_id)}
        figures = await conn.fetchrow(
            """SELECT COALESCE(sum(amount_fen) FILTER (WHERE state IN ('allocated', 'issuing', 'failed')), 0)::bigint
                          AS allocated,
                      COALESCE(sum(amount_fen) FILTER (WHERE state IN ('issued', 'spent', 'reclaimed')), 0)::bigint
                          AS issued,
                      COALESCE(sum(amount_fen) FILTER (WHERE state = 'cancelled'), 0)::bigint AS cancelled,
                      COALESCE(sum(reclaimed_fen), 0)::bigint AS reclaimed
               FROM packets WHERE campaign_id = $1""", campaign_id)
        redeemed = int(await conn.fetchval(
            "SELECT COALESCE(sum(amount_fen), 0)::bigint FROM ledger_entries WHERE account = $1",
            f"campaign:{campaign_id}:redeemed"))
        notices = {f"{r['kind']}:{r['status']}": int(r["n"]) for r in await conn.fetch(
            "SELECT kind, status, count(*) AS n FROM redemption_notices WHERE campaign_id = $1 GROUP BY 1, 2",
            campaign_id)}
        pending = int(await conn.fetchval(
            """SELECT COALESCE(sum(CASE kind WHEN 'payment' THEN amount_fen ELSE -amount_fen END), 0)::bigint
               FROM redemption_notices WHERE campaign_id = $1 AND status = 'pending'""", campaign_id))
        breaks = {r["class"]: BreakCount(r["class"], int(r["open"]), int(r["resolved"]), int(r["open_fen"]))
                  for r in await conn.fetch(
                      """SELECT class, count(*) FILTER (WHERE resolved_at IS NULL) AS open,
                                count(*) FILTER (WHERE resolved_at IS NOT NULL) AS resolved,
                                COALESCE(sum(amount_fen) FILTER (WHERE resolved_at IS NULL), 0)::bigint AS open_fen
                         FROM reconciliation_breaks WHERE campaign_id = $1 GROUP BY class""", campaign_id)}
        baskets = await conn.fetchrow(
            """SELECT COALESCE(sum(basket_fen), 0)::bigint AS basket, COALESCE(sum(amount_fen), 0)::bigint AS subsidy
               FROM redemption_notices
               WHERE campaign_id = $1 AND kind = 'payment' AND basket_fen IS NOT NULL AND status <> 'break'""",
            campaign_id)
        by_day = await _spend(conn, campaign_id, f"(n.occurred_at AT TIME ZONE '{BANK_TIME_ZONE}')::date::text")
        by_district = await _spend(conn, campaign_id, "m.district")
        by_category = await _spend(conn, campaign_id, "m.category")
    issued, reclaimed = int(figures["issued"]), int(figures["reclaimed"])
    money = Money(budget_fen=int(campaign["budget_fen"]), allocated_fen=int(figures["allocated"]),
                  issued_fen=issued, cancelled_fen=int(figures["cancelled"]), redeemed_fen=redeemed,
                  pending_fen=pending, reclaimed_fen=reclaimed,
                  outstanding_fen=issued - redeemed - reclaimed)
    basket, subsidy = int(baskets["basket"]), int(baskets["subsidy"])
    return CampaignReport(
        campaign_id=campaign_id, name=campaign["name"], state=campaign["state"], generated_at=campaign["now"],
        packets=packets, money=money, notices=notices,
        breaks=[breaks.get(c, BreakCount(c)) for c in BREAK_CLASSES],
        spend_by_day=by_day, spend_by_district=by_district, spend_by_category=by_category,
        basket_fen=basket, basket_subsidy_fen=subsidy,
        consumption_multiplier=round(basket / subsidy, 4) if subsidy else None)


class StatementLine(msgspec.Struct, frozen=True):
    merchant_txn_id: str
    kind: str
    reverses_txn_id: str | None
    campaign_id: str
    bank_code: str
    bank_reference: str | None
    amount_fen: int
    basket_fen: int | None
    occurred_at: datetime
    status: str
    settlement_date: date | None     # the bank's day of the matched settlement line
    break_class: str | None


class Statement(msgspec.Struct, frozen=True):
    merchant_id: str
    name: str
    settlement_account: str
    generated_at: datetime
    lines: list[StatementLine]
    payments_fen: int
    reversals_fen: int
    matched_fen: int                 # reconciled: what the merchant is paid for
    pending_fen: int
    in_break_fen: int


async def merchant_statement(conn: asyncpg.Connection, merchant_id: str, campaign_id: str | None = None,
                             since: date | None = None, until: date | None = None) -> Statement:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        merchant = await conn.fetchrow("SELECT id, name, settlement_account, now() AS now FROM merchants WHERE id = $1",
                                       merchant_id)
        if merchant is None:
            raise NotFound(f"no merchant {merchant_id!r}", code="merchant_not_found")
        rows = await conn.fetch(
            f"""SELECT n.merchant_txn_id, n.kind, n.reverses_txn_id, n.campaign_id, n.bank_code, n.bank_reference,
                       n.amount_fen, n.basket_fen, n.occurred_at, n.status, l.settlement_date,
                       (SELECT min(b.class) FROM reconciliation_breaks b
                        WHERE b.notice_id = n.id AND b.resolved_at IS NULL) AS break_class
                FROM redemption_notices n
                LEFT JOIN reconciliation_matches x ON x.notice_id = n.id
                LEFT JOIN settlement_lines l ON l.id = x.line_id
                WHERE n.merchant_id = $1 AND ($2::text IS NULL OR n.campaign_id = $2)
                  AND ($3::date IS NULL OR (n.occurred_at AT TIME ZONE '{BANK_TIME_ZONE}')::date >= $3)
                  AND ($4::date IS NULL OR (n.occurred_at AT TIME ZONE '{BANK_TIME_ZONE}')::date <= $4)
                ORDER BY n.occurred_at, n.id""", merchant_id, campaign_id, since, until)
    lines = [StatementLine(**dict(r)) for r in rows]

    def total(kind: str, status: str | None = None) -> int:
        return sum(line.amount_fen for line in lines
                   if line.kind == kind and (status is None or line.status == status))

    def net(status: str) -> int:
        return total("payment", status) - total("reversal", status)

    return Statement(merchant_id=merchant_id, name=merchant["name"], settlement_account=merchant["settlement_account"],
                     generated_at=merchant["now"], lines=lines, payments_fen=total("payment"),
                     reversals_fen=total("reversal"), matched_fen=net("matched"), pending_fen=net("pending"),
                     in_break_fen=net("break"))


STATEMENT_COLUMNS = ("merchant_txn_id", "kind", "reverses_txn_id", "campaign_id", "bank_code", "bank_reference",
                     "amount_fen", "basket_fen", "occurred_at", "status", "settlement_date", "break_class")


def statement_csv(statement: Statement) -> str:
    """One line per notice, then the totals as `#` lines a spreadsheet keeps apart."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(STATEMENT_COLUMNS)
    for line in statement.lines:
        values = [getattr(line, c) for c in STATEMENT_COLUMNS]
        writer.writerow(["" if v is None else v.isoformat() if isinstance(v, datetime | date) else v
                         for v in values])
    for name in ("payments_fen", "reversals_fen", "matched_fen", "pending_fen", "in_break_fen"):
        writer.writerow([f"#{name}", getattr(statement, name)])
    return out.getvalue()
