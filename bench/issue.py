"""`make bench-issue`: 300,000 red packets issued end to end, against the bank alone.

Stack: embedded PostgreSQL and Redis in a temporary directory, the sandbox bank as its own
process serving ICBC, CCB and BOC with 20 ms median latency, 1 % transient errors and 0.5 %
commit-then-timeout, the issuance dispatcher and worker processes exactly as `stimulus up`
starts them (`stimulus worker issuance-dispatcher|issuance`).

Set-up (not timed, documented shortcut): the campaign is created with `campaigns.create` (its
funding posting) and its 300,000 winners' packets are allocated with `packets.allocate` (the
draw's own hand-over code: rows and budget -> allocated postings) with the wallets given at
registration spread over the three banks; the campaign is moved to `drawn` by its own state
transition. Drawing 300,000 winners through the HTTP API would only time the registration path,
which `make bench` measures.

Timed: the bulk issuance, as an operator runs it: a maker requests `issue.start`, a checker
approves (binding 300,000 wallets and writing 300,000 outbox rows in one transaction), then the
dispatcher publishes, the workers credit in batches and commit outcomes, until no packet is
pending. Baseline, in the same run: the same bank driven directly by a bare client (raw
keep-alive HTTP/1.1, no signature checks, no database) sending the same batches at the same
concurrency (`--bank-concurrency` calls in flight per bank; the workers hold `--slots` batches
per bank, 4 as `stimulus up` runs them), crediting as many packets for another campaign.
Afterwards: the banks' books against our ledger (double credits, lost packets) and
`stimulus audit ledger` for the campaign.

Targets: 300,000 issued in <= 120 s, ratio to the baseline >= 0.7, zero double credits, zero lost
packets, ledger audit clean. Figures move +-15 % between runs on the 2-core machine; `--runs 3`
prints the median.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
import psutil

from kernel.db import create_pool
from kernel.embedded import free_port
from kernel.servers import RunningStack, migrate_sync, start_stack
from kernel.settings import Settings, load_settings
from sandbox.bank import SANDBOX_API_KEY
from stimulus.stack import wait_http_ok
from wallet_adapter.bank_protocol import (
    BatchCreditRequest,
    CreditRequest,
    idempotency_key_for,
)

BANKS = ("ICBC", "CCB", "BOC")
TARGET_SECONDS = 120.0
TARGET_RATIO = 0.7
BATCH = 500
KNOBS = ["--latency-ms", "20", "--error-rate", "0.01", "--commit-timeout-rate", "0.005",
         "--duplicate-rate", "0", "--rate-limit", "0", "--hang-ms", "30000"]


class CpuMeter:
    """CPU seconds used by each part of the stack while a phase runs (2 cores: 2 s per second)."""

    def __init__(self, parts: dict[str, list[int]]) -> None:
        self.parts = parts
        self.before = self._sample()

    def _sample(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for name, pids in self.parts.items():
            total = 0.0
            for pid in pids:
                try:
                    process = psutil.Process(pid)
                    for p in [process, *process.children(recursive=True)]:
                        times = p.cpu_times()
                        total += times.user + times.system
                except psutil.NoSuchProcess:
                    continue
            used[name] = total
        return used

    def shares(self, seconds: float) -> str:
        after = self._sample()
        return "  ".join(f"{name} {(after[name] - self.before[name]) / seconds:.2f}" for name in self.parts)


@dataclass
class Run:
    seconds: float
    packets: int
    baseline_seconds: float
    baseline_packets: int
    double_credits: int
    lost: int
    audit_breaks: list[str]
    books_match: bool

    @property
    def rate(self) -> float:
        return self.packets / self.seconds

    @property
    def baseline_rate(self) -> float:
        return self.baseline_packets / self.baseline_seconds

    @property
    def ratio(self) -> float:
        return self.rate / self.baseline_rate


# -- the bank --------------------------------------------------------------------------------


def start_bank(state: Path, seed: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(state / "bank.log", "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.bank", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(state / "bank"), "--banks", ",".join(BANKS), "--seed", str(seed), *KNOBS],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(url + "/health", process=process)
    return process, url


async def books(url: str, campaign_id: str) -> list[dict[str, int]]:
    from wallet_adapter.provider import BankClient, fetch_sandbox_public_key

    key = await fetch_sandbox_public_key(url)
    out = []
    for code in BANKS:
        async with BankClient(url, code, SANDBOX_API_KEY, key) as client:
            out.append(msgspec.to_builtins(await client.books(campaign_id)))
    return out


# -- the baseline: the bank alone ------------------------------------------------------------


async def _bare_loop(port: int, bank: str, batches: asyncio.Queue[list[CreditRequest]], timeout_s: float) -> None:
    """Send batches over one keep-alive connection; a 503 is sent again, a hang is abandoned."""
    head = (f"POST /banks/{bank}/v1/credits:batch HTTP/1.1\r\nHost: bank\r\n"
            f"Authorization: Bearer {SANDBOX_API_KEY}\r\nContent-Type: application/json\r\n").encode()
    reader = writer = None
    while not batches.empty():
        items = batches.get_nowait()
        body = msgspec.json.encode(BatchCreditRequest(items=items))
        while True:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            try:
                status, length = await asyncio.wait_for(_read_head(reader), timeout_s)
                await reader.readexactly(length)
            except TimeoutError:
                writer.close()
                reader = writer = None
                break  # committed, answered late: what a bare client cannot tell; move on
            if status != 503:
                break
    if writer is not None:
        writer.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return int(head[9:12]), length


async def baseline(url: str, packets: int, concurrency: int, timeout_s: float) -> tuple[float, int]:
    campaign_id = f"baseline-{os.getpid()}-{int(time.time())}"
    expires = datetime.now(UTC) + timedelta(days=10)
    port = int(url.rsplit(":", 1)[1])
    queues: dict[str, asyncio.Queue[list[CreditRequest]]] = {code: asyncio.Queue() for code in BANKS}
    for start in range(0, packets, BATCH):
        bank = BANKS[(start // BATCH) % len(BANKS)]
        queues[bank].put_nowait([CreditRequest(
            idempotency_key=idempotency_key_for(campaign_id, str(n)), wallet_id=f"W-{n}", amount_fen=20_000,
            expires_at=expires, campaign_id=campaign_id, packet_id=str(n))
            for n in range(start, min(start + BATCH, packets))])
    started = time.monotonic()
    await asyncio.gather(*(_bare_loop(port, code, queues[code], timeout_s)
                           for code in BANKS for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    credited = sum(b["credits"] for b in await books(url, campaign_id))
    return elapsed, credited


# -- the pipeline ----------------------------------------------------------------------------


async def set_up(pool: asyncpg.Pool, campaign_id: str, packets: int) -> None:
    from kernel.sample import sample_campaign
    from lottery import campaigns
    from wallet_adapter.packets import NewPacket, allocate

    spec = sample_campaign(campaign_id, packets, opens_at=datetime.now(UTC) - timedelta(hours=1),
                           registration_s=1800)
    async with pool.acquire() as conn:
        await campaigns.create(conn, msgspec.convert(spec, campaigns.CampaignSpec), "bench:setup")
        tiers = [(t["tier"], t["amount_fen"]) for t in spec["tiers"] for _ in range(t["count"])]
        async with conn.transaction():
            await allocate(conn, campaign_id, [
                NewPacket(ticket=n + 1, tier=tier, amount_fen=amount, registered_bank=BANKS[n % len(BANKS)],
                          registered_wallet=f"W-{n + 1}") for n, (tier, amount) in enumerate(tiers)])
            await campaigns.transition(conn, campaign_id, "drawn", "bench:setup", {"shortcut": "bench set-up"})


async def issue_in_bulk(pool: asyncpg.Pool, settings: Settings, campaign_id: str) -> dict[str, object]:
    from kernel import approvals
    from stimulus import actions, jobs_worker
    from wallet_adapter import issuance

    actions.install()

    async with pool.acquire() as conn:
        request = await approvals.request(conn, issuance.BULK_START, campaign_id, {}, "operator:maker")
        await approvals.approve(conn, request.id, "operator:checker")
    await jobs_worker.runner(settings, pool, lease_s=60).run_until_idle()
    done = await approvals.fetch(pool, request.id)
    return done.result or {}


async def wait_issued(pool: asyncpg.Pool, campaign_id: str, packets: int, timeout_s: float) -> int:
    """Wait until no work item of the campaign is open, then count the packets issued.

    Each poll costs PostgreSQL tens of milliseconds while many rows are open, so it polls once a
    second then, and more often as the end nears: the finishing time is exact to about 50 ms.
    """
    started = deadline = time.monotonic()
    deadline += timeout_s
    last = started
    while True:
        open_rows = int(await pool.fetchval(
            """SELECT count(*) FROM issuance_outbox
               WHERE done_at IS NULL AND dead_at IS NULL AND campaign_id = $1""", campaign_id))
        now = time.monotonic()
        if not open_rows or now > deadline:
            return int(await pool.fetchval(
                "SELECT count(*) FROM packets WHERE campaign_id = $1 AND state = 'issued'", campaign_id))
        if now - last >= 10:
            print(f"  ... {packets - open_rows:,} settled", flush=True)
            last = now
        rate = (packets - open_rows) / max(now - started, 1e-3)
        await asyncio.sleep(min(1.0, max(0.05, open_rows / rate / 3)) if rate > 0 else 0.5)


def spawn_workers(settings: Settings, bank_url: str, state: Path, workers: int, slots: int,
                  bank_concurrency: int, timeout_s: float) -> list[subprocess.Popen[bytes]]:
    assert settings.database_url and settings.redis_url
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "STIMULUS_STATE_DIR": str(state), "STIMULUS_ENV": "development", "STIMULUS_BANK_URL": bank_url,
           "STIMULUS_BANKS": ",".join(BANKS), "STIMULUS_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING")}
    base = [sys.executable, "-m", "stimulus.cli", "worker"]
    commands = [[*base, "issuance-dispatcher"]] + [
        [*base, "issuance", "--slots", str(slots), "--bank-timeout-s", str(timeout_s),
         "--bank-concurrency", str(bank_concurrency)] for _ in range(workers)]
    processes = []
    for n, command in enumerate(commands):
        log = open(state / f"worker-{n}.log", "ab")  # noqa: SIM115 - the child owns it
        processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    return processes


async def one_run(settings: Settings, state: Path, bank_url: str, n: int, args: argparse.Namespace,
                  servers: dict[str, list[int]]) -> Run:
    from stimulus.ledger_audit import audit

    assert settings.database_url
    concurrency = args.bank_concurrency * args.workers
    print(f"run {n}: baseline: {args.packets:,} packets, {concurrency} batches of {BATCH} in flight per bank",
          flush=True)
    meter = CpuMeter({**servers, "client": [os.getpid()]})
    baseline_s, baseline_packets = await baseline(bank_url, args.packets, concurrency, args.timeout_s)
    print(f"  baseline {baseline_packets / baseline_s:,.0f} packets/s ({baseline_s:.1f} s); "
          f"CPU cores used: {meter.shares(baseline_s)}", flush=True)
    pool = await create_pool(settings.database_url, 1, 4)
    campaign_id = f"bench-issue-{n}-{int(time.time())}"
    try:
        print(f"  set-up: campaign {campaign_id}, {args.packets:,} packets allocated (not timed)", flush=True)
        await set_up(pool, campaign_id, args.packets)
        await pool.execute("VACUUM ANALYZE packets")
        workers = spawn_workers(settings, bank_url, state, args.workers, args.slots,
                                args.bank_concurrency, args.timeout_s)
        try:
            await asyncio.sleep(2)  # the processes import and connect before the clock starts
            meter = CpuMeter({**servers, "dispatcher": [workers[0].pid],
                              "workers": [w.pid for w in workers[1:]]})
            started = time.monotonic()
            result = await issue_in_bulk(pool, settings, campaign_id)
            print(f"  bulk start approved: {result.get('queued')} queued in {time.monotonic() - started:.1f} s",
                  flush=True)
            issued = await wait_issued(pool, campaign_id, args.packets, args.max_seconds)
            seconds = time.monotonic() - started
            print(f"  CPU cores used: {meter.shares(seconds)}", flush=True)
        finally:
            for process in workers:
                process.terminate()
            for process in workers:
                process.wait(30)
        print(f"  pipeline {issued / seconds:,.0f} packets/s ({seconds:.1f} s); checking books and ledger",
              flush=True)
        bank_books = await books(bank_url, campaign_id)
        ledger_fen = await pool.fetchval(
            """SELECT COALESCE(sum(e.amount_fen), 0) FROM ledger_transactions t JOIN ledger_entries e ON e.txn_id = t.id
               WHERE t.kind = 'packet.issue' AND t.campaign_id = $1 AND e.amount_fen > 0""", campaign_id)
        async with pool.acquire() as conn:
            breaks = [f"{b.check}: {b.detail}" for b in await audit(conn, campaign_id)]
    finally:
        await pool.close()
    return Run(seconds, issued, baseline_s, baseline_packets, sum(b["double_credits"] for b in bank_books),
               args.packets - issued, breaks,
               sum(b["credited_fen"] for b in bank_books) == ledger_fen
               and sum(b["credits"] for b in bank_books) == issued)


def report(runs: list[Run], packets: int) -> int:
    pick = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    ratio = statistics.median(r.ratio for r in runs)
    ok = (pick.seconds <= TARGET_SECONDS and ratio >= TARGET_RATIO and all(
        r.double_credits == 0 and r.lost == 0 and not r.audit_breaks and r.books_match for r in runs))
    print()
    print(f"issuance of {packets:,} packets, {len(runs)} run(s); median shown")
    print(f"  pipeline      {pick.rate:>9,.0f} packets/s   total {pick.seconds:6.1f} s   (target <= {TARGET_SECONDS:.0f} s)")
    print(f"  baseline      {pick.baseline_rate:>9,.0f} packets/s   total {pick.baseline_seconds:6.1f} s   "
          "(bare client, same batches and concurrency)")
    print(f"  ratio         {ratio:>9.2f}                              (target >= {TARGET_RATIO})")
    print(f"  all runs      {', '.join(f'{r.rate:,.0f}/s ({r.ratio:.2f})' for r in runs)}")
    print(f"  double credits {sum(r.double_credits for r in runs)}   lost packets {sum(r.lost for r in runs)}   "
          f"books = ledger {'yes' if all(r.books_match for r in runs) else 'NO'}")
    breaks = [b for r in runs for b in r.audit_breaks]
    print(f"  ledger audit  {'clean' if not breaks else 'BREAKS: ' + '; '.join(breaks[:5])}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def _postmaster(state: Path) -> list[int]:
    return [int((state / "postgres" / "postmaster.pid").read_text().splitlines()[0])]


def _redis_pids(stack: RunningStack) -> list[int]:
    from kernel.embedded import EmbeddedRedis

    return [s.process.pid for s in stack.owned if isinstance(s, EmbeddedRedis) and s.process is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--packets", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="issuance worker processes")
    parser.add_argument("--slots", type=int, default=4, help="batches in hand per bank per worker")
    parser.add_argument("--bank-concurrency", type=int, default=4,
                        help="calls in flight per bank per worker, and the baseline's per bank")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="bank call timeout (both clients)")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", type=Path, help="keep the servers' data and logs in this (new) directory")
    args = parser.parse_args(argv)
    import uvloop

    runs = []
    for n in range(1, args.runs + 1):
        # Each run gets its own servers: a second run in the same ones would start with the
        # first run's 600,000 credits in the bank's books and its dead rows in PostgreSQL.
        with tempfile.TemporaryDirectory(prefix="bench-issue-") as tmp:
            state = Path(tmp) if args.keep is None else args.keep.resolve() / f"run-{n}"
            state.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "STIMULUS_STATE_DIR": str(state), "STIMULUS_ENV": "development",
                   "STIMULUS_LOG_LEVEL": "WARNING"}
            for name in ("DATABASE_URL", "REDIS_URL"):
                env.pop(name, None)
            stack = start_stack(load_settings(env), need_redis=True)
            bank = None
            try:
                migrate_sync(stack.settings)
                bank, bank_url = start_bank(state, args.seed + n - 1)
                servers = {"bank": [bank.pid], "postgres": _postmaster(state), "redis": _redis_pids(stack)}
                runs.append(uvloop.run(one_run(stack.settings, state, bank_url, n, args, servers)))
            finally:
                if bank is not None:
                    bank.terminate()
                    bank.wait(30)
                stack.stop()
    return report(runs, args.packets)


if __name__ == "__main__":
    sys.exit(main())
