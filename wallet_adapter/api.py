"""HTTP routes and lifespan of the wallet_adapter package, assembled by stimulus.app."""

from __future__ import annotations

from typing import Any

from stimulus.settings import Settings


def route_handlers(settings: Settings) -> list[Any]:
    return []
