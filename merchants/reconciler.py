"""Reconciliation: the merchants' redemption notices against the banks' settlement lines.

A run pairs what the merchants told us with what the banks settled, in set-based SQL over
chunks of notices, each chunk one transaction, so a run killed at any point leaves every
committed chunk whole and the next run carries on from what is still unpaired:

1. by bank reference: the notice's `bank_reference` is the line's `spend_id` at the same bank,
   for the same merchant and packet. Equal amounts match; different amounts are an
   `amount_mismatch` break holding both sides;
2. by merchant, packet and amount when the notice has no usable reference: the line closest in
   time within the window;
3. what stays unpaired is classified once the evidence allows: a notice whose moment (plus the
   window) a settlement file covers, with no line for it, is `missing_at_bank` (or a
   `duplicate` when another notice already took its spend); a line the merchant has not
   notified within the grace period is `missing_at_merchant`; a line listing a spend the bank
   already listed is a `duplicate`. Before that, both stay pending: an intraday file never turns
   spends the bank has yet to list into breaks.

A pair found after one side was already a break is matched `late`: the earlier break is closed by
the reconciler and a `late` break is opened for an operator to see. Money moves only on a match:
each chunk posts issued -> redeemed per campaign, for exactly the amounts it matched, in the
chunk's transaction.

Reversals (refunds) pair with the banks' refund lines, never with spends: by reference (the
refund id), else by merchant, packet, amount and time; either way the line must refund the very
spend the reversed payment was matched with, so a reversal waits until its payment is matched.
A matched refund moves its money out of redeemed to where the bank put it: back to issued when
the packet was live (`wallet`), to budget when its balance had been reclaimed (`budget`). An
unpaired reversal whose payment is matched is `missing_at_bank` once a file covers its moment.

One run at a time: the run holds the `reconciliation` lease (`kernel.leases`), renewed by every
chunk's transaction before it writes, so a run that lost it stops before writing anything; a run
that died holding it is closed as interrupted by the next, once its lease has expired.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from kernel import audit_log, ledger
from kernel.errors import Conflict, NotFound
from kernel.leases import Lease

RECONCILE_LEASE = "reconciliation"
# Renewed by each chunk's transaction. A run killed mid-way is taken over this long after its last
# chunk began. A chunk slower than this (250,000 notices take ~7 s) is still safe: nobody takes the
# lease over while the chunk's transaction holds it, and once someone has, the next chunk stops.
RUN_LEASE_TTL_S = 20.0
BANK_TIME_ZONE = "Asia/Shanghai"     # the banks' settlement days (UTC+8)
DEFAULT_WINDOW_S = 600.0
DEFAULT_GRACE_S = 3600.0
DEFAULT_CHUNK = 250_000
BREAK_CLASSES = ("missing_at_bank", "missing_at_merchant", "amount_mismatch", "duplicate", "late")
RECONCILER = "reconciler"


@dataclass(frozen=True)
class RunOptions:
    as_of: datetime | None = None          # the run's clock (None: the database's now)
    window_s: float = DEFAULT_WINDOW_S     # notice time vs settlement time, either way
    grace_s: float = DEFAULT_GRACE_S       # how long a merchant has to notify a settled spend
    chunk: int = DEFAULT_CHUNK             # notices per transaction


@dataclass
class RunSummary:
    run_id: int
    outcome: str
    counts: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


# -- candidates: unpaired, or a "missing" break that a late arrival may still pair -------------

_NOTICE_OPEN = """(n.status = 'pending' OR (n.status = 'break' AND EXISTS (
    SELECT 1 FROM reconciliation_breaks b WHERE b.notice_id = n.id AND b.class = 'missing_at_bank'
                                           AND b.resolved_at IS NULL)))"""
_LINE_OPEN = """(l.status = 'open' OR (l.status = 'break' AND EXISTS (
    SELECT 1 FROM reconciliation_breaks b WHERE b.line_id = l.id AND b.notice_id IS NULL
                                           AND b.class = 'missing_at_merchant' AND b.resolved_at IS NULL)))"""

# `OFFSET 0` in an EXISTS below keeps it a per-row index probe: without it PostgreSQL may turn an
# EXISTS under OR into a hashed subplan, which reads and hashes the whole other table (a million
# settlement lines or notices) to answer for the handful of rows still unpaired.

_PAIRS_TABLE = """CREATE TEMPORARY TABLE IF NOT EXISTS recon_pairs (
    notice_id bigint, line_id bigint, notice_fen bigint, line_fen bigint, campaign_id text,
    merchant_id text, late boolean, matched_by text, returned_to text) ON COMMIT DELETE ROWS"""

_BY_REFERENCE = f"""
INSERT INTO recon_pairs
SELECT notice_id, line_id, notice_fen, line_fen, campaign_id, merchant_id, late, 'reference', NULL
FROM (SELECT DISTINCT ON (line_id) * FROM (
        SELECT DISTINCT ON (n.id) n.id AS notice_id, l.id AS line_id, n.amount_fen AS notice_fen,
               l.amount_fen AS line_fen, n.campaign_id, n.merchant_id,
               (n.status = 'break' OR l.status = 'break') AS late
        FROM redemption_notices n
        JOIN settlement_lines l ON l.bank_code = n.bank_code AND l.spend_id = n.bank_reference
                               AND l.merchant_id = n.merchant_id AND l.payment_reference = n.payment_reference
                               AND l.kind = 'spend'
        WHERE n.id BETWEEN $1 AND $2 AND n.kind = 'payment' AND n.bank_reference IS NOT NULL
          AND {_NOTICE_OPEN} AND {_LINE_OPEN}
        ORDER BY n.id, l.id) by_notice
      ORDER BY line_id, notice_id) chosen
