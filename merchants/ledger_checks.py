"""Redemption checks for `stimulus audit ledger`: money is redeemed exactly as far as it was matched.

* per campaign, the redeemed account holds exactly the amounts of the reconciled matches, the
  matched refunds taken off;
* every `redemption.match` posting moves money from that campaign's issued to its redeemed
  account and nowhere else; every `redemption.refund` moves it out of redeemed, to issued or
  budget only;
* per campaign, the refunds' postings gave the budget exactly what the matched refunds the banks
  returned to the city hold;
* no packet has more matched (net of refunds) than it was credited and not reclaimed;
* a match pairs a notice and a line that exist, both matched, of the same amount;
* (whole audit only: settlement files are the banks', not a campaign's) every settlement line
  names a stored file, and each file holds each of its line numbers once, as many lines as it
  stored (the import guarantees both in its transaction; no constraint re-checks them per row).
"""

from __future__ import annotations

import asyncpg

from kernel.ledger import LedgerBreak

MAX_REPORTED = 50

_REDEEMED = """
WITH matched AS (
    SELECT n.campaign_id, sum(CASE n.kind WHEN 'reversal' THEN -x.amount_fen ELSE x.amount_fen END)::bigint AS fen
    FROM reconciliation_matches x JOIN redemption_notices n ON n.id = x.notice_id
    WHERE $1::text IS NULL OR n.campaign_id = $1 GROUP BY n.campaign_id
), redeemed AS (
    SELECT a.campaign_id, COALESCE(sum(e.amount_fen), 0)::bigint AS fen
    FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account = a.account
    WHERE a.kind = 'redeemed' AND ($1::text IS NULL OR a.campaign_id = $1) GROUP BY a.campaign_id
)
SELECT COALESCE(m.campaign_id, r.campaign_id) AS campaign_id, COALESCE(m.fen, 0) AS matched,
       COALESCE(r.fen, 0) AS redeemed
FROM matched m FULL JOIN redeemed r ON r.campaign_id = m.campaign_id
WHERE COALESCE(m.fen, 0) <> COALESCE(r.fen, 0)
"""

_MISROUTED = """
SELECT t.kind, t.ref, t.campaign_id,
       string_agg(e.account || ' ' || e.amount_fen, ', ' ORDER BY e.amount_fen) AS legs
FROM ledger_transactions t JOIN ledger_entries e ON e.txn_id = t.id
WHERE t.kind IN ('redemption.match', 'redemption.refund') AND ($1::text IS NULL OR t.campaign_id = $1)
GROUP BY t.id, t.kind, t.ref, t.campaign_id
HAVING (t.kind = 'redemption.match' AND (
            count(*) <> 2
         OR count(*) FILTER (WHERE e.amount_fen > 0 AND e.account = 'campaign:' || t.campaign_id || ':redeemed') <> 1
         OR count(*) FILTER (WHERE e.amount_fen < 0 AND e.account = 'campaign:' || t.campaign_id || ':issued') <> 1))
    OR (t.kind = 'redemption.refund' AND (
            count(*) FILTER (WHERE e.amount_fen < 0 AND e.account = 'campaign:' || t.campaign_id || ':redeemed') <> 1
         OR count(*) FILTER (WHERE e.amount_fen > 0 AND e.account IN ('campaign:' || t.campaign_id || ':issued',
                                                                       'campaign:' || t.campaign_id || ':budget'))
            <> count(*) - 1))
LIMIT $2
"""

_REFUNDS_TO_BUDGET = """
WITH matched AS (
    SELECT n.campaign_id, sum(x.amount_fen)::bigint AS fen
    FROM reconciliation_matches x JOIN redemption_notices n ON n.id = x.notice_id
    WHERE x.returned_to = 'budget' AND ($1::text IS NULL OR n.campaign_id = $1) GROUP BY n.campaign_id
), posted AS (
    SELECT t.campaign_id, sum(e.amount_fen)::bigint AS fen
    FROM ledger_transactions t JOIN ledger_entries e ON e.txn_id = t.id
    WHERE t.kind = 'redemption.refund' AND e.account = 'campaign:' || t.campaign_id || ':budget'
      AND ($1::text IS NULL OR t.campaign_id = $1)
    GROUP BY t.campaign_id
)
SELECT COALESCE(m.campaign_id, p.campaign_id) AS campaign_id, COALESCE(m.fen, 0) AS matched,
       COALESCE(p.fen, 0) AS posted
FROM matched m FULL JOIN posted p ON p.campaign_id = m.campaign_id
WHERE COALESCE(m.fen, 0) <> COALESCE(p.fen, 0)
"""

