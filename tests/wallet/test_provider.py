"""The bank client against the real sandbox bank: results, refusals, signatures, settlement."""

from __future__ import annotations

import asyncio
from datetime import date

import msgspec
import pytest

from kernel.signing import SigningKey
from tests.wallet.conftest import ClientFactory, credit_request
from wallet_adapter.bank_protocol import (
    CreditRefused,
    CreditResult,
    SpendRequest,
    idempotency_key_for,
    settlement_date_of,
)
from wallet_adapter.provider import BadSignature, PermanentFailure


async def test_credit_then_repeat_is_one_credit(make_client: ClientFactory,
                                                campaign_id: str) -> None:
    client = make_client("ICBC")
    request = credit_request(campaign_id, "p-1")
    first = await client.credit(request)
    again = await client.credit(request)
    assert first.duplicate is False and again.duplicate is True
    assert first.credit_id == again.credit_id and first.amount_fen == 20_000
    books = await client.books(campaign_id)
    assert (books.credits, books.credited_fen, books.double_credits) == (1, 20_000, 0)
    record = await client.status(request.idempotency_key)
    assert record is not None and record.credit_id == first.credit_id
    assert await client.status(idempotency_key_for(campaign_id, "never-sent")) is None


async def test_same_key_other_payload_is_a_permanent_conflict(make_client: ClientFactory,
                                                              campaign_id: str) -> None:
    client = make_client("ICBC")
    await client.credit(credit_request(campaign_id, "p-1", "W-1"))
    with pytest.raises(PermanentFailure) as caught:
        await client.credit(credit_request(campaign_id, "p-1", "W-2"))
    assert caught.value.code == "idempotency_conflict"
    assert (await client.books(campaign_id)).credits == 1


async def test_unknown_and_frozen_wallets_fail_permanently_without_retry(
        make_client: ClientFactory, campaign_id: str) -> None:
    client = make_client("CCB")
    for wallet_id, code in (("INVALID-9", "wallet_not_found"), ("FROZEN-9", "wallet_frozen")):
        with pytest.raises(PermanentFailure) as caught:
            await client.credit(credit_request(campaign_id, wallet_id, wallet_id))
        assert caught.value.code == code
    assert client.stats["attempts"] == 2 and client.stats["retries"] == 0


async def test_a_request_must_carry_its_packets_key(make_client: ClientFactory,
                                                    campaign_id: str) -> None:
    request = msgspec.structs.replace(credit_request(campaign_id, "p-1"), idempotency_key="x-1")
    with pytest.raises(ValueError, match="must use idempotency key"):
        await make_client("ICBC").credit(request)


async def test_a_client_pinned_to_another_key_rejects_the_bank(make_client: ClientFactory,
                                                               campaign_id: str) -> None:
    impostor_key = SigningKey.generate().public_bytes
    client = make_client("ICBC", public_key=impostor_key)
    with pytest.raises(BadSignature):
        await client.books()
    with pytest.raises(BadSignature):
        await client.credit(credit_request(campaign_id, "p-1"))
    assert client.stats["retries"] == 0


async def test_fifty_concurrent_credits_of_one_packet_make_one_credit(
        make_client: ClientFactory, campaign_id: str) -> None:
    clients = [make_client("BOC") for _ in range(5)]
    request = credit_request(campaign_id, "p-hot")
    results = await asyncio.gather(*(clients[i % 5].credit(request) for i in range(50)))
    assert len({r.credit_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    books = await clients[0].books(campaign_id)
    assert (books.credits, books.double_credits) == (1, 0)


async def test_batch_credits_and_refusals_in_request_order(make_client: ClientFactory,
                                                           campaign_id: str) -> None:
    client = make_client("ICBC")
    requests = [credit_request(campaign_id, f"p-{i}", f"W-{i}") for i in range(1_200)]
    requests[7] = credit_request(campaign_id, "p-7", "FROZEN-7")
    outcomes = await client.credit_batch(requests)
    assert len(outcomes) == 1_200
    refused = outcomes[7]
    assert isinstance(refused, CreditRefused) and refused.code == "wallet_frozen"
    assert all(isinstance(o, CreditResult) and o.idempotency_key == r.idempotency_key
               for i, (o, r) in enumerate(zip(outcomes, requests, strict=True)) if i != 7)
    again = await client.credit_batch(requests[:10])
    assert all(o.duplicate for o in again if isinstance(o, CreditResult))
    assert client.stats["attempts"] == 4  # 3 chunks of <= 500, then the repeat
    books = await client.books(campaign_id)
    assert (books.credits, books.double_credits) == (1_199, 0)


async def test_reclaim_is_idempotent_and_ends_spending(make_client: ClientFactory,
                                                       campaign_id: str) -> None:
    client = make_client("CCB")
    request = credit_request(campaign_id, "p-1")
    await client.credit(request)
    key = request.idempotency_key
    await client.spend(key, SpendRequest(spend_id=f"{campaign_id}-s1", amount_fen=5_000,
                                         merchant_id="M-1"))
    first = await client.reclaim(key)
    again = await client.reclaim(key)
    assert (first.reclaimed_fen, first.spent_fen) == (15_000, 5_000)
    assert again == first
    with pytest.raises(PermanentFailure) as caught:
        await client.spend(key, SpendRequest(spend_id=f"{campaign_id}-s2", amount_fen=1,
                                             merchant_id="M-1"))
    assert caught.value.code == "credit_reclaimed"
    books = await client.books(campaign_id)
    assert (books.spent_fen, books.reclaimed_fen, books.outstanding_fen) == (5_000, 15_000, 0)
    record = await client.status(key)
    assert record is not None and record.status == "reclaimed" and record.balance_fen == 0
    with pytest.raises(PermanentFailure) as missing:
        await client.reclaim(idempotency_key_for(campaign_id, "never"))
    assert missing.value.code == "credit_not_found"


async def test_spends_appear_in_the_days_settlement_file(make_client: ClientFactory,
                                                         campaign_id: str) -> None:
    client = make_client("BOC")
    request = credit_request(campaign_id, "p-1", categories=("food",))
    await client.credit(request)
    key = request.idempotency_key
    spend = SpendRequest(spend_id=f"{campaign_id}-s1", amount_fen=12_345, merchant_id="M-42",
                         merchant_category="food")
    first = await client.spend(key, spend)
    assert (await client.spend(key, spend)).duplicate is True
    for refused, code in (
        (SpendRequest(spend_id=f"{campaign_id}-s2", amount_fen=10_000, merchant_id="M-42",
                      merchant_category="food"), "insufficient_balance"),
        (SpendRequest(spend_id=f"{campaign_id}-s3", amount_fen=1, merchant_id="M-43",
                      merchant_category="fuel"), "merchant_not_eligible"),
        (msgspec.structs.replace(spend, amount_fen=1), "idempotency_conflict"),
    ):
        with pytest.raises(PermanentFailure) as caught:
            await client.spend(key, refused)
        assert caught.value.code == code
    day = settlement_date_of(first.settled_at)
    assert first.settlement_date == day
    settlement = await client.settlement(day)
    mine = [line for line in settlement.lines if line.idempotency_key == key]
    assert [(m.spend_id, m.merchant_id, m.amount_fen) for m in mine] == [
        (spend.spend_id, "M-42", 12_345)]
    assert settlement.complete is False  # the day is still running
    assert settlement.total_fen == sum(line.amount_fen for line in settlement.lines)
    assert (await client.settlement(date(2020, 1, 1))).lines == ()