"""

_BY_FALLBACK = f"""
INSERT INTO recon_pairs
SELECT notice_id, line_id, amount_fen, amount_fen, campaign_id, merchant_id, late, 'fallback', NULL
FROM (SELECT DISTINCT ON (line_id) * FROM (
        SELECT DISTINCT ON (n.id) n.id AS notice_id, l.id AS line_id, n.amount_fen, n.campaign_id,
               n.merchant_id, (n.status = 'break' OR l.status = 'break') AS late,
               abs(extract(epoch FROM l.settled_at - n.occurred_at)) AS gap
        FROM redemption_notices n
        JOIN settlement_lines l ON l.merchant_id = n.merchant_id AND l.payment_reference = n.payment_reference
                               AND l.amount_fen = n.amount_fen AND l.bank_code = n.bank_code AND l.kind = 'spend'
                               AND l.settled_at BETWEEN n.occurred_at - $3 * interval '1 second'
                                                    AND n.occurred_at + $3 * interval '1 second'
        WHERE n.id BETWEEN $1 AND $2 AND n.kind = 'payment' AND {_NOTICE_OPEN} AND {_LINE_OPEN}
          AND (n.bank_reference IS NULL OR NOT EXISTS (
                SELECT 1 FROM settlement_lines r WHERE r.bank_code = n.bank_code AND r.spend_id = n.bank_reference
                OFFSET 0))
        ORDER BY n.id, gap, l.id) by_notice
      ORDER BY line_id, gap, notice_id) chosen
"""

# A reversal and the refund line of the spend its payment was matched with: by the refund id
# first, else the same amount closest in time within the window.
_REVERSALS = f"""
INSERT INTO recon_pairs
SELECT notice_id, line_id, notice_fen, line_fen, campaign_id, merchant_id, late,
       CASE WHEN by_fallback THEN 'fallback' ELSE 'reference' END, returned_to
