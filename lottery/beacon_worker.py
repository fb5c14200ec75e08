"""Fetching each committed campaign's beacon once its round is out, without an operator.

Every pass looks for committed campaigns with no beacon whose declared round's time has passed (or,
for a sandbox campaign that left the round open, whose ceremony is complete) and fetches the round
through `beacon.fetch_and_record`, the path `stimulus beacon fetch` takes. A campaign whose relays
all fail is tried again next pass; it is logged and audited each time, and `beacon submit` stays
open to the operator. Several workers may run: recording is idempotent and serialized per campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import asyncpg

from kernel.errors import DomainError
from kernel.settings import Settings
from lottery import beacon, drand

log = logging.getLogger(__name__)

ACTOR = "beacon-worker"
MAX_CAMPAIGNS_PER_PASS = 50
MAX_RETRY_DELAY_S = 60.0

DUE = """SELECT c.id, c.beacon FROM campaigns c
         WHERE c.state = 'committed' AND NOT EXISTS (SELECT 1 FROM beacons b WHERE b.campaign_id = c.id)
         ORDER BY c.id LIMIT $1"""


def _due(kind: str, declared_round: int | None, now: datetime) -> bool:
    chain = drand.CHAINS.get(kind)
    if chain is None:
        return False
    return declared_round is None or chain.round_time(declared_round) <= now


class Backoff:
    """When each failing campaign may be tried again: doubling delays, so a relay outage is not
    written to the audit log every second."""

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}
        self.not_before: dict[str, float] = {}

    def ready(self, campaign_id: str, now_s: float) -> bool:
        return self.not_before.get(campaign_id, 0.0) <= now_s

    def failed(self, campaign_id: str, now_s: float) -> None:
        count = self.failures[campaign_id] = self.failures.get(campaign_id, 0) + 1
        self.not_before[campaign_id] = now_s + min(2.0 ** count, MAX_RETRY_DELAY_S)

    def succeeded(self, campaign_id: str) -> None:
        self.failures.pop(campaign_id, None)
        self.not_before.pop(campaign_id, None)


async def fetch_due(pool: asyncpg.Pool, settings: Settings, backoff: Backoff | None = None) -> int:
    """One pass; returns how many beacons it recorded."""
    backoff = backoff or Backoff()
    async with pool.acquire() as conn:
        rows = await conn.fetch(DUE, MAX_CAMPAIGNS_PER_PASS)
    now = datetime.now(UTC)
    recorded = 0
    for row in rows:
        declared = dict(row["beacon"])
        if not _due(declared.get("kind", ""), declared.get("round"), now) \
                or not backoff.ready(row["id"], now.timestamp()):
            continue
        try:
            async with pool.acquire() as conn:
                found = await beacon.fetch_and_record(conn, settings, row["id"], ACTOR)
        except DomainError as exc:
            # An incomplete ceremony is the normal wait of an open-round campaign, not news.
            if exc.code != "ceremony_incomplete":
                log.warning("beacon for %s not recorded: %s %s", row["id"], exc.code, exc.detail)
                backoff.failed(row["id"], datetime.now(UTC).timestamp())
            continue
        backoff.succeeded(row["id"])
        log.info("beacon for %s: round %s recorded", row["id"], found["round"])
        recorded += 1
    return recorded


async def run_forever(pool: asyncpg.Pool, settings: Settings, idle_s: float = 1.0,
                      stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    backoff = Backoff()
    while not stop.is_set():
        try:
            await fetch_due(pool, settings, backoff)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("beacon pass failed, retrying: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), idle_s)
