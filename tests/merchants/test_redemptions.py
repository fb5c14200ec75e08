"""Redemption notices and reversals through the signed API: validation, the balance rule,
idempotency by merchant txn id, concurrency, and packets that can no longer be spent."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from kernel.db import create_pool
from kernel.settings import Settings
from tests.conftest import Stack
from tests.foundation.helpers import auth
from tests.merchants.conftest import (
    IssuedCampaign,
    MerchantFactory,
    RegisteredMerchant,
    issue_campaign,
)
from wallet_adapter import expiry
from wallet_adapter.bank_protocol import idempotency_key_for
from wallet_adapter.banks import BankRegistry, issuance_client_options


def _now() -> datetime:
    return datetime.now(UTC)


def _txn() -> str:
    return f"txn-{uuid.uuid4().hex[:12]}"


async def _rows(db: asyncpg.Connection, merchant_id: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM redemption_notices WHERE merchant_id = $1", merchant_id))


async def test_a_notice_is_acknowledged_pending_and_readable(
        merchant: RegisteredMerchant, issued: IssuedCampaign, db: asyncpg.Connection) -> None:
    packet = issued.packet()
    txn, at = _txn(), _now() - timedelta(seconds=30)
    response = await merchant.client.redeem(txn, packet.payment_reference, 1_500, at, bank_reference="SP-1",
                                            basket_fen=4_000)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending" and body["kind"] == "payment" and body["amount_fen"] == 1_500
    assert body["campaign_id"] == issued.campaign_id and body["basket_fen"] == 4_000
    assert response.headers["location"] == f"/v1/merchants/{merchant.id}/redemptions/{txn}"
    row = await db.fetchrow("SELECT packet_id, bank_code, status FROM redemption_notices WHERE merchant_id = $1",
                            merchant.id)
    assert row is not None and (row["packet_id"], row["bank_code"], row["status"]) == (
        packet.id, packet.bank_code, "pending")
    status = await merchant.client.status(txn)
    assert status.status_code == 200 and status.json()["status"] == "pending"
    missing = await merchant.client.status("never-sent")
    assert missing.status_code == 404 and missing.json()["code"] == "notice_not_found"


async def test_the_same_notice_replays_and_another_payload_conflicts(
        merchant: RegisteredMerchant, issued: IssuedCampaign, db: asyncpg.Connection) -> None:
    packet = issued.packet()
    txn, at = _txn(), _now()
    first = await merchant.client.redeem(txn, packet.payment_reference, 2_000, at)
    assert first.status_code == 202
    again = await merchant.client.redeem(txn, packet.payment_reference, 2_000, at)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other = await merchant.client.redeem(txn, packet.payment_reference, 2_001, at)
    assert other.status_code == 409 and other.json()["code"] == "merchant_txn_id_reused"
    assert await _rows(db, merchant.id) == 1


async def test_a_stored_txn_id_answers_before_any_refusal_of_its_packet(
        merchant: RegisteredMerchant, issued: IssuedCampaign, db: asyncpg.Connection) -> None:
    packet = issued.packet()
    txn, at = _txn(), _now()
    whole = await merchant.client.redeem(txn, packet.payment_reference, packet.amount_fen, at)
    assert whole.status_code == 202, whole.text
    # The packet has nothing left, yet the same notice is its replay, not a balance refusal.
    again = await merchant.client.redeem(txn, packet.payment_reference, packet.amount_fen, at)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    over = await merchant.client.redeem(txn, packet.payment_reference, packet.amount_fen + 1, at)
    assert over.status_code == 409 and over.json()["code"] == "merchant_txn_id_reused"
    unknown = await merchant.client.redeem(txn, "pkt-" + "0" * 32, 100, at)
    assert unknown.status_code == 409 and unknown.json()["code"] == "merchant_txn_id_reused"
    fresh = await merchant.client.redeem(_txn(), packet.payment_reference, 1, at)
    assert fresh.status_code == 422 and fresh.json() == {**fresh.json(), "code": "amount_exceeds_balance",
                                                         "available_fen": 0}
    assert await _rows(db, merchant.id) == 1


async def test_unknown_references_and_bad_bodies_are_refused(
        merchant: RegisteredMerchant, issued: IssuedCampaign, db: asyncpg.Connection) -> None:
    unknown = await merchant.client.redeem(_txn(), "pkt-" + "0" * 32, 100, _now())
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_payment_reference"
    packet = issued.packet()
    for payload, code in (({"merchant_txn_id": "a", "payment_reference": packet.payment_reference,
                            "amount_fen": 0, "occurred_at": _now()}, "validation_failed"),
                          ({"merchant_txn_id": "a", "payment_reference": packet.payment_reference,
                            "amount_fen": 5, "occurred_at": "2026-01-01T00:00:00"}, "validation_failed"),
                          ({"merchant_txn_id": "a b", "payment_reference": packet.payment_reference,
                            "amount_fen": 5, "occurred_at": _now()}, "validation_failed"),
                          ({"merchant_txn_id": "a", "payment_reference": packet.payment_reference,
                            "amount_fen": 5, "basket_fen": 4, "occurred_at": _now()}, "invalid_basket")):
        response = await merchant.client.request("POST", f"{merchant.client.base_path}/redemptions", payload)
        assert response.status_code == 400 and response.json()["code"] == code, (payload, response.text)
    future = await merchant.client.redeem(_txn(), packet.payment_reference, 100, _now() + timedelta(hours=1))
    assert future.status_code == 422 and future.json()["code"] == "occurred_in_future"
    assert await _rows(db, merchant.id) == 0


async def test_notices_never_claim_more_than_the_packet_holds(
        merchant: RegisteredMerchant, make_merchant: MerchantFactory, issued: IssuedCampaign) -> None:
    packet = issued.packet()
    ref, at = packet.payment_reference, _now()
    over = await merchant.client.redeem(_txn(), ref, packet.amount_fen + 1, at)
    assert over.status_code == 422 and over.json()["code"] == "amount_exceeds_balance"
    assert over.json()["available_fen"] == packet.amount_fen
    half = packet.amount_fen // 2
    first = _txn()
    assert (await merchant.client.redeem(first, ref, half, at)).status_code == 202
    # Another merchant draws on the same balance.
    other = await make_merchant()
    assert (await other.client.redeem(_txn(), ref, packet.amount_fen - half, at)).status_code == 202
    full = await merchant.client.redeem(_txn(), ref, 1, at)
    assert full.status_code == 422 and full.json()["available_fen"] == 0
    # A refund gives its part back to the balance.
    reversal = await merchant.client.reverse(first, _txn(), 300, at)
    assert reversal.status_code == 202, reversal.text
    assert reversal.json()["kind"] == "reversal" and reversal.json()["reverses_txn_id"] == first
    assert (await merchant.client.redeem(_txn(), ref, 301, at)).status_code == 422
    assert (await merchant.client.redeem(_txn(), ref, 300, at)).status_code == 202
    status = (await merchant.client.status(first)).json()
    assert status["reversed_fen"] == 300


async def test_reversals_never_exceed_their_payment(merchant: RegisteredMerchant, issued: IssuedCampaign,
                                                    make_merchant: MerchantFactory) -> None:
    packet = issued.packet()
    payment, at = _txn(), _now()
    assert (await merchant.client.redeem(payment, packet.payment_reference, 1_000, at)).status_code == 202
    too_much = await merchant.client.reverse(payment, _txn(), 1_001, at)
    assert too_much.status_code == 422 and too_much.json()["code"] == "reversal_exceeds_payment"
    first = _txn()
    assert (await merchant.client.reverse(payment, first, 600, at)).status_code == 202
    replay = await merchant.client.reverse(payment, first, 600, at)
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    left = await merchant.client.reverse(payment, _txn(), 401, at)
    assert left.status_code == 422 and left.json()["refundable_fen"] == 400
    assert (await merchant.client.reverse(payment, _txn(), 400, at)).status_code == 202
    of_reversal = await merchant.client.reverse(first, _txn(), 1, at)
    assert of_reversal.status_code == 422 and of_reversal.json()["code"] == "not_a_payment"
    unknown = await merchant.client.reverse("no-such-payment", _txn(), 1, at)
    assert unknown.status_code == 404 and unknown.json()["code"] == "payment_not_found"
    # Another merchant cannot refund this merchant's payment.
    other = await make_merchant()
    assert (await other.client.reverse(payment, _txn(), 1, at)).json()["code"] == "payment_not_found"


async def test_ineligible_category_or_district_is_refused(
        make_merchant: MerchantFactory, issued: IssuedCampaign, http: httpx.AsyncClient, operator_token: str,
        db: asyncpg.Connection) -> None:
    path = f"/v1/admin/campaigns/{issued.campaign_id}/acceptance"
    rules = {"categories": ["5411", "5812"], "districts": ["430102", "430103"]}
    response = await http.put(path, json=rules, headers=auth(operator_token))
    assert response.status_code == 200 and response.json() == rules
    try:
        grocer = await make_merchant(category="5411", district="430103")
        jeweller = await make_merchant(category="5944", district="430102")
        far_away = await make_merchant(category="5812", district="430111")
        packet, at = issued.packet(), _now()
        for shop, refused in ((jeweller, "category"), (far_away, "district")):
            response = await shop.client.redeem(_txn(), packet.payment_reference, 100, at)
            assert response.status_code == 403, response.text
            assert response.json()["code"] == "merchant_not_eligible" and response.json()["refused"] == refused
            assert await _rows(db, shop.id) == 0
        assert (await grocer.client.redeem(_txn(), packet.payment_reference, 100, at)).status_code == 202
    finally:
        cleared = await http.put(path, json={}, headers=auth(operator_token))
        assert cleared.status_code == 200 and cleared.json() == {"categories": [], "districts": []}
    assert (await http.get(path, headers=auth(operator_token))).json() == {"categories": [], "districts": []}


async def test_the_same_notice_ten_times_at_once_stores_one_row(
        merchant: RegisteredMerchant, issued: IssuedCampaign, db: asyncpg.Connection) -> None:
    packet = issued.packet()
    txn, at = _txn(), _now()
    replies = await asyncio.gather(*(merchant.client.redeem(txn, packet.payment_reference, 700, at)
                                     for _ in range(10)))
    assert sorted(r.status_code for r in replies) == [200] * 9 + [202]
    assert len({r.content for r in replies}) == 1
    assert await _rows(db, merchant.id) == 1


async def test_notices_racing_for_one_balance_spend_it_once(
        merchant: RegisteredMerchant, issued: IssuedCampaign, db: asyncpg.Connection) -> None:
    packet = issued.packet()
    share = packet.amount_fen * 6 // 10
    replies = await asyncio.gather(*(merchant.client.redeem(_txn(), packet.payment_reference, share, _now())
                                     for _ in range(10)))
    codes = sorted(r.status_code for r in replies)
    assert codes == [202] + [422] * 9, [r.text for r in replies]
    assert await db.fetchval("SELECT sum(amount_fen) FROM redemption_notices WHERE packet_id = $1",
                             packet.id) == share


async def test_the_database_finds_packets_by_the_reference_the_bank_was_given(
        db: asyncpg.Connection, issued: IssuedCampaign) -> None:
    rng = random.Random(5)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
    campaigns = ["abc", "a" * 40, *("".join(rng.choice(alphabet) for _ in range(rng.randint(3, 40)))
                                      for _ in range(200))]
    packet_ids = [1, 9, 10, 2**62, *(rng.randint(1, 2**62) for _ in range(len(campaigns) - 4))]
    found = await db.fetch("SELECT merchants_payment_reference(c, p) AS ref FROM unnest($1::text[], $2::bigint[]) "
                           "AS t(c, p)", campaigns, packet_ids)
    assert [r["ref"] for r in found] == [idempotency_key_for(c, str(p)) for c, p in zip(campaigns, packet_ids,
                                                                                        strict=True)]
    packet = issued.packets[0]
    plan = "\n".join(r[0] for r in await db.fetch(
        "EXPLAIN SELECT id FROM packets WHERE merchants_payment_reference(campaign_id, id) = $1",
        packet.payment_reference))
    assert "packets_payment_reference" in plan, plan


async def test_notices_for_packets_past_their_spending_deadline_are_refused(
        make_merchant: MerchantFactory, api_url: str, stack: Stack, merchant_settings: Settings,
        operator_token: str, second_operator_token: str, db: asyncpg.Connection) -> None:
    now = _now()
    spending_deadline = now + timedelta(seconds=30)
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        short = await issue_campaign(
            http, merchant_settings, operator_token, second_operator_token, db, f"test:{uuid.uuid4().hex[:10]}",
            winners=6, registration_opens_at=(now - timedelta(seconds=5)).isoformat(),
            registration_closes_at=(now + timedelta(seconds=8)).isoformat(),
            claim_deadline=(now + timedelta(seconds=20)).isoformat(),
            spending_deadline=spending_deadline.isoformat())
    shop = await make_merchant()
    spent, unspent = short.packets[0], short.packets[1]
    payment = _txn()
    assert (await shop.client.redeem(payment, spent.payment_reference, 500, _now())).status_code == 202
    await asyncio.sleep(max(0.0, (spending_deadline - _now()).total_seconds()) + 0.5)
    late = await shop.client.redeem(_txn(), unspent.payment_reference, 500, spending_deadline - timedelta(seconds=5))
    assert late.status_code == 422 and late.json()["code"] == "spending_closed", late.text

    assert stack.settings.database_url
    pool = await create_pool(stack.settings.database_url, 1, 4)
    banks = await BankRegistry.open(merchant_settings, issuance_client_options(4, 5.0))
    try:
        report = await expiry.expire(pool, banks, short.campaign_id, "operator:test")
    finally:
        await banks.aclose()
        await pool.close()
    assert report.left == 0, report
    state = await db.fetchval("SELECT state FROM packets WHERE id = $1", unspent.id)
    assert state == "reclaimed"
    reclaimed = await shop.client.redeem(_txn(), unspent.payment_reference, 500, spending_deadline - timedelta(seconds=5))
    assert reclaimed.status_code == 422 and reclaimed.json()["code"] == "packet_not_live"
    assert reclaimed.json()["packet_state"] == "reclaimed"
    # A refund of a payment made in time is still taken: the reconciler settles where it goes.
    assert (await shop.client.reverse(payment, _txn(), 200, _now())).status_code == 202
    assert await _rows(db, shop.id) == 2
