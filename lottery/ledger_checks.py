"""Registration checks for `stimulus audit ledger`: the maintained tallies equal the registrations.

The public pages and the operators' counts read `registration_tallies`, which triggers keep in
each writing transaction. Nothing else re-checks them, so the audit recounts the table: per
campaign, the shards' live and withdrawn sums must equal the live and withdrawn registrations.
(A single shard may hold a negative figure: a registration counted on one backend's shard may be
withdrawn on another's; only the sums mean anything.)
"""

from __future__ import annotations

import asyncpg

from kernel.ledger import LedgerBreak

MAX_REPORTED = 50

_TALLIES = """
WITH counted AS (
    SELECT campaign_id, count(*) FILTER (WHERE withdrawn_at IS NULL) AS live,
           count(*) FILTER (WHERE withdrawn_at IS NOT NULL) AS withdrawn
    FROM registrations WHERE $1::text IS NULL OR campaign_id = $1 GROUP BY campaign_id
), tallied AS (
    SELECT campaign_id, sum(live)::bigint AS live, sum(withdrawn)::bigint AS withdrawn
    FROM registration_tallies WHERE $1::text IS NULL OR campaign_id = $1 GROUP BY campaign_id
)
SELECT COALESCE(c.campaign_id, t.campaign_id) AS campaign_id,
       COALESCE(c.live, 0) AS counted_live, COALESCE(c.withdrawn, 0) AS counted_withdrawn,
       COALESCE(t.live, 0) AS tallied_live, COALESCE(t.withdrawn, 0) AS tallied_withdrawn
FROM counted c FULL JOIN tallied t ON t.campaign_id = c.campaign_id
WHERE COALESCE(c.live, 0) <> COALESCE(t.live, 0) OR COALESCE(c.withdrawn, 0) <> COALESCE(t.withdrawn, 0)
ORDER BY 1
LIMIT $2
"""


async def ledger_checks(conn: asyncpg.Connection, campaign_id: str | None) -> list[LedgerBreak]:
    return [LedgerBreak("registration_tallies_match_registrations",
                        f"campaign {r['campaign_id']}: tallies hold {r['tallied_live']} live and "
                        f"{r['tallied_withdrawn']} withdrawn registrations, the table "
                        f"{r['counted_live']} live and {r['counted_withdrawn']} withdrawn")
            for r in await conn.fetch(_TALLIES, campaign_id, MAX_REPORTED)]
