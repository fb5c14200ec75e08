"""Scenario soak: every population at once, for half an hour or more, in slow waves.

The mix follows the plan: a population whose endpoint this build lacks was not prepared, and
its users are not defined, so the soak still runs on what exists.
"""

from __future__ import annotations

import auditor_users
import citizen_users
from load_shapes import Soak
from plan_feed import plan

__all__ = ["Soak"]
_sections = plan()


class Registrant(citizen_users.Registrant):
    weight = 30


class ResultChecker(citizen_users.ResultChecker):
    weight = 30


class Auditor(auditor_users.Auditor):
    fixed_count = 1


if "claims" in _sections:
    class Winner(citizen_users.Claimant):
        weight = 10

if "redemptions" in _sections:
    import merchant_users

    class Till(merchant_users.MerchantTill):
        weight = 20