FROM (SELECT DISTINCT ON (line_id) * FROM (
        SELECT DISTINCT ON (n.id) n.id AS notice_id, l.id AS line_id, n.amount_fen AS notice_fen,
               l.amount_fen AS line_fen, n.campaign_id, n.merchant_id,
               (n.status = 'break' OR l.status = 'break') AS late, l.returned_to,
               l.spend_id IS DISTINCT FROM n.bank_reference AS by_fallback,
               abs(extract(epoch FROM l.settled_at - n.occurred_at)) AS gap
        FROM redemption_notices n
        JOIN redemption_notices p ON p.merchant_id = n.merchant_id AND p.merchant_txn_id = n.reverses_txn_id
                                 AND p.status = 'matched'
        JOIN reconciliation_matches pm ON pm.notice_id = p.id
        JOIN settlement_lines pl ON pl.id = pm.line_id
        JOIN settlement_lines l ON l.bank_code = pl.bank_code AND l.kind = 'refund' AND l.refund_of = pl.spend_id
                               AND l.merchant_id = n.merchant_id AND l.payment_reference = n.payment_reference
        WHERE n.id BETWEEN $1 AND $2 AND n.kind = 'reversal' AND {_NOTICE_OPEN} AND {_LINE_OPEN}
          AND (l.spend_id = n.bank_reference
               OR (l.amount_fen = n.amount_fen
                   AND l.settled_at BETWEEN n.occurred_at - $3 * interval '1 second'
                                        AND n.occurred_at + $3 * interval '1 second'
                   AND (n.bank_reference IS NULL OR NOT EXISTS (
                         SELECT 1 FROM settlement_lines r WHERE r.bank_code = n.bank_code
                                                            AND r.spend_id = n.bank_reference OFFSET 0))))
        ORDER BY n.id, by_fallback, gap, l.id) by_notice
      ORDER BY line_id, by_fallback, gap, notice_id) chosen
