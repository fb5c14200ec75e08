"""Packet checks for `stimulus audit ledger`: every packet's history matches its postings.

Per packet (postings are keyed by kind and packet id, so each kind appears at most once):
* `packet.allocate` of its amount, budget -> allocated, always;
* `packet.issue` of its amount, allocated -> issued, exactly when it was issued (states issued,
  reclaimed, spent);
* `packet.cancel` of its amount, allocated -> budget, exactly when it is cancelled;
* `packet.reclaim` of its reclaimed amount, issued -> budget, exactly when something was
  reclaimed;
* no posting names a packet that does not exist, and no packet balance is negative.
Per campaign, the allocated account holds exactly the open packets' amounts, and issued plus
redeemed hold exactly what was credited and not reclaimed, less what refunds after a packet's
reclaim gave back to the budget (the budget legs of `redemption.refund` postings, which the
merchant checks tie to the reconciled refunds).
"""

from __future__ import annotations

import asyncpg

from kernel.ledger import LedgerBreak

MAX_REPORTED = 50

_ROWS = """
WITH postings AS (
    SELECT t.ref, t.kind, t.campaign_id,
           sum(e.amount_fen) FILTER (WHERE e.amount_fen > 0) AS amount,
           min(a.kind) FILTER (WHERE e.amount_fen > 0) AS debit,
           min(a.kind) FILTER (WHERE e.amount_fen < 0) AS credit
    FROM ledger_transactions t
    JOIN ledger_entries e ON e.txn_id = t.id
    JOIN ledger_accounts a ON a.account = e.account
    WHERE t.kind IN ('packet.allocate', 'packet.issue', 'packet.cancel', 'packet.reclaim')
      AND ($1::text IS NULL OR t.campaign_id = $1)
    GROUP BY t.id
), per_packet AS (
    SELECT ref, min(campaign_id) AS campaign_id,
           max(amount) FILTER (WHERE kind = 'packet.allocate' AND debit = 'allocated' AND credit = 'budget') AS allocate,
           max(amount) FILTER (WHERE kind = 'packet.issue' AND debit = 'issued' AND credit = 'allocated') AS issue,
           max(amount) FILTER (WHERE kind = 'packet.cancel' AND debit = 'budget' AND credit = 'allocated') AS cancel,
           max(amount) FILTER (WHERE kind = 'packet.reclaim' AND debit = 'budget' AND credit = 'issued') AS reclaim,
           count(*) AS postings,
           count(*) FILTER (WHERE (kind, debit, credit) NOT IN (
               ('packet.allocate', 'allocated', 'budget'), ('packet.issue', 'issued', 'allocated'),
               ('packet.cancel', 'budget', 'allocated'), ('packet.reclaim', 'budget', 'issued'))) AS misrouted
    FROM postings GROUP BY ref
)
SELECT p.id, pp.ref, COALESCE(p.campaign_id, pp.campaign_id) AS campaign_id, p.state, p.amount_fen,
       p.reclaimed_fen, p.spent_fen, pp.allocate, pp.issue, pp.cancel, pp.reclaim, pp.misrouted
FROM (SELECT * FROM packets WHERE $1::text IS NULL OR campaign_id = $1) p
FULL JOIN per_packet pp ON pp.ref = p.id::text
WHERE p.id IS NULL OR pp.ref IS NULL OR pp.misrouted > 0
   OR pp.allocate IS DISTINCT FROM p.amount_fen
   OR (p.state IN ('issued', 'reclaimed', 'spent')) <> (pp.issue IS NOT NULL)
   OR (pp.issue IS NOT NULL AND pp.issue <> p.amount_fen)
   OR (p.state = 'cancelled') <> (pp.cancel IS NOT NULL)
   OR (pp.cancel IS NOT NULL AND pp.cancel <> p.amount_fen)
   OR (p.reclaimed_fen > 0) <> (pp.reclaim IS NOT NULL)
   OR (pp.reclaim IS NOT NULL AND (pp.reclaim <> p.reclaimed_fen OR p.state <> 'reclaimed'))
   OR p.amount_fen - p.spent_fen - p.reclaimed_fen < 0
   OR COALESCE(pp.issue, 0) - COALESCE(pp.reclaim, 0) < 0
   OR COALESCE(pp.allocate, 0) - COALESCE(pp.issue, 0) - COALESCE(pp.cancel, 0) < 0
ORDER BY 1 NULLS FIRST
LIMIT $2
"""

