"""Registrations over time, for the operators' dashboard."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import get
from litestar.params import Parameter

from lottery import campaigns
from stimulus.auth import Principal, require_role
from stimulus.contract import contract
from stimulus.services import Services

BUCKETS = {"minute": "minute", "hour": "hour", "day": "day"}
MAX_POINTS = 2_000


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


@contract("campaign_not_found")
@get("/v1/admin/campaigns/{campaign_id:str}/registrations/timeline", tags=["operator"],
     summary="Registrations per minute, hour or day; withdrawals and refused attempts by code")
async def registration_timeline(services: Services, principal: Principal, campaign_id: str,
                                bucket: str = Parameter(default="minute", pattern="^(minute|hour|day)$")) -> Timeline:
    require_role(principal, "operator", "auditor")
    await campaigns.fetch(services.pool, campaign_id)
    async with services.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(
            f"""SELECT date_trunc('{BUCKETS[bucket]}', registered_at) AS at, count(*) AS n
                FROM registrations WHERE campaign_id = $1 GROUP BY 1 ORDER BY 1 DESC LIMIT {MAX_POINTS}""",
            campaign_id)
        totals = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE withdrawn_at IS NULL) AS live,
                      count(*) FILTER (WHERE withdrawn_at IS NOT NULL) AS withdrawn
               FROM registrations WHERE campaign_id = $1""", campaign_id)
        refused = await conn.fetch("SELECT code, attempts FROM ineligible_attempts WHERE campaign_id = $1",
                                   campaign_id)
    return Timeline(campaign_id, bucket, [Point(r["at"], int(r["n"])) for r in reversed(rows)], int(totals["live"]),
                    int(totals["withdrawn"]), {r["code"]: int(r["attempts"]) for r in refused})


ROUTES = [registration_timeline]
