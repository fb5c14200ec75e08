"""The double-entry ledger in integer fen.

A posting is a set of legs (account, amount_fen) that sums to zero, written in the same
transaction as the state change that causes it. (kind, ref) is unique, so re-running the same
step posts nothing twice. Debits are positive, credits negative.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg


class UnbalancedPosting(Exception):
    """A programming error: the legs of a posting do not sum to zero."""


@dataclass(frozen=True)
class Leg:
    account: str
    amount_fen: int


@dataclass(frozen=True)
class Posting:
    kind: str
    ref: str
    legs: tuple[Leg, ...]
    campaign_id: str | None = None


def account_name(campaign_id: str, kind: str) -> str:
    return f"campaign:{campaign_id}:{kind}"


def check_balanced(posting: Posting) -> None:
    # Raised explicitly rather than asserted: money invariants must survive `python -O`.
    if not posting.legs:
        raise UnbalancedPosting(f"{posting.kind}/{posting.ref}: no legs")
    if sum(leg.amount_fen for leg in posting.legs) != 0:
        raise UnbalancedPosting(f"{posting.kind}/{posting.ref}: legs do not sum to zero")
    for leg in posting.legs:
        if not isinstance(leg.amount_fen, int) or isinstance(leg.amount_fen, bool):
            raise UnbalancedPosting(f"{posting.kind}/{posting.ref}: amounts must be integer fen")
        if leg.amount_fen == 0:
            raise UnbalancedPosting(f"{posting.kind}/{posting.ref}: zero leg")


async def ensure_accounts(conn: asyncpg.Connection, campaign_id: str, kinds: Iterable[str]) -> None:
    kinds = list(kinds)
    await conn.execute(
        """INSERT INTO ledger_accounts (account, campaign_id, kind)
           SELECT 'campaign:' || $1 || ':' || k, $1, k FROM unnest($2::text[]) AS k
           ON CONFLICT DO NOTHING""",
        campaign_id, kinds,
    )


async def post(conn: asyncpg.Connection, posting: Posting) -> bool:
    """Post inside the caller's transaction. Returns False if (kind, ref) was already posted."""
    return await post_many(conn, [posting]) == 1


async def post_many(conn: asyncpg.Connection, postings: Sequence[Posting]) -> int:
    """Post a batch in two statements; returns how many were new."""
    if not conn.is_in_transaction():
        raise RuntimeError("ledger postings must run inside the state change's transaction")
    if not postings:
        return 0
    for posting in postings:
        check_balanced(posting)
    rows = await conn.fetch(
        """INSERT INTO ledger_transactions (kind, ref, campaign_id)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
           ON CONFLICT (kind, ref) DO NOTHING
           RETURNING id, kind, ref""",
        [p.kind for p in postings], [p.ref for p in postings], [p.campaign_id for p in postings],
    )
    if not rows:
        return 0
    by_key = {(p.kind, p.ref): p for p in postings}
    txn_ids: list[int] = []
    accounts: list[str] = []
    amounts: list[int] = []
    for row in rows:
        for leg in by_key[(row["kind"], row["ref"])].legs:
            txn_ids.append(row["id"])
            accounts.append(leg.account)
            amounts.append(leg.amount_fen)
    await conn.execute(
        """INSERT INTO ledger_entries (txn_id, account, amount_fen)
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])""",
        txn_ids, accounts, amounts,
    )
    return len(rows)


async def balances(conn: asyncpg.Connection, campaign_id: str) -> dict[str, int]:
    """Balance per account kind for one campaign (debit-positive)."""
    rows = await conn.fetch(
        """SELECT a.kind, COALESCE(sum(e.amount_fen), 0)::bigint AS balance
           FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account = a.account
           WHERE a.campaign_id = $1 GROUP BY a.kind""",
        campaign_id,
    )
    return {r["kind"]: int(r["balance"]) for r in rows}


@dataclass(frozen=True)
class LedgerBreak:
    check: str
    detail: str


async def check_postings_balanced(conn: asyncpg.Connection) -> list[LedgerBreak]:
    rows = await conn.fetch(
        """SELECT t.id, t.kind, t.ref, COALESCE(sum(e.amount_fen), 0) AS total, count(e.*) AS legs
           FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.txn_id = t.id
           GROUP BY t.id HAVING COALESCE(sum(e.amount_fen), 0) <> 0 OR count(e.*) < 2
           LIMIT 100"""
    )
    return [
        LedgerBreak("postings_sum_to_zero",
                    f"transaction {r['id']} ({r['kind']} {r['ref']}) sums to {r['total']} over {r['legs']} legs")
        for r in rows
    ]
