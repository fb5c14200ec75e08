"""Scenario redemption-steady: merchants' tills notify the payments citizens make with their packets."""

from __future__ import annotations

import merchant_users
from load_shapes import RedemptionSteady

__all__ = ["RedemptionSteady", "Till"]


class Till(merchant_users.MerchantTill):
    pass
