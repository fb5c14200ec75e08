"""Scenario registration-surge: registration opens and the city's citizens rush to register."""

from __future__ import annotations

import citizen_users
from load_shapes import RegistrationSurge

__all__ = ["Citizen", "RegistrationSurge"]


class Citizen(citizen_users.Registrant):
    pass
