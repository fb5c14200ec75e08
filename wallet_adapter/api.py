"""HTTP routes and workers of the wallet_adapter package, assembled by stimulus.app and
stimulus.supervisor."""

from __future__ import annotations

import sys
from typing import Any

from stimulus.settings import Settings
from wallet_adapter import claims


def route_handlers(settings: Settings) -> list[Any]:
    return list(claims.ROUTES)


def worker_commands(settings: Settings) -> list[tuple[str, list[str]]]:
    base = [sys.executable, "-m", "stimulus.cli", "worker"]
    return [("issuance-dispatcher", [*base, "issuance-dispatcher"]),
            ("issuance", [*base, "issuance"])]
