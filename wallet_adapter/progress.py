"""Issuance progress: per bank issued / failed / pending, the recent rate and an ETA, for the
operator endpoint and the CLI; and the Prometheus metrics the dispatcher and workers export.

The figures come from the packets themselves (the source of truth), so they are right after
any crash; the metrics are counters of what each process did, for dashboards and alerts.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec
from prometheus_client import Counter, Gauge, Histogram

RATE_WINDOW_S = 30

PACKETS = Counter("stimulus_issuance_packets_total", "Packets that reached an outcome at a worker",
                  ["bank", "outcome"])
BANK_CALLS = Histogram("stimulus_issuance_bank_call_seconds", "Batch credit calls, retries included",
                       ["bank"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
BATCH_ITEMS = Histogram("stimulus_issuance_batch_items", "Packets per bank batch",
                        buckets=(1, 10, 50, 100, 200, 300, 400, 500))
DEAD_LETTERS = Counter("stimulus_issuance_dead_letters_total",
                       "Work items parked for an operator (alert on any increase)", ["bank", "reason"])
REDELIVERED = Counter("stimulus_issuance_redelivered_entries_total",
                      "Stream entries taken over from a dead or stuck consumer", ["bank"])
REPUBLISHED = Counter("stimulus_issuance_republished_total",
                      "Outbox rows published again because Redis lost them", ["bank"])
OUTBOX_OPEN = Gauge("stimulus_issuance_outbox_open", "Outbox rows not yet done, by publication",
                    ["bank", "stage"], multiprocess_mode="livemax")
CANCELLED = Counter("stimulus_packets_cancelled_total", "Packets cancelled after the claim deadline")


class BankProgress(msgspec.Struct, frozen=True):
    bank_code: str
    issued: int
    issued_fen: int
    pending: int
    failed: int
    dead_letters: int


class IssuanceProgress(msgspec.Struct, frozen=True):
    campaign_id: str
    at: datetime
    packets: int
    by_state: dict[str, int]
    banks: list[BankProgress]
    issued: int
    issued_fen: int
    pending: int
    failed: int
    unclaimed: int
    dead_letters: int
    rate_per_s: float  # packets issued per second over the last RATE_WINDOW_S seconds
    eta_s: float | None  # at that rate, until nothing is pending; None when nothing moves
    # Unclaimed packets bulk issuance did not send, by reason (their registration wallet broke
    # the wallet rule: `unknown_bank`, `invalid_wallet`); each winner may still claim.
    not_sent: dict[str, int] = msgspec.field(default_factory=dict)


_BY_BANK = """
SELECT COALESCE(wallet_bank, '') AS bank, state, count(*) AS n, COALESCE(sum(amount_fen), 0)::bigint AS fen,
       count(*) FILTER (WHERE issued_at >= now() - make_interval(secs => $2)) AS recent
FROM packets WHERE campaign_id = $1 GROUP BY 1, 2
"""


async def issuance_progress(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> IssuanceProgress:
    rows = await conn.fetch(_BY_BANK, campaign_id, float(RATE_WINDOW_S))
    dead_rows = await conn.fetch(
        """SELECT bank_code, count(*) AS n FROM issuance_outbox
           WHERE campaign_id = $1 AND dead_at IS NOT NULL AND done_at IS NULL GROUP BY bank_code""",
        campaign_id)
    held_rows = await conn.fetch(
        """SELECT failure_code, count(*) AS n FROM packets
           WHERE campaign_id = $1 AND state = 'allocated' AND failure_code IS NOT NULL GROUP BY 1""",
        campaign_id)
    at = await conn.fetchval("SELECT now()")
    dead = {r["bank_code"]: int(r["n"]) for r in dead_rows}
    by_state: dict[str, int] = {}
    per_bank: dict[str, dict[str, int]] = {}
    recent = 0
    for r in rows:
        by_state[r["state"]] = by_state.get(r["state"], 0) + int(r["n"])
        if not r["bank"]:
            continue
        bank = per_bank.setdefault(r["bank"], {"issued": 0, "issued_fen": 0, "pending": 0, "failed": 0})
        if r["state"] in ("issued", "reclaimed", "spent"):
            bank["issued"] += int(r["n"])
            bank["issued_fen"] += int(r["fen"])
            recent += int(r["recent"])
        elif r["state"] == "issuing":
            bank["pending"] += int(r["n"])
        elif r["state"] == "failed":
            bank["failed"] += int(r["n"])
    banks = [BankProgress(code, v["issued"], v["issued_fen"], v["pending"], v["failed"], dead.get(code, 0))
             for code, v in sorted(per_bank.items())]
    pending = sum(b.pending for b in banks)
    rate = recent / RATE_WINDOW_S
    return IssuanceProgress(
        campaign_id=campaign_id, at=at, packets=sum(by_state.values()), by_state=by_state, banks=banks,
        issued=sum(b.issued for b in banks), issued_fen=sum(b.issued_fen for b in banks), pending=pending,
        failed=sum(b.failed for b in banks), unclaimed=by_state.get("allocated", 0),
        dead_letters=sum(dead.values()), rate_per_s=round(rate, 1),
        eta_s=round(pending / rate, 1) if rate > 0 else (0.0 if pending == 0 else None),
        not_sent={r["failure_code"]: int(r["n"]) for r in held_rows})
