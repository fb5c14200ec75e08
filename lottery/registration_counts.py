"""Counting registrations: live and withdrawn per campaign, refused attempts by code, and
registrations per minute, hour or day, for the operators' views and the public campaign pages.

Live and withdrawn figures come from `registration_tallies`, which triggers on `registrations`
keep in the writing transaction (lottery/migrations/0103): reading one is summing at most 16 rows,
exact in any snapshot, however many millions registered. The audit (lottery/ledger_checks.py)
recounts the table to find a drift. Only the timeline still counts rows, per bucket, on the bulk
pool.

The public pages are read by every citizen's app while they register; each process keeps their
figures for a second, which saves a pool round trip per request and caps the reads per process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

BUCKETS = ("minute", "hour", "day")
MAX_POINTS = 2_000

PUBLIC_COUNT_TTL_S = 1.0
PUBLIC_COUNT_ENTRIES = 1000
_public_counts: dict[str, tuple[float, int]] = {}

_TALLY = """SELECT COALESCE(sum(live), 0)::bigint AS live, COALESCE(sum(withdrawn), 0)::bigint AS withdrawn
            FROM registration_tallies WHERE campaign_id = $1"""
_LIVE = "SELECT COALESCE(sum(live), 0)::bigint FROM registration_tallies WHERE campaign_id = $1"
_LIVE_BY_CAMPAIGN = """SELECT campaign_id, sum(live)::bigint AS live FROM registration_tallies
                       WHERE campaign_id = ANY($1::text[]) GROUP BY campaign_id"""


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
    row = await conn.fetchrow(_TALLY, campaign_id)
    refused = await conn.fetch("SELECT code, attempts FROM ineligible_attempts WHERE campaign_id = $1",
                               campaign_id)
    assert row is not None  # an aggregate without GROUP BY always answers a row
    return CampaignCounts(int(row["live"]), int(row["withdrawn"]), {r["code"]: int(r["attempts"]) for r in refused})


async def live_count(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> int:
    """A campaign's live registrations, exact in the caller's snapshot."""
    return int(await conn.fetchval(_LIVE, campaign_id))


async def live_by_campaign(pool: asyncpg.Pool, campaign_ids: Sequence[str]) -> dict[str, int]:
    """Live registrations of each listed campaign (0 for none), as this process read them at most
    a second ago; one query for the campaigns it has no fresh figure for."""
    now = time.monotonic()
    found: dict[str, int] = {}
    stale: list[str] = []
    for campaign_id in campaign_ids:
        cached = _public_counts.get(campaign_id)
        if cached is not None and now - cached[0] < PUBLIC_COUNT_TTL_S:
            found[campaign_id] = cached[1]
        else:
            stale.append(campaign_id)
    if stale:
        rows = await pool.fetch(_LIVE_BY_CAMPAIGN, stale)
        fresh = {r["campaign_id"]: int(r["live"]) for r in rows}
        for campaign_id in stale:
            found[campaign_id] = fresh.get(campaign_id, 0)
            _remember(campaign_id, now, found[campaign_id])
    return found


async def public_count(pool: asyncpg.Pool, campaign_id: str) -> int:
    """A campaign's live registrations, as this process read them at most a second ago."""
    return (await live_by_campaign(pool, [campaign_id]))[campaign_id]


def _remember(campaign_id: str, now: float, live: int) -> None:
    if len(_public_counts) >= PUBLIC_COUNT_ENTRIES and campaign_id not in _public_counts:
        _public_counts.clear()
    _public_counts[campaign_id] = (now, live)


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