_OVERSPENT = """
SELECT p.id, p.campaign_id, p.amount_fen, p.reclaimed_fen, sum(x.amount_fen * n.sign)::bigint AS matched
FROM reconciliation_matches x
JOIN (SELECT id, packet_id, CASE kind WHEN 'reversal' THEN -1 ELSE 1 END AS sign FROM redemption_notices) n
  ON n.id = x.notice_id
JOIN packets p ON p.id = n.packet_id
WHERE $1::text IS NULL OR p.campaign_id = $1
GROUP BY p.id HAVING sum(x.amount_fen * n.sign) > p.amount_fen - p.reclaimed_fen
LIMIT $2
"""

_PAIRS = """
SELECT x.notice_id, x.line_id, n.status AS notice_status, l.status AS line_status, n.amount_fen AS notice_fen,
       l.amount_fen AS line_fen, x.amount_fen
FROM reconciliation_matches x
LEFT JOIN redemption_notices n ON n.id = x.notice_id LEFT JOIN settlement_lines l ON l.id = x.line_id
WHERE ($1::text IS NULL OR n.campaign_id = $1 OR n.id IS NULL)
  AND (n.id IS NULL OR l.id IS NULL OR n.status <> 'matched' OR l.status <> 'matched'
       OR n.amount_fen <> l.amount_fen OR x.amount_fen <> l.amount_fen)
LIMIT $2
"""

_SETTLEMENT_LINES = """
SELECT COALESCE(f.id, l.file_id) AS file_id, f.id IS NOT NULL AS stored_file,
       f.line_count - f.rejected_count - f.repeated_count AS expected, COALESCE(l.lines, 0) AS lines,
       COALESCE(l.numbers, 0) AS numbers
FROM settlement_files f
FULL JOIN (SELECT file_id, count(*) AS lines, count(DISTINCT line_no) AS numbers
           FROM settlement_lines GROUP BY file_id) l ON l.file_id = f.id
WHERE f.id IS NULL OR l.lines <> l.numbers
   OR COALESCE(l.lines, 0) <> f.line_count - f.rejected_count - f.repeated_count
LIMIT $1
"""


def _settlement_line_break(row: asyncpg.Record) -> LedgerBreak:
    if not row["stored_file"]:
        return LedgerBreak("settlement_lines_of_stored_files",
                           f"{row['lines']} settlement lines name file {row['file_id']}, which is not stored")
    return LedgerBreak("settlement_lines_of_stored_files",
                       f"settlement file {row['file_id']} stored {row['expected']} lines; the table holds "
                       f"{row['lines']} under {row['numbers']} line numbers")


async def ledger_checks(conn: asyncpg.Connection, campaign_id: str | None) -> list[LedgerBreak]:
    breaks = [LedgerBreak("redeemed_matches_reconciled",
                          f"campaign {r['campaign_id']}: redeemed is {r['redeemed']} fen, reconciled matches "
                          f"hold {r['matched']} fen")
              for r in await conn.fetch(_REDEEMED, campaign_id)]
    breaks += [LedgerBreak("redemption_posting_routed", f"{r['kind']} posting {r['ref']} of campaign "
                           f"{r['campaign_id']}: {r['legs']}, not "
                           f"{'issued -> redeemed' if r['kind'] == 'redemption.match' else 'redeemed -> issued/budget'}")
               for r in await conn.fetch(_MISROUTED, campaign_id, MAX_REPORTED)]
    breaks += [LedgerBreak("refunds_to_budget_match_reconciled",
                           f"campaign {r['campaign_id']}: refunds posted {r['posted']} fen back to the budget, "
                           f"matched refunds the banks returned to the city hold {r['matched']} fen")
               for r in await conn.fetch(_REFUNDS_TO_BUDGET, campaign_id)]
    breaks += [LedgerBreak("no_packet_redeemed_beyond_credit",
                           f"packet {r['id']} of campaign {r['campaign_id']}: {r['matched']} fen matched, "
                           f"{r['amount_fen']} credited, {r['reclaimed_fen']} reclaimed")
               for r in await conn.fetch(_OVERSPENT, campaign_id, MAX_REPORTED)]
    breaks += [LedgerBreak("match_pairs_equal_amounts",
                           f"notice {r['notice_id']} ({r['notice_status']}, {r['notice_fen']} fen) matched to line "
                           f"{r['line_id']} ({r['line_status']}, {r['line_fen']} fen) for {r['amount_fen']} fen")
               for r in await conn.fetch(_PAIRS, campaign_id, MAX_REPORTED)]
    if campaign_id is None:
        breaks += [_settlement_line_break(r) for r in await conn.fetch(_SETTLEMENT_LINES, MAX_REPORTED)]
    return breaks
