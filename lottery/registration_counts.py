"""Counting registrations: live and withdrawn per campaign, refused attempts by code, and
registrations per minute, hour or day, for the operators' views and the public campaign page.

The public page is read by every citizen's app while they register; its count is informational,
so each process keeps it for a second rather than counting the growing table per request.
"""

from __future__ import annotations

import time
from datetime import datetime

import asyncpg
import msgspec

BUCKETS = ("minute", "hour", "day")
MAX_POINTS = 2_000

# A count(*) per request over the growing table cost PostgreSQL a whole core at ~180 req/s and
# 50k registrations (the registration-surge load run). One per second per process will do.
PUBLIC_COUNT_TTL_S = 1.0
PUBLIC_COUNT_ENTRIES = 1000
_public_counts: dict[str, tuple[float, int]] = {}


class CampaignCounts(msgspec.Struct, frozen=True):
    registrations: int
    withdrawn: int
    ineligible_by_code: dict[str, int]


class Point(msgspec.Struct, frozen=True):
    at: datetime
    registrations: int


class Timeline(msgspec.Struct, frozen=True):
    campaign_id: str
    bucket: str
    points: list[Point]
    registered: int             # live registrations
    withdrawn: int
    ineligible: dict[str, int]  # refused attempts by code (counted, never stored as tickets)


async def counts(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> CampaignCounts:
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE withdrawn_at IS NULL) AS live,
                  count(*) FILTER (WHERE withdrawn_at IS NOT NULL) AS withdrawn
           FROM registrations WHERE campaign_id = $1""", campaign_id)
    refused = await conn.fetch("SELECT code, attempts FROM ineligible_attempts WHERE campaign_id = $1",
                               campaign_id)
    assert row is not None  # an aggregate without GROUP BY always answers a row
    return CampaignCounts(int(row["live"]), int(row["withdrawn"]), {r["code"]: int(r["attempts"]) for r in refused})


async def live_by_campaign(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    rows = await conn.fetch(
        """SELECT campaign_id, count(*) AS n FROM registrations WHERE withdrawn_at IS NULL
           GROUP BY campaign_id""")
    return {r["campaign_id"]: int(r["n"]) for r in rows}


async def public_count(pool: asyncpg.Pool, campaign_id: str) -> int:
    """A campaign's live registrations, as this process counted them at most a second ago."""
    now = time.monotonic()
    cached = _public_counts.get(campaign_id)
    if cached is not None and now - cached[0] < PUBLIC_COUNT_TTL_S:
        return cached[1]
    n = int(await pool.fetchval(
        "SELECT count(*) FROM registrations WHERE campaign_id = $1 AND withdrawn_at IS NULL", campaign_id))
    if len(_public_counts) >= PUBLIC_COUNT_ENTRIES:
        _public_counts.clear()
    _public_counts[campaign_id] = (now, n)
    return n


async def timeline(pool: asyncpg.Pool, campaign_id: str, bucket: str) -> Timeline:
    """Registrations per bucket (the latest MAX_POINTS), with the totals, from one snapshot."""
    if bucket not in BUCKETS:  # interpolated below: only the three names may reach the SQL
        raise ValueError(f"bucket {bucket!r} is not one of {BUCKETS}")
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(
            f"""SELECT date_trunc('{bucket}', registered_at) AS at, count(*) AS n
                FROM registrations WHERE campaign_id = $1 GROUP BY 1 ORDER BY 1 DESC LIMIT {MAX_POINTS}""",
            campaign_id)
        totals = await counts(conn, campaign_id)
    return Timeline(campaign_id, bucket, [Point(r["at"], int(r["n"])) for r in reversed(rows)],
                    totals.registrations, totals.withdrawn, totals.ineligible_by_code)
