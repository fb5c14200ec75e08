"""The reconciler killed mid-run: what it committed stands, the next run finishes the job, and the
money is counted once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from kernel.errors import Conflict
from merchants import reconciler, settlement
from merchants.reconciler import RunOptions
from stimulus import ledger_audit
from tests.conftest import Stack
from tests.merchants.conftest import CampaignFactory, IssuedCampaign, MerchantFactory
from wallet_adapter.bank_protocol import SETTLEMENT_TIMEZONE, settlement_date_of

NOTICES = 3_000
CHUNK = 40


async def _seed(db: asyncpg.Connection, campaign: IssuedCampaign, merchant_id: str, tag: str) -> int:
    """Notices and the bank's matching lines, one fen each, written straight to the tables the API
    and the import fill; the last ten notices have no line at the bank."""
    at = datetime.now(UTC) - timedelta(minutes=3)
    packets = campaign.packets
    rows = []
    for i in range(NOTICES):
        packet = packets[i % len(packets)]
        rows.append((merchant_id, f"{tag}-{i}", "payment", campaign.campaign_id, packet.id, packet.bank_code,
                     packet.payment_reference, f"{tag}-s{i}", 1, at, hashlib.sha256(str(i).encode()).digest()))
    await db.copy_records_to_table(
        "redemption_notices", records=rows,
        columns=["merchant_id", "merchant_txn_id", "kind", "campaign_id", "packet_id", "bank_code", "payment_reference",
                 "bank_reference", "amount_fen", "occurred_at", "payload_hash"])
    day = settlement_date_of(at)
    for bank in sorted({p.bank_code for p in packets}):
        lines = [r for i, r in enumerate(rows) if r[5] == bank and i < NOTICES - 10]
        body = [",".join(settlement.CSV_HEADER)]
        body += [f"{r[7]},{r[6]},{merchant_id},1,{at.astimezone(SETTLEMENT_TIMEZONE).isoformat()}" for r in lines]
        body.append(f"#trailer,{bank},{day},true,{len(lines)},{len(lines)}")
        await settlement.import_file(db, ("\n".join(body) + "\n").encode(), source="uploaded", actor="test",
                                     expect_bank=bank)
    return NOTICES - 10


async def test_a_run_killed_mid_way_is_finished_by_the_next(
        new_issued_campaign: CampaignFactory, make_merchant: MerchantFactory, stack: Stack,
        db: asyncpg.Connection) -> None:
    # Its own campaign: a thousand notices per packet would leave other tests' packets spent.
    issued = await new_issued_campaign()
    merchant = await make_merchant()
    tag = f"k{uuid.uuid4().hex[:6]}"
    settled = await _seed(db, issued, merchant.id, tag)
    redeemed_account = f"campaign:{issued.campaign_id}:redeemed"
    redeemed_before = await db.fetchval(
        "SELECT COALESCE(sum(amount_fen), 0) FROM ledger_entries WHERE account = $1", redeemed_account)

    env = {**os.environ, "STIMULUS_ENV": "development", "DATABASE_URL": stack.database_url, "REDIS_URL": stack.redis_url,
           "STIMULUS_STATE_DIR": str(stack.settings.state_dir)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stimulus.cli", "reconcile", "run", "--window-s", "60", "--grace-s", "0",
        "--chunk", str(CHUNK), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    matched = 0
    while time.monotonic() < deadline and child.returncode is None:
        matched = await db.fetchval(
            "SELECT count(*) FROM redemption_notices WHERE merchant_txn_id LIKE $1 AND status = 'matched'", f"{tag}-%")
        if matched >= CHUNK:
            break
        await asyncio.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    await asyncio.wait_for(child.wait(), 30)
    assert 0 < matched < settled, f"the run was not caught mid-way ({matched} of {settled} matched)"

    # The killed run's lease expires a while after its last chunk; until then the next run is refused.
    deadline = time.monotonic() + reconciler.RUN_LEASE_TTL_S + 60
    while True:
        try:
            summary = await reconciler.run(db, RunOptions(window_s=60, grace_s=0, chunk=500))
            break
        except Conflict:
            assert time.monotonic() < deadline, "the killed run's lease never expired"
            await asyncio.sleep(0.2)
    interrupted = await db.fetchval("SELECT count(*) FROM reconciliation_runs WHERE outcome = 'incomplete' "
                                    "AND counts ? 'interrupted' AND id < $1", summary.run_id)
    assert interrupted >= 1
    statuses = dict(await db.fetch(
        "SELECT status, count(*) FROM redemption_notices WHERE merchant_txn_id LIKE $1 GROUP BY 1", f"{tag}-%"))
    assert statuses == {"matched": settled, "break": 10}
    assert await db.fetchval(
        """SELECT count(*) FROM reconciliation_breaks b JOIN redemption_notices n ON n.id = b.notice_id
           WHERE n.merchant_txn_id LIKE $1 AND b.class = 'missing_at_bank'""", f"{tag}-%") == 10
    redeemed = await db.fetchval(
        "SELECT COALESCE(sum(amount_fen), 0) FROM ledger_entries WHERE account = $1", redeemed_account)
    assert redeemed - redeemed_before == settled          # one fen per matched notice, posted once
    assert await ledger_audit.audit(db, issued.campaign_id) == []
