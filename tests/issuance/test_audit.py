"""`stimulus audit ledger`: clean books pass; a posting that no packet's history explains is named."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg

from kernel import ledger
from tests.conftest import Stack


def _audit(stack: Stack, campaign_id: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STIMULUS_ENV": "development", "DATABASE_URL": stack.database_url, "REDIS_URL": stack.redis_url,
           "STIMULUS_STATE_DIR": str(stack.settings.state_dir)}
    return subprocess.run([sys.executable, "-m", "stimulus.cli", "audit", "ledger", "--campaign", campaign_id],
                          env=env, capture_output=True, text=True, timeout=120)


async def test_audit_names_a_posting_without_a_packet(stack: Stack, db: asyncpg.Connection) -> None:
    campaign = "audit-break-1"
    clean = _audit(stack, campaign)
    assert clean.returncode == 0 and "ledger OK" in clean.stdout, clean.stdout + clean.stderr
    async with db.transaction():
        await ledger.ensure_accounts(db, campaign, ["allocated", "issued"])
        await ledger.post(db, ledger.Posting("packet.issue", "987654321", campaign_id=campaign, legs=(
            ledger.Leg(ledger.account_name(campaign, "issued"), 500),
            ledger.Leg(ledger.account_name(campaign, "allocated"), -500))))
    broken = _audit(stack, campaign)
    assert broken.returncode == 1
    assert "BREAK packet_history_matches_postings: postings name packet 987654321" in broken.stdout
    assert "BREAK no_negative_balance: campaign audit-break-1: allocated is -500 fen" in broken.stdout
