"""Settlement import and reconciliation on the real servers: every break class from a crafted
settlement file, strict parsing, re-imports, late pairs, resolution, and the ledger afterwards."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from kernel.db import create_pool
from kernel.leases import current_holder
from kernel.settings import Settings
from merchants import reconciler, settlement
from merchants.reconcile_worker import reconcile_forever, reconcile_round
from merchants.reconciler import RunOptions
from merchants.settlement_fetch import fetch_day
from stimulus import ledger_audit
from tests.conftest import Stack
from tests.foundation.helpers import auth
from tests.merchants.conftest import CampaignFactory, IssuedCampaign, MerchantFactory, Packet
from wallet_adapter.bank_protocol import SETTLEMENT_TIMEZONE, SpendRequest, settlement_date_of
from wallet_adapter.banks import BankRegistry, issuance_client_options

# Tight enough for a test, wide enough for the clocks of one machine.
OPTIONS = RunOptions(window_s=60, grace_s=0)


@pytest.fixture
async def fresh(new_issued_campaign: CampaignFactory) -> IssuedCampaign:
    return await new_issued_campaign()


def _csv(bank: str, day: object, lines: list[tuple[str, Packet, str, int, datetime]], *, complete: bool = True,
         count: int | None = None, extra: list[str] | None = None) -> bytes:
    rows = [",".join(settlement.CSV_HEADER)]
    for spend_id, packet, merchant_id, amount, at in lines:
        rows.append(f"{spend_id},{packet.payment_reference},{merchant_id},{amount},"
                    f"{at.astimezone(SETTLEMENT_TIMEZONE).isoformat()}")
    rows += extra or []
    total = sum(line[3] for line in lines)
    rows.append(f"#trailer,{bank},{day},{'true' if complete else 'false'},"
                f"{len(lines) + len(extra or []) if count is None else count},{total}")
    return ("\n".join(rows) + "\n").encode()


async def _upload(http: httpx.AsyncClient, token: str, bank: str, body: bytes) -> httpx.Response:
    return await http.post("/v1/admin/settlements", params={"bank": bank}, content=body,
                           headers={**auth(token), "Content-Type": "text/csv"})


async def _breaks(db: asyncpg.Connection, campaign_id: str) -> dict[str, list[asyncpg.Record]]:
    found: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in await db.fetch(
            """SELECT b.class, n.merchant_txn_id, l.spend_id, b.resolved_at, b.resolution
               FROM reconciliation_breaks b LEFT JOIN redemption_notices n ON n.id = b.notice_id
               LEFT JOIN settlement_lines l ON l.id = b.line_id
               WHERE b.campaign_id = $1 ORDER BY b.id""", campaign_id):
        found[row["class"]].append(row)
    return found


async def test_every_break_class_from_a_crafted_file(
        fresh: IssuedCampaign, make_merchant: MerchantFactory, http: httpx.AsyncClient, operator_token: str,
        db: asyncpg.Connection) -> None:
    shop = await make_merchant()
    till = shop.client
    p0, p1, p2, p3, p4, p5 = fresh.packets
    at = datetime.now(UTC) - timedelta(minutes=2)
    tag = uuid.uuid4().hex[:6]

    def sp(n: int) -> str:
        return f"sp-{tag}-{n}"

    notices = [  # (txn, packet, amount, bank reference)
        ("n1", p0, 1_000, sp(1)),          # matched by reference
        ("n2", p1, 1_200, sp(2)),          # the bank settled 1,300: amount mismatch
        ("n3", p2, 800, None),             # no reference: matched by merchant, packet, amount, time
        ("n4", p3, 500, sp(4)),            # the bank never settled it: missing at the bank
        ("n5a", p4, 300, sp(5)),           # one spend notified twice: one matches,
        ("n5b", p4, 300, sp(5)),           # the other is a duplicate
        ("n7", p5, 200, sp(7)),            # matched, though the bank lists its spend twice
    ]
    for txn, packet, amount, reference in notices:
        reply = await till.redeem(txn, packet.payment_reference, amount, at, bank_reference=reference)
        assert reply.status_code == 202, reply.text
    lines = [
        (sp(1), p0, shop.id, 1_000, at), (sp(2), p1, shop.id, 1_300, at), (sp(3), p2, shop.id, 800, at + timedelta(seconds=3)),
        (sp(5), p4, shop.id, 300, at), (sp(6), p5, shop.id, 400, at),   # sp-6: nobody notified it
        (sp(7), p5, shop.id, 200, at), (sp(7), p5, shop.id, 200, at),   # listed twice
        (sp(8), p5, shop.id, 100, at),                                  # notified only later: late
    ]
    day = settlement_date_of(at)
    by_bank: dict[str, list[tuple[str, Packet, str, int, datetime]]] = defaultdict(list)
    for line in lines:
        by_bank[line[1].bank_code].append(line)
    # Every bank the campaign's packets are at sends its (complete) day, even an empty one.
    for bank in {p.bank_code for p in fresh.packets} | set(by_bank):
        reply = await _upload(http, operator_token, bank, _csv(bank, day, by_bank[bank]))
        assert reply.status_code == 201, reply.text
        assert reply.json()["lines"] == len(by_bank[bank]) and reply.json()["rejected"] == 0

    first = await reconciler.run(db, OPTIONS)
    assert first.outcome == "breaks"
    breaks = await _breaks(db, fresh.campaign_id)
    assert [b["merchant_txn_id"] for b in breaks["amount_mismatch"]] == ["n2"]
    assert [b["merchant_txn_id"] for b in breaks["missing_at_bank"]] == ["n4"]
    assert [b["merchant_txn_id"] for b in breaks["duplicate"] if b["merchant_txn_id"]] == ["n5b"]
    assert [b["spend_id"] for b in breaks["duplicate"] if not b["merchant_txn_id"]] == [sp(7)]
    assert sorted(b["spend_id"] for b in breaks["missing_at_merchant"]) == [sp(6), sp(8)]
    assert "late" not in breaks
    matched = await db.fetch(
        """SELECT n.merchant_txn_id, x.matched_by FROM reconciliation_matches x
           JOIN redemption_notices n ON n.id = x.notice_id WHERE n.campaign_id = $1 ORDER BY 1""", fresh.campaign_id)
    assert [(r["merchant_txn_id"], r["matched_by"]) for r in matched] == [
        ("n1", "reference"), ("n3", "fallback"), ("n5a", "reference"), ("n7", "reference")]
    redeemed = await db.fetchval("SELECT COALESCE(sum(amount_fen), 0) FROM ledger_entries WHERE account = $1",
                                 f"campaign:{fresh.campaign_id}:redeemed")
    assert redeemed == 1_000 + 800 + 300 + 200

    # Nothing new: a second run changes nothing.
    again = await reconciler.run(db, OPTIONS)
    assert again.counts.get("matched", 0) == 0 and again.counts["missing_at_bank"] == 0
    assert await _breaks(db, fresh.campaign_id) == breaks

    # The merchant's till catches up: the late notice pairs, the missing-at-merchant break closes.
    assert (await till.redeem("n8", p5.payment_reference, 100, at, bank_reference=sp(8))).status_code == 202
    late = await reconciler.run(db, OPTIONS)
    assert late.counts["matched"] == 1 and late.counts["late"] == 1
    breaks = await _breaks(db, fresh.campaign_id)
    assert [b["merchant_txn_id"] for b in breaks["late"]] == ["n8"]
    closed = {b["spend_id"]: b for b in breaks["missing_at_merchant"]}
    assert closed[sp(8)]["resolved_at"] is not None and "after the cut-off" in closed[sp(8)]["resolution"]
    assert closed[sp(6)]["resolved_at"] is None

    # An operator resolves a break with a reason, once; the audit log has it.
    break_id = await db.fetchval("SELECT id FROM reconciliation_breaks WHERE campaign_id = $1 AND class = "
                                 "'missing_at_bank'", fresh.campaign_id)
    resolved = await http.post(f"/v1/admin/reconciliation/breaks/{break_id}/resolve", headers=auth(operator_token),
                               json={"resolution": "till voided the sale; merchant confirmed by phone"})
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["resolution"] == "till voided the sale; merchant confirmed by phone"
    assert resolved.json()["resolved_by"] not in (None, "reconciler")
    twice = await http.post(f"/v1/admin/reconciliation/breaks/{break_id}/resolve", headers=auth(operator_token),
                            json={"resolution": "again"})
    assert twice.status_code == 409 and twice.json()["code"] == "break_already_resolved"
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'reconciliation.resolve' AND subject = $1",
                             f"break:{break_id}") == 1
    listed = await http.get("/v1/admin/reconciliation/breaks", params={"campaign": fresh.campaign_id},
                            headers=auth(operator_token))
    assert break_id not in [b["id"] for b in listed.json()]

    report = (await http.get(f"/v1/admin/campaigns/{fresh.campaign_id}/report", headers=auth(operator_token))).json()
    assert report["money"]["redeemed_fen"] == 1_000 + 800 + 300 + 200 + 100
    assert {b["class"]: b["open"] for b in report["breaks"]} == {
        "missing_at_bank": 0, "missing_at_merchant": 1, "amount_mismatch": 1, "duplicate": 2, "late": 1}
    assert await ledger_audit.audit(db, fresh.campaign_id) == []


async def test_a_file_is_stored_once_and_parsed_strictly(
        fresh: IssuedCampaign, make_merchant: MerchantFactory, http: httpx.AsyncClient, operator_token: str,
        db: asyncpg.Connection) -> None:
    shop = await make_merchant()
    packet = fresh.packets[0]
    bank = packet.bank_code
    at = datetime.now(UTC) - timedelta(minutes=5)
    day = settlement_date_of(at)
    tag = uuid.uuid4().hex[:6]
    good = [(f"ok-{tag}-{i}", packet, shop.id, 100 + i, at) for i in range(3)]
    bad = [f"bad-{tag}-1,{packet.payment_reference},{shop.id},-5,{at.isoformat()}",           # negative amount
           f"bad-{tag}-2,{packet.payment_reference},{shop.id},12.50,{at.isoformat()}",        # not whole fen
           f"bad-{tag}-3,{packet.payment_reference},{shop.id},100",                          # a field short
           f"bad-{tag}-4,{packet.payment_reference},{shop.id},100,{(at - timedelta(days=3)).isoformat()}"]
    body = _csv(bank, day, good, complete=False, extra=bad)
    first = await _upload(http, operator_token, bank, body)
    assert first.status_code == 201, first.text
    answer = first.json()
    assert (answer["lines"], answer["rejected"], answer["created"]) == (3, 4, True)
    assert [r["line"] for r in answer["rejects"]] == [5, 6, 7, 8]
    assert "not on the file's day" in answer["rejects"][3]["error"]
    kept = await http.get(f"/v1/admin/settlements/{answer['file_id']}/rejects", headers=auth(operator_token))
    assert [r["line"] for r in kept.json()] == [5, 6, 7, 8]

    again = await _upload(http, operator_token, bank, body)
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["file_id"] == answer["file_id"]
    assert await db.fetchval("SELECT count(*) FROM settlement_lines WHERE spend_id LIKE $1", f"ok-{tag}-%") == 3

    # The day's next file lists the same spends again, and one more: only the new one is stored.
    more = [*good, (f"ok-{tag}-9", packet, shop.id, 900, at)]
    later = await _upload(http, operator_token, bank, _csv(bank, day, more, complete=True))
    assert later.status_code == 201
    assert (later.json()["lines"], later.json()["repeated"]) == (1, 3)
    assert await db.fetchval("SELECT count(*) FROM settlement_lines WHERE spend_id LIKE $1", f"ok-{tag}-%") == 4

    truncated = body.rsplit(b"#trailer", 1)[0]
    refused = await _upload(http, operator_token, bank, truncated)
    assert refused.status_code == 400 and refused.json()["code"] == "settlement_truncated"
    short = await _upload(http, operator_token, bank, _csv(bank, day, good[:2], count=3))
    assert short.status_code == 400 and short.json()["code"] == "settlement_count_mismatch"
    wrong = await _upload(http, operator_token, "ZZBANK", _csv(bank, day, good[:1]))
    assert wrong.status_code == 400 and wrong.json()["code"] == "settlement_wrong_bank"
    assert await db.fetchval("SELECT count(*) FROM settlement_lines WHERE spend_id LIKE $1", f"ok-{tag}-%") == 4
    forbidden = await http.post("/v1/admin/settlements", params={"bank": bank}, content=body,
                                headers={"Content-Type": "text/csv"})
    assert forbidden.status_code == 401


def test_both_formats_carry_the_same_records() -> None:
    at = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
    packet = Packet(1, "c", 1000, "ICBC", "w")
    raw = _csv("ICBC", settlement_date_of(at), [("s-1", packet, "m-1", 150, at), ("s-2", packet, "m-2", 250, at)])
    parsed = settlement.parse(raw, expect_bank="ICBC")
    assert [(x.spend_id, x.amount_fen, x.settled_at) for x in parsed.lines] == [("s-1", 150, at), ("s-2", 250, at)]
    assert settlement.parse(settlement.to_csv(parsed)).lines == parsed.lines


async def test_files_fetched_from_the_bank_pair_with_the_tills_notices(
        fresh: IssuedCampaign, make_merchant: MerchantFactory, merchant_settings: Settings,
        db: asyncpg.Connection) -> None:
    shop = await make_merchant()
    packet = fresh.packets[0]
    spend_id = f"live-{uuid.uuid4().hex[:8]}"
    banks = await BankRegistry.open(merchant_settings, issuance_client_options())
    try:
        bank = banks.client(packet.bank_code)
        paid = await bank.spend(packet.payment_reference, SpendRequest(
            spend_id=spend_id, amount_fen=2_500, merchant_id=shop.id, merchant_category=shop.category))
        reply = await shop.client.redeem("live-1", packet.payment_reference, 2_500, paid.settled_at,
                                         bank_reference=spend_id)
        assert reply.status_code == 202, reply.text
        as_csv = await fetch_day(db, bank, paid.settlement_date, "test")
        assert (as_csv.format, as_csv.created, as_csv.rejected) == ("csv", True, 0)
        assert as_csv.lines >= 1
        # The same day again as NDJSON: another file, whose spends are all known already.
        as_ndjson = await fetch_day(db, bank, paid.settlement_date, "test", file_format="ndjson")
        assert as_ndjson.format == "ndjson" and as_ndjson.lines == 0
        assert as_ndjson.repeated >= as_csv.lines
    finally:
        await banks.aclose()
    await reconciler.run(db, OPTIONS)
    status = await db.fetchval("SELECT status FROM redemption_notices WHERE merchant_id = $1 AND merchant_txn_id = "
                               "'live-1'", shop.id)
    assert status == "matched"


async def test_the_worker_fetches_the_banks_files_and_runs(
        merchant_settings: Settings, stack: Stack, db: asyncpg.Connection) -> None:
    runs_before = await db.fetchval("SELECT count(*) FROM reconciliation_runs")
    files_before = await db.fetchval("SELECT count(*) FROM settlement_files WHERE source = 'fetched'")
    pool = await create_pool(stack.database_url, 1, 2)
    stop = asyncio.Event()
    worker = asyncio.create_task(reconcile_forever(merchant_settings, pool, stop, 0.2, OPTIONS))
    try:
        deadline = time.monotonic() + 60
        while await db.fetchval("SELECT count(*) FROM reconciliation_runs") < runs_before + 2:
            assert time.monotonic() < deadline and not worker.done(), "the worker ran no reconciliation"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
        await pool.close()
    # Every bank's today (and yesterday, unless already complete) was asked for, over the bank API.
    assert await db.fetchval("SELECT count(*) FROM settlement_files WHERE source = 'fetched'") > files_before


async def test_worker_replicas_reconcile_one_round_at_a_time(
        merchant_settings: Settings, stack: Stack, db: asyncpg.Connection) -> None:
    """Two replicas' rounds at once: one fetches and runs, the other skips; an operator's run during
    a round is told another is under way."""
    pools = [await create_pool(stack.database_url, 1, 3) for _ in range(2)]
    try:
        runs_before = await db.fetchval("SELECT count(*) FROM reconciliation_runs")
        held = reconciler.run_lease()
        assert await held.take(db)                 # a round in progress elsewhere
        try:
            assert await reconcile_round(merchant_settings, pools[0], OPTIONS) is None
        finally:
            await held.release(db)
        rounds = await asyncio.gather(*(reconcile_round(merchant_settings, pool, OPTIONS) for pool in pools))
        assert sorted(summary is None for summary in rounds) == [False, True], rounds
        assert await db.fetchval("SELECT count(*) FROM reconciliation_runs") == runs_before + 1
        assert await current_holder(db, reconciler.RECONCILE_LEASE) is None   # released after the round
    finally:
        for pool in pools:
            await pool.close()
