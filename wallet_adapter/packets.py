"""Red packets: allocation at the draw, the state machine, and the ledger postings of each step.

One packet per winner. Every transition is a compare-and-set UPDATE (`WHERE state = expected`),
and every transition that moves money posts its balanced ledger entries in the same transaction,
keyed (kind, packet id) so a repeated step posts nothing twice:

    allocated --claim/bulk--> issuing --bank credited--> issued --expiry--> reclaimed | spent
        |                      |   ^
        |                      |   '--re-claim (another wallet)--.
        |                      '--bank refused the wallet--> failed
        '--claim deadline--> cancelled <--claim deadline / expired at the bank--'

    packet.allocate   budget -> allocated   (the draw's hand-over)
    packet.issue      allocated -> issued   (the bank confirmed the credit)
    packet.cancel     allocated -> budget   (unclaimed, refused and not re-claimed, or expired)
    packet.reclaim    issued -> budget      (the unspent balance taken back at expiry)

`failed` keeps the money allocated: a refused wallet (unknown, frozen, over its limit) is the
citizen's to fix, so they may claim again with another wallet until the claim deadline. What
was spent stays on `issued` until the merchants' reconciliation moves it to `redeemed`.

Batch updates join `unnest(...)` arrays to their packets. Statistics gathered before a bulk start
claim that no packet is `issuing`, so the planner expects one row and picks a nested loop: without
the index condition `id = ANY($1)` it scans the whole table once per row of the batch, and with it
it still compares each of the batch's packets with every item (250,000 comparisons, 55 ms, for
500). They therefore run with nested loops off (`_fetch_batch`), which makes the join a hash
join whatever the statistics say: about 1 ms for 500.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from kernel import ledger
from kernel.input_types import Input

ALLOCATED, ISSUING, ISSUED, FAILED = "allocated", "issuing", "issued", "failed"
CANCELLED, RECLAIMED, SPENT = "cancelled", "reclaimed", "spent"
FINAL_STATES = (CANCELLED, RECLAIMED, SPENT)
LEDGER_KINDS = ("budget", "allocated", "issued", "redeemed", "reclaimed")
KIND_ALLOCATE, KIND_ISSUE = "packet.allocate", "packet.issue"
KIND_CANCEL, KIND_RECLAIM = "packet.cancel", "packet.reclaim"
# Refusals the citizen can fix with another wallet; anything else permanent cancels the packet.
WALLET_REFUSALS = frozenset({"wallet_not_found", "wallet_frozen", "amount_exceeds_wallet_limit"})
ALLOCATION_CHUNK = 50_000


class Wallet(Input, frozen=True):
    bank_code: str
    wallet_id: str


class PacketView(msgspec.Struct, frozen=True):
    """A packet as its winner sees it."""

    campaign_id: str
    ticket: int
    tier: str
    amount_fen: int
    state: str
    wallet: Wallet | None
    claimed_at: datetime | None
    issued_at: datetime | None
    failure_code: str | None
    spent_fen: int
    reclaimed_fen: int


@dataclass(frozen=True)
class NewPacket:
    ticket: int
    tier: str
    amount_fen: int
    registered_bank: str | None = None
    registered_wallet: str | None = None


VIEW_COLUMNS = """campaign_id, ticket, tier, amount_fen, state, wallet_bank, wallet_id, claimed_at,
                  issued_at, failure_code, spent_fen, reclaimed_fen"""


def view_from_row(row: asyncpg.Record) -> PacketView:
    wallet = Wallet(row["wallet_bank"], row["wallet_id"]) if row["wallet_bank"] else None
    return PacketView(row["campaign_id"], row["ticket"], row["tier"], row["amount_fen"], row["state"],
                      wallet, row["claimed_at"], row["issued_at"], row["failure_code"],
                      row["spent_fen"], row["reclaimed_fen"])


def _posting(kind: str, campaign_id: str, packet_id: int, amount_fen: int, debit: str,
             credit: str) -> ledger.Posting:
    return ledger.Posting(kind=kind, ref=str(packet_id), campaign_id=campaign_id, legs=(
        ledger.Leg(ledger.account_name(campaign_id, debit), amount_fen),
        ledger.Leg(ledger.account_name(campaign_id, credit), -amount_fen)))


def allocate_posting(campaign_id: str, packet_id: int, amount_fen: int) -> ledger.Posting:
    return _posting(KIND_ALLOCATE, campaign_id, packet_id, amount_fen, "allocated", "budget")


def issue_posting(campaign_id: str, packet_id: int, amount_fen: int) -> ledger.Posting:
    return _posting(KIND_ISSUE, campaign_id, packet_id, amount_fen, "issued", "allocated")


def cancel_posting(campaign_id: str, packet_id: int, amount_fen: int) -> ledger.Posting:
    return _posting(KIND_CANCEL, campaign_id, packet_id, amount_fen, "budget", "allocated")


def reclaim_posting(campaign_id: str, packet_id: int, amount_fen: int) -> ledger.Posting:
    return _posting(KIND_RECLAIM, campaign_id, packet_id, amount_fen, "budget", "issued")


async def allocate(conn: asyncpg.Connection, campaign_id: str, winners: Sequence[NewPacket]) -> int:
    """Create the winners' packets in `allocated` and post budget -> allocated for each.

    Runs in the caller's transaction (the draw's); a packet that already exists is skipped, so
    a repeated hand-over allocates nothing twice.
    """
    await ledger.ensure_accounts(conn, campaign_id, LEDGER_KINDS)
    created = 0
    for start in range(0, len(winners), ALLOCATION_CHUNK):
        chunk = winners[start:start + ALLOCATION_CHUNK]
        rows = await conn.fetch(
            """INSERT INTO packets (campaign_id, ticket, tier, amount_fen, registered_bank,
                                    registered_wallet)
               SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[])
               ON CONFLICT (campaign_id, ticket) DO NOTHING
               RETURNING id, amount_fen""",
            campaign_id, [w.ticket for w in chunk], [w.tier for w in chunk],
            [w.amount_fen for w in chunk],
            [w.registered_bank.upper() if w.registered_bank else None for w in chunk],
            [w.registered_wallet for w in chunk])
        await ledger.post_many(conn, [allocate_posting(campaign_id, r["id"], r["amount_fen"])
                                      for r in rows])
        created += len(rows)
    return created


async def find(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str, ticket: int
               ) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT id, failed_at, refused_by, {VIEW_COLUMNS} FROM packets WHERE campaign_id = $1 AND ticket = $2",
        campaign_id, ticket)


@dataclass(frozen=True)
class Credited:
    """A credit the bank confirmed (or holds) for a packet."""

    packet_id: int
    bank_code: str
    wallet_id: str
    credit_id: str
    credited_at: datetime


async def apply_issued(conn: asyncpg.Connection, credits: Sequence[Credited]) -> list[int]:
    """issuing|failed -> issued for confirmed credits, with their postings; returns the ids moved.

    A credit the bank holds is the truth even for a packet marked failed (a late success of a
    duplicate request): the packet takes the wallet the bank credited. Must run in a transaction.
    """
    if not credits:
        return []
    rows = await _fetch_batch(conn,
        """UPDATE packets p SET state = 'issued', wallet_bank = r.bank, wallet_id = r.wallet,
                  credit_id = r.credit_id, issued_at = r.credited_at, failure_code = NULL,
                  updated_at = now()
           FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                AS r(id, bank, wallet, credit_id, credited_at)
           WHERE p.id = ANY($1::bigint[]) AND p.id = r.id AND p.state IN ('issuing', 'failed')
           RETURNING p.id, p.campaign_id, p.amount_fen""",
        [c.packet_id for c in credits], [c.bank_code for c in credits],
        [c.wallet_id for c in credits], [c.credit_id for c in credits],
        [c.credited_at for c in credits])
    await ledger.post_many(conn, [issue_posting(r["campaign_id"], r["id"], r["amount_fen"]) for r in rows])
    moved = [r["id"] for r in rows]
    await close_outbox(conn, moved)
    return moved


@dataclass(frozen=True)
class Refused:
    packet_id: int
    bank_code: str
    wallet_id: str
    code: str


async def apply_refused(conn: asyncpg.Connection, refusals: Sequence[Refused]) -> tuple[list[int], list[int]]:
    """Permanent refusals of the packet's current wallet: wallet problems -> failed (re-claimable),
    anything else (e.g. the spending deadline passed) -> cancelled. Returns (failed, cancelled)."""
    fixable = [r for r in refusals if r.code in WALLET_REFUSALS]
    final = [r for r in refusals if r.code not in WALLET_REFUSALS]
    failed: list[int] = []
    if fixable:
        rows = await _fetch_batch(conn,
            """UPDATE packets p SET state = 'failed', failure_code = r.code, failed_at = now(),
                      refused_by = CASE WHEN r.bank = ANY(p.refused_by) THEN p.refused_by
                                        ELSE array_append(p.refused_by, r.bank) END,
                      updated_at = now()
               FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS r(id, bank, wallet, code)
               WHERE p.id = ANY($1::bigint[]) AND p.id = r.id AND p.state = 'issuing'
                 AND p.wallet_bank = r.bank AND p.wallet_id = r.wallet
               RETURNING p.id""",
            [r.packet_id for r in fixable], [r.bank_code for r in fixable],
            [r.wallet_id for r in fixable], [r.code for r in fixable])
        failed = [r["id"] for r in rows]
        await close_outbox(conn, failed)
    cancelled = await cancel(conn, [r.packet_id for r in final], from_states=(ISSUING,),
                             code={r.packet_id: r.code for r in final})
    return failed, cancelled


async def cancel(conn: asyncpg.Connection, packet_ids: Sequence[int], *,
                 from_states: Iterable[str], code: dict[int, str] | None = None) -> list[int]:
    """-> cancelled with allocated -> budget, for packets still in one of `from_states`."""
    if not packet_ids:
        return []
    codes = code or {}
    rows = await _fetch_batch(conn,
        """UPDATE packets p SET state = 'cancelled', closed_at = now(), updated_at = now(),
                  failure_code = COALESCE(r.code, p.failure_code)
           FROM unnest($1::bigint[], $2::text[]) AS r(id, code)
           WHERE p.id = ANY($1::bigint[]) AND p.id = r.id AND p.state = ANY($3::text[])
           RETURNING p.id, p.campaign_id, p.amount_fen""",
        list(packet_ids), [codes.get(i) for i in packet_ids], list(from_states))
    await ledger.post_many(conn, [cancel_posting(r["campaign_id"], r["id"], r["amount_fen"]) for r in rows])
    moved = [r["id"] for r in rows]
    await close_outbox(conn, moved)
    return moved


async def _fetch_batch(conn: asyncpg.Connection, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run a batch statement with hash joins (see the module docstring); the rest of the caller's
    transaction plans with the server's default again. After an error the transaction is rolled
    back, and the setting with it."""
    if not conn.is_in_transaction():
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    await conn.execute("SET LOCAL enable_nestloop = off")
    rows = await conn.fetch(query, *args)
    await conn.execute("RESET enable_nestloop")
    return rows


