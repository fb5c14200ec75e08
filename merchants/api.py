"""HTTP routes and lifespan of the merchants package, assembled by stimulus.app."""

from __future__ import annotations

from typing import Any

from kernel.settings import Settings
from merchants import reconcile_routes, redemption_routes, registry_routes, report_routes


def route_handlers(settings: Settings) -> list[Any]:
    return [
        *registry_routes.ROUTES,
        *redemption_routes.ROUTES,
        *report_routes.ROUTES,
        *reconcile_routes.ROUTES,
    ]


def worker_roles(settings: Settings) -> list[str]:
    """The `stimulus worker` roles this package needs running."""
    return ["reconcile"]