"""

_APPLY = (
    """INSERT INTO reconciliation_matches (notice_id, line_id, run_id, matched_by, late, amount_fen, returned_to)
       SELECT notice_id, line_id, $1, matched_by, late, line_fen, returned_to FROM recon_pairs
       WHERE notice_fen = line_fen""",
    """UPDATE redemption_notices n SET status = CASE WHEN p.notice_fen = p.line_fen THEN 'matched' ELSE 'break' END
       FROM recon_pairs p WHERE n.id = p.notice_id""",
    """UPDATE settlement_lines l SET status = CASE WHEN p.notice_fen = p.line_fen THEN 'matched' ELSE 'break' END
       FROM recon_pairs p WHERE l.id = p.line_id""",
    # A late pair closes the "missing" breaks it answers.
    """UPDATE reconciliation_breaks b
       SET resolved_at = clock_timestamp(), resolved_by = 'reconciler',
           resolution = 'paired after the cut-off in run ' || $1::bigint
       FROM recon_pairs p
       WHERE p.late AND b.resolved_at IS NULL
         AND ((b.class = 'missing_at_bank' AND b.notice_id = p.notice_id)
              OR (b.class = 'missing_at_merchant' AND b.notice_id IS NULL AND b.line_id = p.line_id))""",
    """INSERT INTO reconciliation_breaks (class, notice_id, line_id, campaign_id, merchant_id, amount_fen, detail,
                                          run_id)
       SELECT 'late', notice_id, line_id, campaign_id, merchant_id, line_fen,
              jsonb_build_object('matched_by', matched_by), $1
       FROM recon_pairs WHERE late AND notice_fen = line_fen
       ON CONFLICT (class, notice_id) WHERE notice_id IS NOT NULL DO NOTHING""",
    """INSERT INTO reconciliation_breaks (class, notice_id, line_id, campaign_id, merchant_id, amount_fen, detail,
                                          run_id)
       SELECT 'amount_mismatch', notice_id, line_id, campaign_id, merchant_id, notice_fen,
              jsonb_build_object('notice_fen', notice_fen, 'line_fen', line_fen), $1
       FROM recon_pairs WHERE notice_fen <> line_fen
       ON CONFLICT (class, notice_id) WHERE notice_id IS NOT NULL DO NOTHING""",
)

_PAIR_COUNTS = """SELECT count(*) FILTER (WHERE notice_fen = line_fen) AS matched,
                         count(*) FILTER (WHERE notice_fen = line_fen AND late) AS late,
                         count(*) FILTER (WHERE notice_fen <> line_fen) AS amount_mismatch
                  FROM recon_pairs"""
_PAIR_MONEY = """SELECT campaign_id,
                        COALESCE(sum(line_fen) FILTER (WHERE returned_to IS NULL), 0)::bigint AS fen,
                        COALESCE(sum(line_fen) FILTER (WHERE returned_to = 'wallet'), 0)::bigint AS to_wallet,
                        COALESCE(sum(line_fen) FILTER (WHERE returned_to = 'budget'), 0)::bigint AS to_budget
                 FROM recon_pairs WHERE notice_fen = line_fen GROUP BY campaign_id ORDER BY campaign_id"""

# -- classification of what stays unpaired ------------------------------------------------------

# The moment by which the bank must have settled a notice's spend, and a file that vouches for it.
_COVERED = f"""EXISTS (SELECT 1 FROM settlement_files f
    WHERE f.bank_code = n.bank_code
      AND f.settlement_date = ((n.occurred_at + $2 * interval '1 second') AT TIME ZONE '{BANK_TIME_ZONE}')::date
      AND f.covers_until >= n.occurred_at + $2 * interval '1 second')"""

_DUPLICATE_NOTICES = f"""
WITH found AS (
    SELECT n.id AS notice_id, n.campaign_id, n.merchant_id, n.amount_fen,
           (SELECT min(l.id) FROM settlement_lines l
            WHERE l.bank_code = n.bank_code AND l.spend_id = n.bank_reference) AS line_id
    FROM redemption_notices n
    WHERE n.status = 'pending' AND n.kind = 'payment' AND n.occurred_at + $2 * interval '1 second' <= $3
      AND (
        (n.bank_reference IS NOT NULL
         AND EXISTS (SELECT 1 FROM settlement_lines l WHERE l.bank_code = n.bank_code
                     AND l.spend_id = n.bank_reference AND l.status <> 'open' OFFSET 0)
         AND NOT EXISTS (SELECT 1 FROM settlement_lines l WHERE l.bank_code = n.bank_code
                         AND l.spend_id = n.bank_reference AND l.status = 'open' OFFSET 0))
        OR (n.bank_reference IS NULL AND {_COVERED}
            AND EXISTS (SELECT 1 FROM redemption_notices m
                        WHERE m.packet_id = n.packet_id AND m.merchant_id = n.merchant_id
                          AND m.payment_reference = n.payment_reference
                          AND m.amount_fen = n.amount_fen AND m.id <> n.id AND m.status = 'matched'
                          AND m.occurred_at BETWEEN n.occurred_at - $2 * interval '1 second'
                                                AND n.occurred_at + $2 * interval '1 second' OFFSET 0)))
), marked AS (
    UPDATE redemption_notices n SET status = 'break' FROM found WHERE n.id = found.notice_id RETURNING n.id)
INSERT INTO reconciliation_breaks (class, notice_id, line_id, campaign_id, merchant_id, amount_fen, detail, run_id)
SELECT 'duplicate', notice_id, line_id, campaign_id, merchant_id, amount_fen,
       jsonb_build_object('side', 'merchant'), $1
FROM found ON CONFLICT (class, notice_id) WHERE notice_id IS NOT NULL DO NOTHING
"""

_DUPLICATE_LINES = """
WITH found AS (
    SELECT l.id AS line_id, l.merchant_id, l.amount_fen, l.spend_id, l.payment_reference
    FROM settlement_lines l
    WHERE l.status = 'open'
      AND EXISTS (SELECT 1 FROM settlement_lines o WHERE o.bank_code = l.bank_code AND o.spend_id = l.spend_id
                  AND (o.id < l.id OR o.status <> 'open'))
), marked AS (
    UPDATE settlement_lines l SET status = 'break' FROM found WHERE l.id = found.line_id RETURNING l.id)
