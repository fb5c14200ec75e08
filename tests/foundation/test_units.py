"""Pure parts of the foundation: resident IDs, identity tokens, ledger balance checks, rate limits."""

from __future__ import annotations

import asyncio
import time
from datetime import date
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio
from hypothesis import given
from hypothesis import strategies as st
from joserfc.jwk import OKPKey
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from kernel import ledger, resident_id
from kernel.embedded import free_port
from kernel.errors import RateLimited, Unauthenticated
from kernel.identity import TokenVerifier
from kernel.nonces import Nonces
from kernel.oidc import IdTokenVerifier, ProviderKeys
from kernel.ratelimit import Limit, RateLimiter, bucket_key
from sandbox.citizens import synthetic_citizen
from sandbox.idp_keys import KeyStore, Signer


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


def test_token_verdicts_are_cached_and_expiry_still_applies(tmp_path: Path) -> None:
    stored = KeyStore(tmp_path).ensure("EdDSA")
    keys = ProviderKeys("http://idp.invalid/.well-known/openid-configuration", "iss")
    keys.keys = {stored.kid: OKPKey.import_key(stored.public_jwk())}
    verifier = TokenVerifier(IdTokenVerifier(keys, audience="aud", algorithms=["EdDSA"], clock_skew_s=60,
                                             max_lifetime_s=3600), b"pepper", clock_skew_s=60)
    now = int(time.time())
    token = Signer(stored, "iss").citizen_token(synthetic_citizen(1), audience="aud", ttl_s=120, now=now)
    first = verifier.verify_known(token, now=now)
    assert verifier.verify_known(token, now=now + 1) is first
    with pytest.raises(Unauthenticated) as info:
        verifier.verify_known(token, now=now + 1000)
    assert info.value.code == "token_expired"
    keys.withdrawals += 1  # a key left the JWKS: every cached verdict is checked again
    again = verifier.verify_known(token, now=now + 1)
    assert again == first and again is not first


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


async def test_concurrent_checks_share_round_trips_and_each_gets_its_own_verdict(
        redis: redis_asyncio.Redis) -> None:
    limiter = RateLimiter(redis)
    await redis.script_flush()  # the first batch meets NOSCRIPT and loads the script itself
    suffix = str(time.time_ns())
    tight, loose = Limit("tight" + suffix, 60, 20), Limit("loose" + suffix, 6000, 1000)
    now = 2_000_000

    async def verdict(limits: list[Limit]) -> bool:
        try:
            await limiter.check(limits, now)
        except RateLimited:
            return False
        return True

    verdicts = await asyncio.gather(*(verdict([tight]) for _ in range(50)),
                                    *(verdict([loose]) for _ in range(50)))
    # 20 tokens in the tight bucket, whatever the order the batch ran them in; the loose one has room
    assert sum(verdicts[:50]) == 20 and all(verdicts[50:])
    assert int(await redis.hget(bucket_key(loose), "t") or 0) == 1000 - 50


async def test_concurrent_nonces_share_round_trips_and_each_is_spent_once(redis: redis_asyncio.Redis) -> None:
    nonces = Nonces(redis)
    keys = [f"nonce-test:{time.time_ns()}:{i}" for i in range(10)]
    firsts = await asyncio.gather(*(nonces.first_use(key, 60) for key in keys * 5), return_exceptions=True)
    # Five requests for each nonce in the same batches: exactly one of each owns it.
    assert [sum(first is True for first in firsts[i::10]) for i in range(10)] == [1] * 10
    assert all(0 < ttl <= 60 for ttl in [await redis.ttl(key) for key in keys])
    assert await nonces.first_use(keys[0], 60) is False
    # A command Redis refuses (an expiry of 0 s) fails its own request only, not its batch's.
    fresh = f"nonce-test:{time.time_ns()}:fresh"
    refused, spent = await asyncio.gather(nonces.first_use(fresh + "-bad", 0), nonces.first_use(fresh, 60),
                                          return_exceptions=True)
    assert isinstance(refused, ResponseError) and spent is True


async def test_a_failed_connection_fails_every_nonce_of_its_batch() -> None:
    gone = redis_asyncio.Redis(port=free_port(), socket_connect_timeout=1, retry_on_error=[])
    nonces = Nonces(gone)
    outcomes = await asyncio.gather(*(nonces.first_use(f"k{i}", 60) for i in range(5)), return_exceptions=True)
    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes)
    await gone.aclose()


@given(st.binary(min_size=1, max_size=64), st.text(max_size=40))
def test_pre_keyed_hash_is_the_resident_id_keyed_hash(pepper: bytes, text: str) -> None:
    keys = ProviderKeys("http://idp.invalid/.well-known/openid-configuration", "iss")
    verifier = TokenVerifier(IdTokenVerifier(keys, audience="aud", algorithms=["EdDSA"], clock_skew_s=60,
                                             max_lifetime_s=3600), pepper, clock_skew_s=60)
    assert verifier._keyed_hash(text) == resident_id.keyed_hash(pepper, text)
