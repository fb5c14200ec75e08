"""A short-lived per-process cache of campaign parameters for the registration hot path.

It only decides the clear error message; the database re-checks state and window on every write,
so a stale entry can never let a registration in after close.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from lottery import campaigns
from lottery.campaigns import Campaign

TTL_S = 1.0


@dataclass(frozen=True)
class CachedCampaign:
    campaign: Campaign
    pseudonym_key: bytes
    fetched_at: float


class CampaignCache:
    def __init__(self, pool: asyncpg.Pool, ttl_s: float = TTL_S) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._entries: dict[str, CachedCampaign] = {}

    async def get(self, campaign_id: str) -> CachedCampaign:
        now = time.monotonic()
        entry = self._entries.get(campaign_id)
        if entry is not None and now - entry.fetched_at < self._ttl_s:
            return entry
        async with self._pool.acquire() as conn:
            campaign = await campaigns.fetch(conn, campaign_id)
            key = await campaigns.pseudonym_key(conn, campaign_id)
        entry = CachedCampaign(campaign, key, now)
        if len(self._entries) > 1000:
            self._entries.clear()
        self._entries[campaign_id] = entry
        return entry

    def forget(self, campaign_id: str) -> None:
        self._entries.pop(campaign_id, None)