INSERT INTO reconciliation_breaks (class, line_id, campaign_id, merchant_id, amount_fen, detail, run_id)
SELECT 'duplicate', f.line_id,
       (SELECT p.campaign_id FROM packets p WHERE merchants_payment_reference(p.campaign_id, p.id) = f.payment_reference),
       f.merchant_id, f.amount_fen, jsonb_build_object('side', 'bank', 'spend_id', f.spend_id), $1
FROM found f ON CONFLICT (class, line_id) WHERE line_id IS NOT NULL AND notice_id IS NULL DO NOTHING
"""

_MISSING_AT_BANK = f"""
WITH found AS (
    SELECT n.id AS notice_id, n.campaign_id, n.merchant_id, n.amount_fen, n.bank_reference
    FROM redemption_notices n
    WHERE n.status = 'pending' AND n.occurred_at + $2 * interval '1 second' <= $3
      AND (n.kind = 'payment' OR EXISTS (SELECT 1 FROM redemption_notices p WHERE p.merchant_id = n.merchant_id
                                         AND p.merchant_txn_id = n.reverses_txn_id AND p.status = 'matched'
                                         OFFSET 0))
      AND {_COVERED}
), marked AS (
    UPDATE redemption_notices n SET status = 'break' FROM found WHERE n.id = found.notice_id RETURNING n.id)
INSERT INTO reconciliation_breaks (class, notice_id, campaign_id, merchant_id, amount_fen, detail, run_id)
SELECT 'missing_at_bank', notice_id, campaign_id, merchant_id, amount_fen,
       jsonb_build_object('bank_reference', bank_reference), $1
FROM found ON CONFLICT (class, notice_id) WHERE notice_id IS NOT NULL DO NOTHING
"""

_MISSING_AT_MERCHANT = """
WITH found AS (
    SELECT l.id AS line_id, l.merchant_id, l.amount_fen, l.spend_id, l.payment_reference
    FROM settlement_lines l
    WHERE l.status = 'open' AND l.settled_at + $2 * interval '1 second' <= $3
), marked AS (
    UPDATE settlement_lines l SET status = 'break' FROM found WHERE l.id = found.line_id RETURNING l.id)
INSERT INTO reconciliation_breaks (class, line_id, campaign_id, merchant_id, amount_fen, detail, run_id)
SELECT 'missing_at_merchant', f.line_id,
       (SELECT p.campaign_id FROM packets p WHERE merchants_payment_reference(p.campaign_id, p.id) = f.payment_reference),
       f.merchant_id, f.amount_fen, jsonb_build_object('spend_id', f.spend_id), $1
FROM found f ON CONFLICT (class, line_id) WHERE line_id IS NOT NULL AND notice_id IS NULL DO NOTHING
"""

_RECONCILED_DAYS = f"""
INSERT INTO reconciled_days (bank_code, settlement_date, run_id)
SELECT DISTINCT f.bank_code, f.settlement_date, $1::bigint
FROM settlement_files f
WHERE f.complete
  AND NOT EXISTS (SELECT 1 FROM settlement_lines l WHERE l.bank_code = f.bank_code
                  AND l.settlement_date = f.settlement_date AND l.status = 'open')
  AND NOT EXISTS (SELECT 1 FROM redemption_notices n WHERE n.bank_code = f.bank_code AND n.status = 'pending'
                  AND (n.occurred_at AT TIME ZONE '{BANK_TIME_ZONE}')::date = f.settlement_date)
