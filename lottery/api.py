"""HTTP routes and lifespan of the lottery package, assembled by stimulus.app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar.datastructures import State
from litestar.di import Provide

from kernel.services import Services
from kernel.settings import Settings
from lottery import (
    campaign_routes,
    draw_routes,
    public_page,
    registration_routes,
    timeline_routes,
)
from lottery.campaign_cache import CampaignCache
from lottery.registration import RegistrationWriter
from lottery.services import STATE_KEY, LotteryServices, get_lottery_services


def route_handlers(settings: Settings) -> list[Any]:
    return [*campaign_routes.ROUTES, *registration_routes.ROUTES, *draw_routes.ROUTES,
            *timeline_routes.ROUTES, *public_page.routes()]


def dependencies() -> dict[str, Provide]:
    return {"lottery_services": Provide(get_lottery_services, sync_to_thread=False)}


@asynccontextmanager
async def lifespan(services: Services, state: State) -> AsyncIterator[None]:
    writer = RegistrationWriter(services.pool, max_batch=services.settings.group_commit_max_batch,
                                wait_s=services.settings.db_request_timeout_s)
    state[STATE_KEY] = LotteryServices(registration_writer=writer, campaign_cache=CampaignCache(services.pool))
    writer.start()
    try:
        yield
    finally:
        await writer.stop()


def worker_roles(settings: Settings) -> list[str]:
    """The `stimulus worker` roles this package needs running."""
    return ["notifications", "beacons"]
