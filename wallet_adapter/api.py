"""HTTP routes and workers of the wallet_adapter package, assembled by stimulus.app and
stimulus.supervisor."""

from __future__ import annotations

from typing import Any

from kernel.settings import Settings
from wallet_adapter import claims


def route_handlers(settings: Settings) -> list[Any]:
    return list(claims.ROUTES)


def worker_roles(settings: Settings) -> list[str]:
    """The `stimulus worker` roles this package needs running."""
    return ["issuance-dispatcher", "issuance"]