async def close_outbox(conn: asyncpg.Connection, packet_ids: Sequence[int]) -> None:
    """The packets reached an outcome: their open work items are done."""
    if packet_ids:
        await conn.execute(
            """UPDATE issuance_outbox SET done_at = now()
               WHERE packet_id = ANY($1::bigint[]) AND done_at IS NULL""", list(packet_ids))


@dataclass(frozen=True)
class Reclaimed:
    packet_id: int
    reclaimed_fen: int
    spent_fen: int


async def apply_reclaimed(conn: asyncpg.Connection, reclaims: Sequence[Reclaimed]) -> list[int]:
    """issued -> reclaimed (unspent part back to the budget) or spent (nothing left)."""
    if not reclaims:
        return []
    rows = await _fetch_batch(conn,
        """UPDATE packets p SET state = CASE WHEN r.reclaimed > 0 THEN 'reclaimed' ELSE 'spent' END,
                  reclaimed_fen = r.reclaimed, spent_fen = r.spent, closed_at = now(), updated_at = now()
           FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS r(id, reclaimed, spent)
           WHERE p.id = ANY($1::bigint[]) AND p.id = r.id AND p.state = 'issued'
           RETURNING p.id, p.campaign_id, p.reclaimed_fen""",
        [r.packet_id for r in reclaims], [r.reclaimed_fen for r in reclaims],
        [r.spent_fen for r in reclaims])
    await ledger.post_many(conn, [reclaim_posting(r["campaign_id"], r["id"], r["reclaimed_fen"])
                                  for r in rows if r["reclaimed_fen"] > 0])
    return [r["id"] for r in rows]


async def counts_by_state(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> dict[str, int]:
    rows = await conn.fetch("SELECT state, count(*) AS n FROM packets WHERE campaign_id = $1 GROUP BY state",
                            campaign_id)
    return {r["state"]: int(r["n"]) for r in rows}


def as_builtins(view: PacketView) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.to_builtins(view)
    return result
