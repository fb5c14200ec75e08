"""What `make bench` sets up before it measures: the load generator, the servers' processes,
operator tokens, and the merchant notices' campaign, packets, merchants and signed requests.

Nothing here is timed. The notices' campaign (`make bench`'s, and `make bench-reconcile`'s) is written straight to the database through the
domain's own functions (a documented shortcut, the draw and the banks being beside the point of
a notice): `campaigns.create` and its `issuing` transition, `packets.allocate` (the draw's
hand-over) and `packets.apply_issued` (the issuance workers' commit, with its ledger postings)
as if each bank had credited its packets, and merchants registered by the CSV import. Each
notice redeems part of a packet of its own at one of the merchants, signed ahead of time with
`MerchantClient` so the measured loop signs nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import psutil

from kernel import auth, db
from kernel.sample import sample_campaign
from kernel.settings import Settings
from loadtests.prepare import BANKS
from lottery import campaigns
from merchants import csv_import
from merchants.client import MerchantClient, Prepared
from wallet_adapter import packets
from wallet_adapter.bank_protocol import idempotency_key_for

INSTALL_TIMEOUT_S = 300.0
DISTRICTS = ("430102", "430103", "430104", "430105", "430111", "430112")


def ensure_wrk() -> str:
    """wrk, installed from Debian when missing and we are root (apt-get, with a time limit)."""
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for args in (["update", "-qq"], ["install", "-y", "-qq", "wrk"]):
            subprocess.run(["apt-get", *args], env=env, capture_output=True, timeout=INSTALL_TIMEOUT_S,
                           check=False)
        found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is needed as the low-cost load generator: apt-get install wrk")
    return found


def api_pid(base: str) -> int:
    """The granian supervisor serving `base`: the process whose tree holds the API's workers."""
    port = int(base.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            proc = psutil.Process(conn.pid)
            while (parent := proc.parent()) is not None and "granian" in " ".join(parent.cmdline()):
                proc = parent
            return int(proc.pid)
    raise SystemExit(f"nothing listens at {base}")


async def operator_tokens(database_url: str) -> tuple[str, str]:
    """Two operators: the draw's maker-checker rule refuses one approving its own request."""
    conn = await asyncpg.connect(database_url)
    try:
        return (await auth.create_token(conn, "bench-maker", "operator"),
                await auth.create_token(conn, "bench-checker", "operator"))
    finally:
        await conn.close()


async def _connect(settings: Settings) -> asyncpg.Connection:
    assert settings.database_url
    return await db.connect(settings.database_url, pooler=settings.db_pooler)


@dataclass(frozen=True)
class IssuedCampaign:
    packets: list[tuple[int, str, str]]  # (packet id, bank, payment reference), by packet id
    merchants: list[tuple[str, str]]     # (merchant id, private key seed hex)


async def issue_campaign(conn: asyncpg.Connection, campaign_id: str, packet_count: int,
                         merchants: int) -> IssuedCampaign:
    """A campaign with at least `packet_count` issued packets and `merchants` merchants (of the
    sample campaign's accepted categories and districts)."""
    winners = packet_count - packet_count % 6 + 6  # the sample campaign's tiers come in sixes
    spec = msgspec.convert(sample_campaign(campaign_id, winners=winners), campaigns.CampaignSpec)
    created = await campaigns.create(conn, spec, "bench:operator")
    tiers = [(t.tier, t.amount_fen) for t in spec.tiers for _ in range(t.count)]
    async with conn.transaction():
        await campaigns.transition(conn, created.id, "issuing", "bench:operator", {"by": "bench"})
        await packets.allocate(conn, created.id, [
            packets.NewPacket(n + 1, tier, amount_fen, BANKS[n % 3], f"W-{n}")
            for n, (tier, amount_fen) in enumerate(tiers)])
        rows = await conn.fetch(
            """UPDATE packets SET state = 'issuing', wallet_bank = registered_bank, wallet_id = registered_wallet,
                      claimed_at = now() WHERE campaign_id = $1 RETURNING id, wallet_bank, wallet_id""", created.id)
        now = datetime.now(UTC)
        await packets.apply_issued(conn, [packets.Credited(r["id"], r["wallet_bank"], r["wallet_id"],
                                                           f"CR-{r['id']}", now) for r in rows])
    lines = ["id,name,category,district,settlement_account"]
    lines += [f"{campaign_id}-m{n},Bench shop {n},{5411 + n % 4},{DISTRICTS[n % 6]},ACCT-{n}"
              for n in range(merchants)]
    imported = await csv_import.import_merchants(conn, ("\n".join(lines) + "\n").encode(), "bench:operator")
    # Not the (still empty) notices table: statistics saying "empty" would plan its lookups as scans.
    await conn.execute("ANALYZE packets; ANALYZE merchants")
    found = sorted((r["id"], r["wallet_bank"]) for r in rows)
    return IssuedCampaign([(pid, bank, idempotency_key_for(campaign_id, str(pid))) for pid, bank in found],
                          [(k.merchant_id, k.private_key_seed_hex) for k in imported.keys])


async def issued_campaign(settings: Settings, campaign_id: str, packet_count: int, merchants: int) -> IssuedCampaign:
    """`issue_campaign` on a connection of its own."""
    conn = await _connect(settings)
    try:
        return await issue_campaign(conn, campaign_id, packet_count, merchants)
    finally:
        await conn.close()


def signed_notices(base_url: str, keys: list[tuple[str, str]], references: list[str], run: str) -> list[Prepared]:
    """One payment notice per reference, dealt round-robin to the merchants, each signed with a
    fresh nonce and a timestamp a minute old (good for the 300 s window's remaining four)."""
    clients = [MerchantClient(base_url, merchant_id, seed) for merchant_id, seed in keys]
    at = datetime.now(UTC) - timedelta(minutes=1)
    prepared = [clients[n % len(clients)].redemption(f"{run}-{n}", ref, 1_000 + n % 5_000, at, basket_fen=30_000)
                for n, ref in enumerate(references)]
    for client in clients:
        asyncio.run(client.aclose())
    return prepared
