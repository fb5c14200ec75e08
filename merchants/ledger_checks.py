"""Redemption checks for `stimulus audit ledger`: money is redeemed exactly as far as it was matched.

* per campaign, the redeemed account holds exactly the amounts of the reconciled matches;
* every `redemption.match` posting moves money from that campaign's issued to its redeemed
  account and nowhere else;
* no packet has more matched than it was credited and not reclaimed;
* a match pairs a notice and a line that exist, both matched, of the same amount.
"""

from __future__ import annotations

import asyncpg

from stimulus.ledger import LedgerBreak

MAX_REPORTED = 50

_REDEEMED = """
WITH matched AS (
    SELECT n.campaign_id, sum(x.amount_fen)::bigint AS fen
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
SELECT t.ref, t.campaign_id,
       string_agg(e.account || ' ' || e.amount_fen, ', ' ORDER BY e.amount_fen) AS legs
FROM ledger_transactions t JOIN ledger_entries e ON e.txn_id = t.id
WHERE t.kind = 'redemption.match' AND ($1::text IS NULL OR t.campaign_id = $1)
GROUP BY t.id, t.ref, t.campaign_id
HAVING count(*) <> 2
    OR count(*) FILTER (WHERE e.amount_fen > 0 AND e.account = 'campaign:' || t.campaign_id || ':redeemed') <> 1
    OR count(*) FILTER (WHERE e.amount_fen < 0 AND e.account = 'campaign:' || t.campaign_id || ':issued') <> 1
LIMIT $2
"""

_OVERSPENT = """
SELECT p.id, p.campaign_id, p.amount_fen, p.reclaimed_fen, sum(x.amount_fen)::bigint AS matched
FROM reconciliation_matches x JOIN redemption_notices n ON n.id = x.notice_id JOIN packets p ON p.id = n.packet_id
WHERE $1::text IS NULL OR p.campaign_id = $1
GROUP BY p.id HAVING sum(x.amount_fen) > p.amount_fen - p.reclaimed_fen
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


async def ledger_checks(conn: asyncpg.Connection, campaign_id: str | None) -> list[LedgerBreak]:
    breaks = [LedgerBreak("redeemed_matches_reconciled",
                          f"campaign {r['campaign_id']}: redeemed is {r['redeemed']} fen, reconciled matches "
                          f"hold {r['matched']} fen")
              for r in await conn.fetch(_REDEEMED, campaign_id)]
    breaks += [LedgerBreak("redemption_posting_routed", f"posting {r['ref']} of campaign {r['campaign_id']}: "
                           f"{r['legs']}, not issued -> redeemed")
               for r in await conn.fetch(_MISROUTED, campaign_id, MAX_REPORTED)]
    breaks += [LedgerBreak("no_packet_redeemed_beyond_credit",
                           f"packet {r['id']} of campaign {r['campaign_id']}: {r['matched']} fen matched, "
                           f"{r['amount_fen']} credited, {r['reclaimed_fen']} reclaimed")
               for r in await conn.fetch(_OVERSPENT, campaign_id, MAX_REPORTED)]
    breaks += [LedgerBreak("match_pairs_equal_amounts",
                           f"notice {r['notice_id']} ({r['notice_status']}, {r['notice_fen']} fen) matched to line "
                           f"{r['line_id']} ({r['line_status']}, {r['line_fen']} fen) for {r['amount_fen']} fen")
               for r in await conn.fetch(_PAIRS, campaign_id, MAX_REPORTED)]
    return breaks
