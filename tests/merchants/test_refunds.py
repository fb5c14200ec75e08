"""Refunds end to end on the real servers: the sandbox bank's refund endpoint and its books, refund
lines in both settlement formats, and the reconciler pairing reversals with them and moving the
money back out of redeemed to where the bank put it."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from kernel.settings import Settings
from merchants import reconciler, settlement
from merchants.reconciler import RunOptions
from merchants.settlement_fetch import fetch_day
from stimulus import ledger_audit
from tests.foundation.helpers import auth
from tests.merchants.conftest import CampaignFactory, IssuedCampaign, MerchantFactory, Packet
from wallet_adapter.bank_protocol import (
    SETTLEMENT_TIMEZONE,
    RefundRequest,
    SpendRequest,
    settlement_date_of,
)
from wallet_adapter.banks import BankRegistry, issuance_client_options
from wallet_adapter.provider import PermanentFailure, RequestRejected

OPTIONS = RunOptions(window_s=60, grace_s=0)

# (line id, packet, merchant, amount, settled at, refund of, returned to); a spend has no refund of.
Row = tuple[str, Packet, str, int, datetime, str | None, str | None]


@pytest.fixture
async def fresh(new_issued_campaign: CampaignFactory) -> IssuedCampaign:
    return await new_issued_campaign()


def _csv(bank: str, day: object, rows: list[Row]) -> bytes:
    out = [",".join(settlement.CSV_HEADER_WITH_REFUNDS)]
    for line_id, packet, merchant_id, amount, at, refund_of, returned_to in rows:
        kind = "refund" if refund_of else "spend"
        out.append(f"{line_id},{packet.payment_reference},{merchant_id},{amount},"
                   f"{at.astimezone(SETTLEMENT_TIMEZONE).isoformat()},{kind},{refund_of or ''},{returned_to or ''}")
    out.append(f"#trailer,{bank},{day},true,{len(rows)},{sum(r[3] for r in rows)}")
    return ("\n".join(out) + "\n").encode()


async def _balance(db: asyncpg.Connection, campaign_id: str, kind: str) -> int:
    return int(await db.fetchval("SELECT COALESCE(sum(amount_fen), 0) FROM ledger_entries WHERE account = $1",
                                 f"campaign:{campaign_id}:{kind}"))


async def _statuses(db: asyncpg.Connection, merchant_id: str) -> dict[str, str]:
    rows = await db.fetch("SELECT merchant_txn_id, status FROM redemption_notices WHERE merchant_id = $1", merchant_id)
    return {r["merchant_txn_id"]: r["status"] for r in rows}


async def test_reversals_pair_with_refund_lines_and_move_the_money_back(
        fresh: IssuedCampaign, make_merchant: MerchantFactory, http: httpx.AsyncClient, operator_token: str,
        db: asyncpg.Connection) -> None:
    shop = await make_merchant()
    till, me = shop.client, shop.id
    p0, p1, p2, p3, p4, p5 = fresh.packets
    at = datetime.now(UTC) - timedelta(minutes=2)
    tag = uuid.uuid4().hex[:6]

    def ref(name: str) -> str:
        return f"{name}-{tag}"

    payments = [("n1", p0, 1_000), ("n2", p1, 800), ("n3", p2, 600), ("n4", p3, 500), ("n5", p4, 700)]
    for txn, packet, amount in payments:
        reply = await till.redeem(txn, packet.payment_reference, amount, at, bank_reference=ref("sp" + txn[1:]))
        assert reply.status_code == 202, reply.text
    reversals = [  # (reversal txn, payment txn, amount, bank reference)
        ("r1", "n1", 400, ref("rf1")),      # by reference, back to the wallet
        ("r2", "n2", 800, None),            # no reference: by merchant, packet, amount and time
        ("r3", "n3", 200, ref("rf3")),      # the bank never refunded it: missing at the bank
        ("r4", "n4", 300, ref("rf4")),      # the bank refunded 250: amount mismatch
        ("r5", "n5", 700, ref("rf5")),      # refunded after the reclaim: back to the budget
    ]
    for txn, paid, amount, reference in reversals:
        reply = await till.reverse(paid, txn, amount, at, bank_reference=reference)
        assert reply.status_code == 202, reply.text
    # A reversal of n1 citing a refund of another spend: the bank never refunded n1's spend so.
    assert (await till.reverse("n1", "r1-wrong", 100, at, bank_reference=ref("rf6"))).status_code == 202

    rows: list[Row] = [
        (ref("sp1"), p0, me, 1_000, at, None, None), (ref("rf1"), p0, me, 400, at, ref("sp1"), "wallet"),
        (ref("sp2"), p1, me, 800, at, None, None), (ref("rf2"), p1, me, 800, at, ref("sp2"), "wallet"),
        (ref("sp3"), p2, me, 600, at, None, None),
        (ref("sp4"), p3, me, 500, at, None, None), (ref("rf4"), p3, me, 250, at, ref("sp4"), "wallet"),
        (ref("sp5"), p4, me, 700, at, None, None), (ref("rf5"), p4, me, 700, at, ref("sp5"), "budget"),
        (ref("sp6"), p5, me, 900, at, None, None), (ref("rf6"), p5, me, 300, at, ref("sp6"), "wallet"),
    ]
    by_bank: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_bank[row[1].bank_code].append(row)
    day = settlement_date_of(at)
    for bank in {p.bank_code for p in fresh.packets}:
        reply = await http.post("/v1/admin/settlements", params={"bank": bank}, content=_csv(bank, day, by_bank[bank]),
                                headers={**auth(operator_token), "Content-Type": "text/csv"})
        assert reply.status_code == 201, reply.text
        assert reply.json()["rejected"] == 0
    budget_before = await _balance(db, fresh.campaign_id, "budget")

    first = await reconciler.run(db, OPTIONS)
    assert first.outcome == "breaks"
    assert first.counts["refunded_fen"] == 400 + 800 + 700
    statuses = await _statuses(db, me)
    assert {t: statuses[t] for t in ("n1", "n2", "n3", "n4", "n5", "r1", "r2", "r5")} == dict.fromkeys(
        ("n1", "n2", "n3", "n4", "n5", "r1", "r2", "r5"), "matched")
    assert (statuses["r3"], statuses["r4"]) == ("break", "break")
    assert statuses["r1-wrong"] == "break"
    matches = {r["merchant_txn_id"]: (r["matched_by"], r["returned_to"]) for r in await db.fetch(
        """SELECT n.merchant_txn_id, x.matched_by, x.returned_to FROM reconciliation_matches x
           JOIN redemption_notices n ON n.id = x.notice_id WHERE n.merchant_id = $1 AND n.kind = 'reversal'""", me)}
    assert matches == {"r1": ("reference", "wallet"), "r2": ("fallback", "wallet"), "r5": ("reference", "budget")}
    classes = {(r["class"], r["merchant_txn_id"] or r["spend_id"]) for r in await db.fetch(
        """SELECT b.class, n.merchant_txn_id, l.spend_id FROM reconciliation_breaks b
           LEFT JOIN redemption_notices n ON n.id = b.notice_id LEFT JOIN settlement_lines l ON l.id = b.line_id
           WHERE b.campaign_id = $1 AND b.resolved_at IS NULL""", fresh.campaign_id)}
    assert classes == {("missing_at_bank", "r3"), ("amount_mismatch", "r4"), ("missing_at_bank", "r1-wrong"),
                       ("missing_at_merchant", ref("sp6")), ("missing_at_merchant", ref("rf6"))}
    paid = 1_000 + 800 + 600 + 500 + 700
    assert await _balance(db, fresh.campaign_id, "redeemed") == paid - (400 + 800 + 700)
    assert await _balance(db, fresh.campaign_id, "budget") == budget_before + 700
    assert await ledger_audit.audit(db, fresh.campaign_id) == []

    # The till catches up with the payment and its refund: both pair late, in one run.
    assert (await till.redeem("n6", p5.payment_reference, 900, at, bank_reference=ref("sp6"))).status_code == 202
    assert (await till.reverse("n6", "r6", 300, at, bank_reference=ref("rf6"))).status_code == 202
    late = await reconciler.run(db, OPTIONS)
    assert late.counts["matched"] == 2 and late.counts["late"] == 2 and late.counts["refunded_fen"] == 300
    assert (await _statuses(db, me))["r6"] == "matched"
    assert await _balance(db, fresh.campaign_id, "redeemed") == paid + 900 - (400 + 800 + 700 + 300)
    again = await reconciler.run(db, OPTIONS)
    assert again.counts.get("matched", 0) == 0 and "refunded_fen" not in again.counts
    assert await ledger_audit.audit(db, fresh.campaign_id) == []

    report = (await http.get(f"/v1/admin/campaigns/{fresh.campaign_id}/report", headers=auth(operator_token))).json()
    assert report["money"]["redeemed_fen"] == paid + 900 - (400 + 800 + 700 + 300)


async def test_the_bank_refunds_to_the_wallet_then_to_the_city_and_settles_both(
        fresh: IssuedCampaign, make_merchant: MerchantFactory, merchant_settings: Settings,
        db: asyncpg.Connection) -> None:
    shop, other = await make_merchant(), await make_merchant()
    packet = fresh.packets[0]
    key, tag = packet.payment_reference, uuid.uuid4().hex[:8]
    banks = await BankRegistry.open(merchant_settings, issuance_client_options())
    try:
        bank = banks.client(packet.bank_code)
        spend = await bank.spend(key, SpendRequest(spend_id=f"sp-{tag}", amount_fen=3_000, merchant_id=shop.id,
                                                   merchant_category=shop.category))
        refund = RefundRequest(refund_id=f"rf-{tag}", spend_id=spend.spend_id, amount_fen=1_000, merchant_id=shop.id)
        back = await bank.refund(key, refund)
        assert (back.returned_to, back.duplicate) == ("wallet", False)
        assert back.balance_fen == packet.amount_fen - 3_000 + 1_000
        assert (await bank.refund(key, refund)).duplicate is True
        for request, status, code in (
                (RefundRequest(refund_id=f"rf-{tag}", spend_id=spend.spend_id, amount_fen=999, merchant_id=shop.id),
                 409, "idempotency_conflict"),
                (RefundRequest(refund_id=f"rx-{tag}", spend_id=spend.spend_id, amount_fen=2_001, merchant_id=shop.id),
                 422, "refund_exceeds_spend"),
                (RefundRequest(refund_id=f"ry-{tag}", spend_id=spend.spend_id, amount_fen=1, merchant_id=other.id),
                 422, "refund_wrong_merchant"),
                (RefundRequest(refund_id=f"rz-{tag}", spend_id=f"nope-{tag}", amount_fen=1, merchant_id=shop.id),
                 404, "spend_not_found")):
            with pytest.raises((PermanentFailure, RequestRejected)) as refused:
                await bank.refund(key, request)
            assert (getattr(refused.value, "status", None), refused.value.code) == (status, code)

        # The merchant's notices, and the bank's file of the day in both formats: the refund pairs.
        assert (await shop.client.redeem("pay", key, 3_000, spend.settled_at,
                                         bank_reference=spend.spend_id)).status_code == 202
        assert (await shop.client.reverse("pay", "back", 1_000, back.settled_at,
                                          bank_reference=back.refund_id)).status_code == 202
        as_csv = await bank.settlement_csv(back.settlement_date)
        assert b"kind,refund_of,returned_to" in as_csv
        parsed = settlement.parse(as_csv, expect_bank=packet.bank_code)
        as_ndjson = await bank.settlement(back.settlement_date)
        assert [(x.spend_id, x.kind, x.refund_of, x.returned_to) for x in parsed.lines] == [
            (x.spend_id, x.kind, x.refund_of, x.returned_to) for x in as_ndjson.lines]
        assert (f"rf-{tag}", "refund", spend.spend_id, "wallet") in [
            (x.spend_id, x.kind, x.refund_of, x.returned_to) for x in parsed.lines]
        assert (await fetch_day(db, bank, back.settlement_date, "test")).rejected == 0
        await reconciler.run(db, OPTIONS)
        assert await _statuses(db, shop.id) == {"pay": "matched", "back": "matched"}
        assert await ledger_audit.audit(db, fresh.campaign_id) == []

        # Once the bank took the balance back, a refund goes to the city, counted as reclaimed.
        reclaimed = await bank.reclaim(key)
        after = await bank.refund(key, RefundRequest(refund_id=f"rl-{tag}", spend_id=spend.spend_id, amount_fen=500,
                                                     merchant_id=shop.id))
        assert (after.returned_to, after.balance_fen) == ("budget", 0)
        again = await bank.reclaim(key)  # a repeated reclaim answers what the reclaim took, nothing since
        assert (again.reclaimed_fen, again.spent_fen) == (reclaimed.reclaimed_fen, reclaimed.spent_fen)
        record = await bank.status(key)
        assert record is not None
        assert (record.spent_fen, record.reclaimed_fen) == (3_000 - 1_000 - 500, reclaimed.reclaimed_fen + 500)
        books = await bank.books(fresh.campaign_id)
        assert books.refunds >= 2
        assert books.spent_fen + books.reclaimed_fen + books.outstanding_fen == books.credited_fen
    finally:
        await banks.aclose()


def test_refund_lines_round_trip_and_bad_ones_are_kept_aside() -> None:
    at = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
    packet = Packet(1, "c", 1000, "ICBC", "w")
    day = settlement_date_of(at)
    raw = _csv("ICBC", day, [("s-1", packet, "m-1", 150, at, None, None),
                             ("r-1", packet, "m-1", 50, at, "s-1", "wallet")])
    parsed = settlement.parse(raw, expect_bank="ICBC")
    assert [(x.spend_id, x.kind, x.refund_of, x.returned_to) for x in parsed.lines] == [
        ("s-1", "spend", None, None), ("r-1", "refund", "s-1", "wallet")]
    assert settlement.parse(settlement.to_csv(parsed)).lines == parsed.lines
    stamp = at.astimezone(SETTLEMENT_TIMEZONE).isoformat()
    bad = [f"r-2,{packet.payment_reference},m-1,10,{stamp},refund,,wallet",        # refunds nothing
           f"r-3,{packet.payment_reference},m-1,10,{stamp},refund,s-1,citizen",    # returned to nobody known
           f"s-2,{packet.payment_reference},m-1,10,{stamp},spend,s-1,",            # a spend refunding
           f"s-3,{packet.payment_reference},m-1,10,{stamp},bonus,,"]               # no such kind
    lines = raw.decode().splitlines()
    body = "\n".join([*lines[:-1], *bad, f"#trailer,ICBC,{day},true,6,240"]) + "\n"
    kept = settlement.parse(body.encode(), expect_bank="ICBC")
    assert len(kept.lines) == 2 and [r.line_no for r in kept.rejects] == [4, 5, 6, 7]
    assert "refund_of" in kept.rejects[0].error and "returned_to" in kept.rejects[1].error