_TOTALS = """
SELECT c.campaign_id,
       (SELECT COALESCE(sum(amount_fen), 0) FROM packets
        WHERE campaign_id = c.campaign_id AND state IN ('allocated', 'issuing', 'failed'))::bigint AS open_fen,
       (SELECT COALESCE(sum(amount_fen - reclaimed_fen), 0) FROM packets
        WHERE campaign_id = c.campaign_id AND state IN ('issued', 'reclaimed', 'spent'))::bigint AS out_fen,
       (SELECT COALESCE(sum(e.amount_fen), 0) FROM ledger_entries e
        WHERE e.account = 'campaign:' || c.campaign_id || ':allocated')::bigint AS allocated,
       (SELECT COALESCE(sum(e.amount_fen), 0) FROM ledger_entries e
        WHERE e.account IN ('campaign:' || c.campaign_id || ':issued',
                            'campaign:' || c.campaign_id || ':redeemed'))::bigint AS issued_redeemed,
       (SELECT COALESCE(sum(e.amount_fen), 0) FROM ledger_transactions t JOIN ledger_entries e ON e.txn_id = t.id
        WHERE t.kind = 'redemption.refund' AND t.campaign_id = c.campaign_id
          AND e.account = 'campaign:' || c.campaign_id || ':budget')::bigint AS refunded_to_budget
FROM (SELECT DISTINCT campaign_id FROM packets WHERE $1::text IS NULL OR campaign_id = $1) c
"""


def _describe(row: asyncpg.Record) -> str:
    if row["id"] is None:
        return f"postings name packet {row['ref']}, which does not exist"
    if row["ref"] is None:
        return f"packet {row['id']} ({row['state']}) has no postings"
    figures = ", ".join(f"{kind} {row[kind]}" for kind in ("allocate", "issue", "cancel", "reclaim")
                        if row[kind] is not None)
    extra = f", {row['misrouted']} posting(s) on the wrong accounts" if row["misrouted"] else ""
    return (f"packet {row['id']} of campaign {row['campaign_id']}: state {row['state']}, amount {row['amount_fen']}, "
            f"reclaimed {row['reclaimed_fen']}, spent {row['spent_fen']}; postings: {figures or 'none'}{extra}")


async def ledger_checks(conn: asyncpg.Connection, campaign_id: str | None) -> list[LedgerBreak]:
    breaks = [LedgerBreak("packet_history_matches_postings", _describe(row))
              for row in await conn.fetch(_ROWS, campaign_id, MAX_REPORTED)]
    for row in await conn.fetch(_TOTALS, campaign_id):
        if row["allocated"] != row["open_fen"]:
            breaks.append(LedgerBreak("allocated_matches_open_packets",
                                      f"campaign {row['campaign_id']}: allocated is {row['allocated']} fen, "
                                      f"open packets hold {row['open_fen']} fen"))
        if row["issued_redeemed"] != row["out_fen"] - row["refunded_to_budget"]:
            breaks.append(LedgerBreak("issued_matches_credited_packets",
                                      f"campaign {row['campaign_id']}: issued + redeemed is {row['issued_redeemed']}"
                                      f" fen, packets credited and not reclaimed hold {row['out_fen']} fen, "
                                      f"refunds gave {row['refunded_to_budget']} fen back to the budget"))
    return breaks
