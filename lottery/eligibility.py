"""Eligibility rules per campaign over the identity token's claims.

Each refusal has its own stable code, so a citizen learns exactly why, and the operator can count
refusals by reason (they are counted, never stored as tickets).
"""

from __future__ import annotations

from datetime import date

from kernel.errors import Forbidden
from kernel.identity import Citizen
from lottery.campaigns import Campaign


class Ineligible(Forbidden):
    code = "ineligible"
    title = "Not eligible for this campaign"


def _age(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def check(campaign: Campaign, citizen: Citizen, today: date) -> None:
    """Raise Ineligible with the first rule the citizen does not meet."""
    rules = campaign.eligibility
    if rules.city is not None and citizen.city != rules.city:
        raise Ineligible("registration is open to people located in the city", code="ineligible_location")
    if rules.require_mainland_phone and not citizen.phone_is_mainland:
        raise Ineligible("a mainland China mobile number is required", code="ineligible_phone")
    if rules.social_insurance_city is not None and citizen.social_insurance_city != rules.social_insurance_city:
        raise Ineligible("social insurance must be paid in the city", code="ineligible_social_insurance")
    age = _age(citizen.birth_date, today)
    if rules.min_age is not None and age < rules.min_age:
        raise Ineligible(f"registrants must be at least {rules.min_age}", code="ineligible_too_young")
    if rules.max_age is not None and age > rules.max_age:
        raise Ineligible(f"registrants must be at most {rules.max_age}", code="ineligible_too_old")
    if citizen.district not in campaign.stratum_ids():
        raise Ineligible("the citizen's district takes no part in this campaign", code="ineligible_district")
