"""Scenario result-spike: the draw is published; every registrant checks at once, auditors download."""

from __future__ import annotations

import auditor_users
import citizen_users
from load_shapes import ResultSpike

__all__ = ["Auditor", "Citizen", "ResultSpike"]


class Citizen(citizen_users.ResultChecker):
    pass


class Auditor(auditor_users.Auditor):
    # One auditor whatever the scale: the list download is heavy, the spike is the citizens'.
    fixed_count = 1
