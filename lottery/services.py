"""The long-lived objects the lottery's handlers share in an API process: the registration
group-commit writer and the per-process campaign cache.

The lottery's lifespan (lottery.api) builds them once the pool exists and keeps them on the app's
state; handlers take them as the `lottery_services` dependency, typed, so a handler that needs
the writer names it in its signature instead of looking it up by a string.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.datastructures import State

from lottery.campaign_cache import CampaignCache
from lottery.registration import RegistrationWriter

STATE_KEY = "lottery_services"


@dataclass(frozen=True)
class LotteryServices:
    registration_writer: RegistrationWriter
    campaign_cache: CampaignCache


def get_lottery_services(state: State) -> LotteryServices:
    services: LotteryServices = state[STATE_KEY]
    return services
