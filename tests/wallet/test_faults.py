"""The client against a misbehaving bank: lost answers, 503s, disguised duplicates, outages,
rate limits and a bank killed mid-campaign. Every fault must end in exactly one credit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.wallet.conftest import Admin, ClientFactory, RunningBank, credit_request, free_port
from wallet_adapter.backoff import Backoff
from wallet_adapter.bank_protocol import CreditRefused, CreditResult, SpendRequest
from wallet_adapter.circuit_breaker import BreakerOptions, BreakerState
from wallet_adapter.provider import BankClient, BankUnavailable, CircuitOpen


def state_of(client: BankClient) -> BreakerState:
    return client.circuit_state  # a call, so the type checker does not narrow it between steps


async def test_commit_then_timeout_is_resolved_by_status_not_by_a_second_credit(
        admin: Admin, make_client: ClientFactory, campaign_id: str) -> None:
    admin.knobs(bank_code="ICBC", commit_timeout_rate=1.0, hang_ms=5_000)
    client = make_client("ICBC", timeout_s=0.3)
    request = credit_request(campaign_id, "p-1")
    result = await client.credit(request)
    assert result.idempotency_key == request.idempotency_key and result.duplicate is True
    assert client.stats["resolved_by_status"] == 1
    assert admin.stats("ICBC")["injected_hangs"] >= 1
    batch = [credit_request(campaign_id, f"b-{i}", f"W-{i}") for i in range(20)]
    attempts = client.stats["attempts"]
    outcomes = await client.credit_batch(batch)
    assert [o.idempotency_key for o in outcomes] == [r.idempotency_key for r in batch]
    assert client.stats["resolved_by_status"] == 21
    assert client.stats["attempts"] - attempts == 2  # the batch, then one status query for all 20
    books = await client.books(campaign_id)
    assert (books.credits, books.double_credits) == (21, 0)


async def test_an_ambiguous_batch_resends_only_what_the_bank_never_stored(
        admin: Admin, make_client: ClientFactory, campaign_id: str) -> None:
    admin.knobs(bank_code="ICBC", commit_timeout_rate=1.0, hang_ms=5_000)
    client = make_client("ICBC", timeout_s=0.3)
    batch = [credit_request(campaign_id, f"p-{i}", f"FROZEN-{i}" if i % 4 == 0 else f"W-{i}")
             for i in range(20)]  # a refusal stores nothing, so the status query finds no credit
    hangs = admin.stats("ICBC").get("injected_hangs", 0)
    task = asyncio.create_task(client.credit_batch(batch))
    for _ in range(200):  # until the batch has committed and its answer hangs
        if admin.stats("ICBC").get("injected_hangs", 0) > hangs:
            break
        await asyncio.sleep(0.02)
    admin.reset()  # before the client's timeout: the resend is answered at once
    outcomes = await task
    refused = [o for o in outcomes if isinstance(o, CreditRefused)]
    assert [o.idempotency_key for o in refused] == [r.idempotency_key for r in batch[::4]]
    assert {o.code for o in refused} == {"wallet_frozen"}
    credited = [o for o in outcomes if isinstance(o, CreditResult)]
    assert len(credited) == 15 and all(o.duplicate for o in credited)
    assert client.stats["attempts"] == 3  # the batch, one status query, the 5 refused sent again
    books = await client.books(campaign_id)
    assert (books.credits, books.double_credits) == (15, 0)


async def test_transient_errors_are_retried_until_each_packet_is_credited_once(
        admin: Admin, make_client: ClientFactory, campaign_id: str) -> None:
    admin.knobs(bank_code="CCB", error_rate=0.3)
    client = make_client("CCB", max_attempts=30)
    requests = [credit_request(campaign_id, f"p-{i}", f"W-{i}") for i in range(30)]
    results = await asyncio.gather(*(client.credit(r) for r in requests))
    assert len({r.credit_id for r in results}) == 30
    assert client.stats["retries"] > 0 and admin.stats("CCB")["injected_errors"] > 0
    admin.reset()
    books = await client.books(campaign_id)
    assert (books.credits, books.double_credits) == (30, 0)


async def test_a_repeat_answered_as_fresh_changes_nothing(admin: Admin,
                                                          make_client: ClientFactory,
                                                          campaign_id: str) -> None:
    admin.knobs(bank_code="BOC", duplicate_rate=1.0)
    client = make_client("BOC")
    request = credit_request(campaign_id, "p-1")
    first = await client.credit(request)
    again = await client.credit(request)
    assert again.duplicate is False and again.credit_id == first.credit_id
    assert admin.stats("BOC")["disguised_duplicates"] >= 1
    assert (await client.books(campaign_id)).credits == 1


async def test_outage_opens_the_circuit_and_a_probe_closes_it(admin: Admin,
                                                              make_client: ClientFactory,
                                                              campaign_id: str) -> None:
    client = make_client("CCB", max_attempts=4, backoff=Backoff(0.01, 0.02),
                         breaker=BreakerOptions(consecutive_failures=3, cool_down_s=0.6))
    admin.knobs(bank_code="CCB", outage_s=1.5)
    outage_ends = time.monotonic() + 1.5
    request = credit_request(campaign_id, "p-1")
    with pytest.raises(BankUnavailable):
        await client.credit(request)
    assert state_of(client) is BreakerState.OPEN
    started = time.monotonic()
    with pytest.raises(CircuitOpen) as caught:
        await client.credit(request)
    assert time.monotonic() - started < 0.05  # refused without touching the bank
    assert caught.value.outcome_unknown is False
    other_bank = make_client("ICBC")  # one bank's outage is not another's
    await other_bank.credit(credit_request(campaign_id, "p-elsewhere"))
    await asyncio.sleep(max(0.0, outage_ends - time.monotonic()) + 0.1)
    await asyncio.sleep(client.breaker.retry_after_s())
    assert state_of(client) is BreakerState.HALF_OPEN
    result = await client.credit(request)
    assert state_of(client) is BreakerState.CLOSED
    assert result.idempotency_key == request.idempotency_key
    books = await client.books(campaign_id)
    assert (books.credits, books.double_credits) == (1, 0)


async def test_rate_limit_is_waited_out_with_retry_after(admin: Admin,
                                                         make_client: ClientFactory,
                                                         campaign_id: str) -> None:
    admin.knobs(bank_code="BOC", rate_limit=20)
    client = make_client("BOC")
    requests = [credit_request(campaign_id, f"p-{i}", f"W-{i}") for i in range(30)]
    started = time.monotonic()
    results = await asyncio.gather(*(client.credit(r) for r in requests))
    assert len({r.credit_id for r in results}) == 30
    assert admin.stats("BOC")["rate_limited"] > 0
    assert time.monotonic() - started >= 0.9  # the 429s said: come back in a second
    assert state_of(client) is BreakerState.CLOSED  # being told to wait is not failing


async def test_a_killed_bank_keeps_its_books(tmp_path: Path, make_client: ClientFactory,
                                             campaign_id: str) -> None:
    own = RunningBank(tmp_path / "bank", free_port())
    own.start()
    try:
        client = make_client("ICBC", url=own.url, public_key=own.public_key, max_attempts=2)
        requests = [credit_request(campaign_id, f"p-{i}", f"W-{i}") for i in range(40)]
        await client.credit_batch(requests[:20])
        await asyncio.gather(*(client.credit(r) for r in requests[20:]))
        spent = await client.spend(requests[0].idempotency_key, _spend(campaign_id))
        before = await client.books(campaign_id)
        own.kill()
        with pytest.raises(BankUnavailable) as caught:
            await client.credit(credit_request(campaign_id, "p-during"))
        assert caught.value.outcome_unknown is False  # refused connections sent nothing
        own.start()
        assert await client.books(campaign_id) == before
        assert (before.credits, before.spent_fen, before.double_credits) == (40, spent.amount_fen, 0)
        again = await client.credit(requests[5])
        assert again.duplicate is True
        assert (await client.settlement(spent.settlement_date)).lines[-1].spend_id == spent.spend_id
    finally:
        own.stop()


def _spend(campaign_id: str) -> SpendRequest:
    return SpendRequest(spend_id=f"{campaign_id}-s1", amount_fen=777, merchant_id="M-1")
