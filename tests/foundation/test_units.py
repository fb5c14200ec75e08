"""Pure parts of the foundation: resident IDs, identity tokens, ledger balance checks, rate limits."""

from __future__ import annotations

import time
from datetime import date

import pytest
import redis.asyncio as redis_asyncio
from hypothesis import given
from hypothesis import strategies as st

from stimulus import ledger, resident_id
from stimulus.errors import RateLimited, Unauthenticated
from stimulus.identity import TokenVerifier, issue_token
from stimulus.ratelimit import Limit, RateLimiter
from stimulus.signing import SigningKey


def test_known_resident_id_check_character() -> None:
    assert resident_id.normalize("11010519491231002x") == "11010519491231002X"
    with pytest.raises(resident_id.InvalidResidentId):
        resident_id.normalize("110105194912310021")
    with pytest.raises(resident_id.InvalidResidentId):
        resident_id.normalize("11010519491331002X"[:17] + "0")


@given(st.integers(0, 10**6), st.dates(date(1930, 1, 1), date(2020, 12, 31)))
def test_made_ids_validate_and_single_digit_changes_fail(sequence: int, born: date) -> None:
    made = resident_id.make_id("430102", born, sequence)
    assert resident_id.normalize(made) == made
    position = sequence % 17
    digit = str((int(made[position]) + 1 + sequence % 9) % 10)
    changed = made[:position] + digit + made[position + 1:]
    if changed != made:
        with pytest.raises(resident_id.InvalidResidentId):
            resident_id.normalize(changed)


def test_token_verdicts_are_cached_and_expiry_still_applies() -> None:
    key = SigningKey.generate()
    verifier = TokenVerifier({key.key_id: key.public_bytes}, "iss", "aud", b"pepper")
    now = int(time.time())
    token = issue_token(key, subject="11010519491231002X", phone="13800000000", district="430102",
                        city="4301", social_insurance_city="4301", issuer="iss", audience="aud",
                        ttl_s=120, now=now)
    first = verifier.verify(token, now=now)
    assert verifier.verify(token, now=now + 1) is first
    with pytest.raises(Unauthenticated) as info:
        verifier.verify(token, now=now + 1000)
    assert info.value.code == "token_expired"


def test_unbalanced_postings_are_refused() -> None:
    with pytest.raises(ledger.UnbalancedPosting):
        ledger.check_balanced(ledger.Posting("k", "r", (ledger.Leg("a", 5), ledger.Leg("b", -4))))
    with pytest.raises(ledger.UnbalancedPosting):
        ledger.check_balanced(ledger.Posting("k", "r", ()))


@given(st.lists(st.integers(-10**12, 10**12).filter(bool), min_size=1, max_size=8))
def test_balanced_posting_accepted_iff_sum_zero(amounts: list[int]) -> None:
    legs = [ledger.Leg(f"a{i}", a) for i, a in enumerate(amounts)]
    total = sum(amounts)
    if total != 0:
        legs.append(ledger.Leg("balance", -total))
    ledger.check_balanced(ledger.Posting("k", "r", tuple(legs)))
    legs.append(ledger.Leg("extra", 1))
    with pytest.raises(ledger.UnbalancedPosting):
        ledger.check_balanced(ledger.Posting("k", "r", tuple(legs)))


async def test_token_bucket_refuses_only_when_any_bucket_is_empty(redis: redis_asyncio.Redis) -> None:
    limiter = RateLimiter(redis)
    suffix = str(time.time_ns())
    a, b = Limit("a" + suffix, 60, 3), Limit("b" + suffix, 600, 100)
    now = 1_000_000
    for _ in range(3):
        await limiter.check([a, b], now)
    with pytest.raises(RateLimited) as info:
        await limiter.check([a, b], now)
    assert info.value.headers["Retry-After"] == "1"
    # The refusal took nothing from bucket b; a second later bucket a has one token again.
    await limiter.check([a, b], now + 1000)
