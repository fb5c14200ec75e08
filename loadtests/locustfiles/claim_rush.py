"""Scenario claim-rush: every winner binds a wallet and claims the packet, once."""

from __future__ import annotations

import citizen_users
from load_shapes import ClaimRush

__all__ = ["ClaimRush", "Winner"]


class Winner(citizen_users.Claimant):
    end_run_when_all_claimed = True