ON CONFLICT DO NOTHING
"""


def match_posting(run_id: int, chunk: int, campaign_id: str, amount_fen: int) -> ledger.Posting:
    """Spent money the banks confirmed: issued -> redeemed."""
    return ledger.Posting("redemption.match", f"run:{run_id}:{chunk}:{campaign_id}", (
        ledger.Leg(ledger.account_name(campaign_id, "redeemed"), amount_fen),
        ledger.Leg(ledger.account_name(campaign_id, "issued"), -amount_fen),
    ), campaign_id)


def refund_posting(run_id: int, chunk: int, campaign_id: str, to_wallet_fen: int, to_budget_fen: int) -> ledger.Posting:
    """Refunds the banks confirmed: redeemed -> issued (live packets), redeemed -> budget (reclaimed)."""
    legs = [ledger.Leg(ledger.account_name(campaign_id, "redeemed"), -(to_wallet_fen + to_budget_fen))]
    for kind, fen in (("issued", to_wallet_fen), ("budget", to_budget_fen)):
        if fen:
            legs.append(ledger.Leg(ledger.account_name(campaign_id, kind), fen))
    return ledger.Posting("redemption.refund", f"run:{run_id}:{chunk}:{campaign_id}", tuple(legs), campaign_id)


def _postings(run_id: int, chunk: int, money: list[asyncpg.Record]) -> list[ledger.Posting]:
    postings = []
    for row in money:
        if row["fen"]:
            postings.append(match_posting(run_id, chunk, row["campaign_id"], int(row["fen"])))
        if row["to_wallet"] or row["to_budget"]:
            postings.append(refund_posting(run_id, chunk, row["campaign_id"], int(row["to_wallet"]),
                                           int(row["to_budget"])))
    return postings


async def _pair_chunk(conn: asyncpg.Connection, lease: Lease, run_id: int, chunk: int, query: str,
                      args: tuple[Any, ...], counts: dict[str, int]) -> None:
    async with conn.transaction():
        await lease.fence(conn)
        await conn.execute(_PAIRS_TABLE)
        await conn.execute(query, *args)
        found = await conn.fetchrow(_PAIR_COUNTS)
        if not (found["matched"] or found["amount_mismatch"]):
            return
        for statement in _APPLY:
            await conn.execute(statement, *((run_id,) if "$1" in statement else ()))
        money = await conn.fetch(_PAIR_MONEY)
        await ledger.post_many(conn, _postings(run_id, chunk, money))
    for key in ("matched", "late", "amount_mismatch"):
        counts[key] = counts.get(key, 0) + int(found[key])
    counts["matched_fen"] = counts.get("matched_fen", 0) + sum(int(r["fen"]) for r in money)
    refunded = sum(int(r["to_wallet"]) + int(r["to_budget"]) for r in money)
    if refunded:
        counts["refunded_fen"] = counts.get("refunded_fen", 0) + refunded


async def _classify(conn: asyncpg.Connection, lease: Lease, run_id: int, as_of: datetime, options: RunOptions,
                    counts: dict[str, int]) -> None:
    async with conn.transaction():
        await lease.fence(conn)
        for name, statement, margin in (
                ("duplicate_notices", _DUPLICATE_NOTICES, options.window_s),
                ("duplicate_lines", _DUPLICATE_LINES, None),
                ("missing_at_bank", _MISSING_AT_BANK, options.window_s),
                ("missing_at_merchant", _MISSING_AT_MERCHANT, options.grace_s)):
            args: tuple[Any, ...] = (run_id,) if margin is None else (run_id, margin, as_of)
            status = await conn.execute(statement, *args)
            counts[name] = int(status.split()[-1])
        await conn.execute(_RECONCILED_DAYS, run_id)


async def _outcome(conn: asyncpg.Connection, counts: dict[str, int]) -> str:
    row = await conn.fetchrow(
        f"""SELECT p.pending_notices, p.without_file,
                   (SELECT count(*) FROM settlement_lines WHERE status = 'open') AS open_lines,
                   (SELECT count(*) FROM reconciliation_breaks WHERE resolved_at IS NULL) AS open_breaks
            FROM (SELECT count(*) AS pending_notices,
                         count(*) FILTER (WHERE NOT EXISTS (
                             SELECT 1 FROM settlement_files f WHERE f.bank_code = n.bank_code
                               AND f.settlement_date = (n.occurred_at AT TIME ZONE '{BANK_TIME_ZONE}')::date))
                             AS without_file
                  FROM redemption_notices n WHERE n.status = 'pending') p""")
    for key in ("pending_notices", "without_file", "open_lines", "open_breaks"):
        counts[key] = int(row[key])
    if counts["without_file"]:
        return "incomplete"
    if counts["open_breaks"]:
        return "breaks"
    if counts["pending_notices"] or counts["open_lines"]:
        return "reconciled-with-pending"
    return "reconciled"


def run_lease() -> Lease:
    return Lease(RECONCILE_LEASE, RUN_LEASE_TTL_S)


async def run(conn: asyncpg.Connection, options: RunOptions | None = None,
              progress: Callable[[str, int, int], None] | None = None, *, lease: Lease | None = None) -> RunSummary:
    """One reconciliation run over everything still unpaired; safe to repeat, safe to kill.

    `lease`: the `reconciliation` lease when the caller already holds it (the scheduler keeps it
    for its whole round); otherwise the run takes one of its own and releases it at the end.
    """
    options = options or RunOptions()
    started = time.perf_counter()
    own = lease is None
    lease = lease or run_lease()
    if own and not await lease.take(conn):
        raise Conflict("another reconciliation run is under way", code="reconciliation_running")
    try:
        async with conn.transaction():
            await lease.fence(conn)
            # Holding the lease, any run still open died mid-way: its committed chunks stand.
            await conn.execute("""UPDATE reconciliation_runs SET finished_at = clock_timestamp(), outcome = 'incomplete',
                                         counts = counts || '{"interrupted": 1}'
                                  WHERE finished_at IS NULL""")
            run_id, now = await conn.fetchrow("INSERT INTO reconciliation_runs DEFAULT VALUES RETURNING id, started_at")
        as_of = options.as_of or now
        counts: dict[str, int] = {}
        bounds = await conn.fetchrow(
            """SELECT min(id) FILTER (WHERE kind = 'payment') AS lo, max(id) FILTER (WHERE kind = 'payment') AS hi,
                      min(id) FILTER (WHERE kind = 'reversal') AS rlo, max(id) FILTER (WHERE kind = 'reversal') AS rhi
               FROM redemption_notices WHERE status IN ('pending', 'break')""")
        # Payments by reference, then by merchant, packet and amount; then the reversals, whose
        # payments the first two passes may just have matched. Chunk numbers key the postings.
        passes = (("by reference", _BY_REFERENCE, "lo", "hi", ()),
                  ("by merchant, packet and amount", _BY_FALLBACK, "lo", "hi", (options.window_s,)),
                  ("refunds", _REVERSALS, "rlo", "rhi", (options.window_s,)))
        chunk = 0
        for label, query, low, high, extra in passes:
            if bounds[low] is None:
                continue
            lo, hi = int(bounds[low]), int(bounds[high])
            firsts = range(lo, hi + 1, options.chunk)
            for index, first in enumerate(firsts):
                last = min(first + options.chunk - 1, hi)
                await _pair_chunk(conn, lease, run_id, chunk, query, (first, last, *extra), counts)
                chunk += 1
                if progress is not None:
                    progress(label, index + 1, len(firsts))
        await _classify(conn, lease, run_id, as_of, options, counts)
        outcome = await _outcome(conn, counts)
        async with conn.transaction():
            await lease.fence(conn)
            await conn.execute("UPDATE reconciliation_runs SET finished_at = clock_timestamp(), outcome = $2, "
                               "counts = $3 WHERE id = $1", run_id, outcome, counts)
        return RunSummary(run_id, outcome, counts, time.perf_counter() - started)
    finally:
        if own:
            await lease.release(conn)


# -- breaks -------------------------------------------------------------------------------------


class Break(msgspec.Struct, frozen=True):
    id: int
    break_class: str = msgspec.field(name="class")
    notice_id: int | None = None
    line_id: int | None = None
    campaign_id: str | None = None
    merchant_id: str | None = None
    amount_fen: int | None = None
    detail: dict[str, Any] = msgspec.field(default_factory=dict)
    run_id: int = 0
    found_at: datetime | None = None
    merchant_txn_id: str | None = None
    spend_id: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None


_BREAK_COLUMNS = """b.id, b.class, b.notice_id, b.line_id, b.campaign_id, b.merchant_id, b.amount_fen, b.detail,
                    b.run_id, b.found_at, n.merchant_txn_id, l.spend_id, b.resolved_at, b.resolved_by, b.resolution"""


def _break(row: asyncpg.Record) -> Break:
    values = dict(row)
    values["break_class"] = values.pop("class")
    detail = values.get("detail")
    values["detail"] = msgspec.json.decode(detail) if isinstance(detail, str | bytes) else (detail or {})
    return Break(**values)


async def list_breaks(conn: asyncpg.Connection, *, campaign_id: str | None = None, break_class: str | None = None,
                      open_only: bool = True, after: int = 0, limit: int = 100) -> list[Break]:
    rows = await conn.fetch(
        f"""SELECT {_BREAK_COLUMNS}
            FROM reconciliation_breaks b
            LEFT JOIN redemption_notices n ON n.id = b.notice_id
            LEFT JOIN settlement_lines l ON l.id = b.line_id
            WHERE b.id > $1 AND ($2::text IS NULL OR b.campaign_id = $2) AND ($3::text IS NULL OR b.class = $3)
              AND (NOT $4 OR b.resolved_at IS NULL)
            ORDER BY b.id LIMIT $5""", after, campaign_id, break_class, open_only, limit)
    return [_break(r) for r in rows]


async def resolve(conn: asyncpg.Connection, break_id: int, resolution: str, actor: str) -> Break:
    """An operator closes a break with the reason, in the audit log; the money stays as it is."""
    async with conn.transaction():
        row = await conn.fetchrow("SELECT resolved_at FROM reconciliation_breaks WHERE id = $1 FOR UPDATE", break_id)
        if row is None:
            raise NotFound(f"no break {break_id}", code="break_not_found")
        if row["resolved_at"] is not None:
            raise Conflict(f"break {break_id} is already resolved", code="break_already_resolved")
        await conn.execute("UPDATE reconciliation_breaks SET resolved_at = clock_timestamp(), resolved_by = $2, "
                           "resolution = $3 WHERE id = $1", break_id, actor, resolution)
        found = await conn.fetchrow(f"""SELECT {_BREAK_COLUMNS} FROM reconciliation_breaks b
                                        LEFT JOIN redemption_notices n ON n.id = b.notice_id
                                        LEFT JOIN settlement_lines l ON l.id = b.line_id WHERE b.id = $1""", break_id)
        resolved = _break(found)
        await audit_log.append(conn, actor=actor, action="reconciliation.resolve", subject=f"break:{break_id}",
                               details={"class": resolved.break_class, "resolution": resolution,
                                        "notice_id": resolved.notice_id, "line_id": resolved.line_id,
                                        "amount_fen": resolved.amount_fen})
    return resolved


class RunView(msgspec.Struct, frozen=True):
    id: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    counts: dict[str, int]


async def recent_runs(conn: asyncpg.Connection, limit: int = 20) -> list[RunView]:
    rows = await conn.fetch("SELECT id, started_at, finished_at, outcome, counts FROM reconciliation_runs "
                            "ORDER BY id DESC LIMIT $1", limit)
    return [RunView(r["id"], r["started_at"], r["finished_at"], r["outcome"],
                    msgspec.json.decode(r["counts"]) if isinstance(r["counts"], str | bytes) else dict(r["counts"]))
            for r in rows]
