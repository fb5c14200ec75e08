"""A whole campaign through the cluster, under faults: what `python -m tests.cluster` and the
smaller run in `make test` (test_cluster_small.py) both do.

Registrations go through haproxy while an API node and the Redis primary are SIGKILLed and
PgBouncer restarted; some citizens try both nodes at once; the commitment and the draw are
approved through the API and run as jobs, and the jobs worker running the draw is SIGKILLed; the
winners (as many as the registrants, so N registrants make N packets) claim, and the issuance
workers credit the banks while the dispatcher leader and an issuance worker holding batches are
SIGKILLed. The end is judged by the project's own checks: loadtests/truth.py
(acknowledged == stored, issued == credited, no double credit, the ledger audit, the audit log's
chain), `stimulus audit log`, and `stimulus-verify` on the published bundle and registrant list.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from kernel import auth
from kernel.db import _init_connection
from kernel.signing import SigningKey
from loadtests import truth
from loadtests.prepare import CITIZEN_BASE, Preparer
from lottery import beacon
from tests.cluster import faults
from tests.cluster.faults import Fault, Traffic
from tests.cluster.nodes import Cluster

CONCURRENCY = 32
ATTEMPTS = 30
BOTH_NODES_CITIZENS = 50
ISSUANCE_WAIT_MIN_S = 180.0
FAULTS = 6


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


async def _post(client: httpx.AsyncClient, url: str, token: str, body: dict[str, Any],
                traffic: Traffic) -> httpx.Response | None:
    try:
        response = await client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        traffic.note(False)
        return None
    traffic.note(response.status_code < 500)
    return response


async def acknowledged_all(base: str, path: str, tokens: list[str], bodies: list[dict[str, Any]],
                           accepted: tuple[int, ...], traffic: Traffic, progress: list[int]) -> list[httpx.Response]:
    """Each citizen's request, retried as an app would until acknowledged; the acknowledgements."""
    answers: list[httpx.Response | None] = [None] * len(tokens)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(tokens)):
        queue.put_nowait(index)

    async def one(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            for attempt in range(ATTEMPTS):
                response = await _post(client, base + path, tokens[index], bodies[index], traffic)
                if response is not None and response.status_code in accepted:
                    answers[index] = response
                    break
                if response is not None and response.status_code < 500 and response.status_code != 429:
                    raise RuntimeError(f"{path}: HTTP {response.status_code} {response.text[:300]}")
                await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
            else:
                raise RuntimeError(f"{path}: citizen {index} not acknowledged after {ATTEMPTS} attempts")
            progress[0] += 1

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(one(client) for _ in range(CONCURRENCY)))
    return [a for a in answers if a is not None]


async def at(progress: list[int], count: int) -> None:
    # A counter many tasks bump: polling it is simpler than an event per threshold.
    while progress[0] < count:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def register(cluster: Cluster, cid: str, tokens: list[str], traffic: Traffic) -> tuple[list[Fault], list[int]]:
    """Registrations through haproxy: an API node killed at a third, the Redis primary at a half,
    PgBouncer at two thirds."""
    progress = [0]
    n = len(tokens)

    async def kill_node() -> Fault:
        await at(progress, n // 3)
        return await faults.kill_api_node(cluster, traffic)

    async def redis_primary() -> Fault:
        await at(progress, n // 2)
        return await faults.kill_redis_primary(cluster, traffic)

    async def bounce() -> Fault:
        await at(progress, 2 * n // 3)
        return await faults.restart_pgbouncer(cluster, traffic)

    path = f"/v1/campaigns/{cid}/registrations"
    answers, *found = await asyncio.gather(
        acknowledged_all(cluster.base_url, path, tokens, [{}] * n, (200, 201), traffic, progress),
        kill_node(), redis_primary(), bounce())
    return found, [int(a.json()["ticket"]) for a in answers]


async def both_nodes_at_once(cluster: Cluster, cid: str, tokens: list[str]) -> tuple[list[str], list[int]]:
    """The same citizen at both API nodes at the same moment: one registration, one ticket.
    Returns what went wrong and the tickets the citizens were given."""
    wrong: list[str] = []
    tickets: list[int] = []
    path = f"/v1/campaigns/{cid}/registrations"
    async with httpx.AsyncClient(timeout=30) as client:
        for index, token in enumerate(tokens):
            headers = {"Authorization": f"Bearer {token}"}
            first, second = await asyncio.gather(*(client.post(n.url + path, json={}, headers=headers)
                                                   for n in cluster.apis if n.url))
            codes = sorted((first.status_code, second.status_code))
            if codes != [200, 201] or first.json()["ticket"] != second.json()["ticket"]:
                wrong.append(f"citizen {index}: {codes} {first.text[:80]} {second.text[:80]}")
            else:
                tickets.append(int(first.json()["ticket"]))
    return wrong, tickets


def record_beacon(cluster: Cluster, preparer: Preparer, campaign_id: str, found: list[truth.Truth]) -> None:
    """The one step of the campaign no production node can take on this machine: recording the
    draw's beacon. Production trusts drand quicknet alone, and a quicknet round published after
    the commitment comes only from the League of Entropy's relays, which a machine without the
    internet cannot reach (the sandbox relay holds a few recorded past rounds, and nobody else can
    sign a future one). So the campaign declares the sandbox chain, which the production API
    refuses to fetch (checked here), and an operator's console in development mode fetches the
    round from the sandbox relay and records it, as `stimulus beacon fetch` would. The draw, which
    reads the recorded round, is a job on the production jobs workers, and the bundle says it drew
    on the sandbox chain."""
    assert cluster.settings is not None
    refused = preparer.call("POST", f"/v1/admin/campaigns/{campaign_id}/beacon/fetch", preparer.maker,
                            expect=(200, 400, 422))
    found.append(truth.Truth("production API nodes refuse the sandbox beacon", "sandbox_beacon_refused",
                             str(refused.get("code")), refused.get("code") == "sandbox_beacon_refused"))
    console = replace(cluster.settings, environment="development", drand_relays=(cluster.relay_url,))

    async def go() -> None:
        conn = await asyncpg.connect(cluster.direct_url)
        await _init_connection(conn)
        try:
            await beacon.fetch_and_record(conn, console, campaign_id, "operator:cluster-maker")
        finally:
            await conn.close()

    asyncio.run(go())


def one_service_key(cluster: Cluster) -> truth.Truth:
    """Every API node signs with the key in the shared secret file (and so do the workers' bundles,
    which stimulus-verify checks against the bundle's key)."""
    assert cluster.settings is not None
    key = cluster.settings.service_key
    served = [httpx.get(f"{n.url}/v1/keys", timeout=10).json() for n in cluster.apis if n.url]
    return truth.Truth("API nodes serve the service key from the shared secret file", f"{len(served)} x {key.key_id}",
                       ", ".join(",".join(k) for k in served),
                       all(k == {key.key_id: key.public_bytes.hex()} for k in served))


async def draw(cluster: Cluster, preparer: Preparer, cid: str, key: SigningKey, secret: bytes,
               traffic: Traffic, found: list[truth.Truth]) -> tuple[dict[str, Any], set[int], Fault]:
    """The commitment and the draw, approved through the API; the jobs worker running the draw is killed."""
    (committed, winners), fault = await asyncio.gather(
        asyncio.to_thread(preparer.draw, cid, key, secret, lambda c: record_beacon(cluster, preparer, c, found)),
        faults.kill_jobs_worker_mid_draw(cluster, traffic))
    return committed, winners, fault


async def claim(cluster: Cluster, cid: str, tokens: list[str], numbers: list[int], banks: tuple[str, ...],
                traffic: Traffic) -> tuple[list[Fault], int]:
    """Every winner claims through haproxy; the dispatcher leader and an issuance worker are killed
    while the packets are being issued."""
    progress = [0]
    bodies = [{"wallet": {"bank_code": banks[n % len(banks)], "wallet_id": f"w-{n}"}} for n in numbers]

    async def leader() -> Fault:
        await at(progress, len(tokens) // 4)
        return await faults.kill_dispatcher_leader(cluster, traffic)

    async def issuer() -> Fault:
        # From the first claim on: in a small run every packet may be issued before half have claimed.
        await at(progress, 1)
        return await faults.kill_issuance_worker_mid_batch(cluster, traffic)

    answers, *found = await asyncio.gather(
        acknowledged_all(cluster.base_url, f"/v1/campaigns/{cid}/claim", tokens, bodies, (202,), traffic, progress),
        leader(), issuer())
    return found, len(answers)


def verify_draw(cluster: Cluster, cid: str, directory: Path) -> truth.Truth:
    bundle = httpx.get(f"{cluster.base_url}/v1/campaigns/{cid}/bundle", timeout=60)
    bundle.raise_for_status()
    (directory / "bundle.json").write_bytes(bundle.content)
    listing = httpx.get(f"{cluster.base_url}/v1/campaigns/{cid}/registrants", params={"format": "ndjson"},
                        timeout=300)
    listing.raise_for_status()
    (directory / "registrants.ndjson").write_bytes(listing.content)
    done = subprocess.run([sys.executable, "-m", "lottery.verify", str(directory / "bundle.json"),
                           "--registrants", str(directory / "registrants.ndjson")],
                          capture_output=True, text=True, timeout=900)
    last = (done.stdout.strip().splitlines() or [done.stderr.strip()[-200:]])[-1]
    return truth.Truth("stimulus-verify on the bundle and the registrant list", "PASS", last,
                       done.returncode == 0 and "PASS" in done.stdout)


def audit_log_cli(cluster: Cluster) -> truth.Truth:
    env = {**cluster.env, "DATABASE_URL": cluster.direct_url, "STIMULUS_DB_POOLER": "none"}
    env.pop("DATABASE_DIRECT_URL", None)
    done = subprocess.run([sys.executable, "-m", "stimulus.cli", "audit", "log"], env=env,
                          capture_output=True, text=True, timeout=300)
    return truth.Truth("stimulus audit log", "exit 0", f"exit {done.returncode}: "
                       + (done.stdout.strip() or done.stderr.strip())[-120:], done.returncode == 0)


async def once_per_citizen(url: str, cid: str) -> list[truth.Truth]:
    conn = await asyncpg.connect(url)
    try:
        doubled = await conn.fetchval(
            """SELECT count(*) FROM (SELECT id_hmac FROM registrations WHERE campaign_id = $1
               GROUP BY id_hmac HAVING count(*) > 1) d""", cid)
        draws = await conn.fetchval("SELECT count(*) FROM draws WHERE campaign_id = $1", cid)
    finally:
        await conn.close()
    return [truth.Truth("citizens registered more than once", "0", str(doubled), doubled == 0),
            truth.Truth("draws of the campaign", "1", str(draws), draws == 1)]


async def operator_tokens(url: str) -> tuple[str, str]:
    conn = await asyncpg.connect(url)
    try:
        return (await auth.create_token(conn, "cluster-maker", "operator"),
                await auth.create_token(conn, "cluster-checker", "operator"))
    finally:
        await conn.close()


def fault_rows(faults_seen: list[Fault], traffic: Traffic) -> list[str]:
    lines = [f"{'fault':<72} {'failed requests':>15} {'recovered in':>12}"]
    for fault in faults_seen:
        failed = traffic.failed_between(fault.started, fault.started + fault.recovered_s + 1.0)
        lines.append(f"{fault.name:<72} {failed:>15,} {fault.recovered_s:>10.1f} s"
                     + (f"  ({fault.note})" if fault.note else ""))
    return lines


@dataclass
class Outcome:
    """What a run found: the faults it caused, the table of them, and the truth checks."""

    faults: list[Fault]
    table: list[str]
    checks: list[truth.Truth]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def lines(self) -> list[str]:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        return [*self.table, "", *(f"{'ok ' if c.ok else 'BAD'} {c.name}: expected {c.expected}, got {c.actual}"
                                   for c in self.checks), "", f"{self.seconds:.0f} s; load average {load}"]


def run(registrants: int, root: Path, say: Callable[[str], None] = say) -> Outcome:
    """Start the cluster in `root`, take a campaign of `registrants` through it under the six
    faults, judge the end, and stop everything."""
    began = time.monotonic()
    cluster = Cluster(root)
    try:
        cluster.start(say)
        assert cluster.settings is not None
        maker, checker = asyncio.run(operator_tokens(cluster.direct_url))
        preparer = Preparer(cluster.base_url, cluster.settings, maker, checker, root, say)
        cid = preparer.campaign_id("registration")
        base = CITIZEN_BASE["registration"]
        numbers = list(range(base, base + registrants))
        tokens = preparer.tokens(numbers)
        doubled = list(range(base + registrants, base + registrants + BOTH_NODES_CITIZENS))
        doubled_tokens = preparer.tokens(doubled)
        # As many winners as registrants, so as many packets issued: of the registrants and the 50
        # at both nodes, all but 50 win.
        key, secret = preparer.open_campaign(cid, max(6, registrants))
        traffic = Traffic()
        started = time.monotonic()
        found, tickets = asyncio.run(register(cluster, cid, tokens, traffic))
        elapsed = time.monotonic() - started
        say(f"{registrants:,} registrations acknowledged through haproxy in {elapsed:.0f} s "
            f"({registrants / elapsed:,.0f}/s), {sum(1 for _, ok in traffic.events if not ok):,} requests failed")
        wrong, doubled_tickets = asyncio.run(both_nodes_at_once(cluster, cid, doubled_tokens))
        started = time.monotonic()
        production = [one_service_key(cluster)]
        committed, winners, fault = asyncio.run(draw(cluster, preparer, cid, key, secret, traffic, production))
        found.append(fault)
        say(f"commitment of {committed['tree_size']:,} leaves and the draw of {len(winners):,} winners "
            f"(approved through the API, run as jobs) in {time.monotonic() - started:.0f} s")
        ticket_of = dict(zip(numbers + doubled, tickets + doubled_tickets, strict=True))
        token_of = dict(zip(numbers + doubled, tokens + doubled_tokens, strict=True))
        winning = [n for n in numbers + doubled if ticket_of[n] in winners]
        banks = cluster.settings.bank_codes
        started = time.monotonic()
        claim_faults, accepted = asyncio.run(claim(cluster, cid, [token_of[n] for n in winning], winning, banks,
                                                   traffic))
        found += claim_faults
        acks = {"registrations_created": len(tickets) + len(doubled_tickets), "claims_accepted": accepted,
                "registrations_created_ticket_sum": sum(tickets) + sum(doubled_tickets)}
        caught = [f.name for f in found if f.caught]
        checks = [truth.Truth("faults caused while their target was at work", f"{FAULTS} of {FAULTS}",
                              f"{len(caught)} of {len(found)}", len(caught) == len(found) == FAULTS),
                  *production,
                  truth.Truth("citizens at both nodes at once: one 201, one 200, one ticket", "0 wrong",
                              f"{len(wrong)} wrong" + (f": {wrong[0]}" if wrong else ""), not wrong)]
        checks += truth.run_db(cluster.direct_url, lambda c: truth.registrations(c, cid, acks))
        checks += asyncio.run(once_per_citizen(cluster.direct_url, cid))
        checks += truth.claims(cluster.direct_url, cluster.bank_url, list(banks), cid, acks,
                               max(ISSUANCE_WAIT_MIN_S, accepted / 20), every_winner=len(winners),
                               bank_api_key=cluster.bank_api_key)
        checks.append(truth.Truth("winners drawn, so packets to issue: one per registrant", f"{registrants:,}",
                                  f"{len(winners):,}", len(winners) == registrants))
        say(f"{accepted:,} packets claimed and issued in {time.monotonic() - started:.0f} s")
        checks.append(verify_draw(cluster, cid, root))
        checks += truth.run_db(cluster.direct_url, lambda c: truth.ledger_and_log(c, [cid]))
        checks.append(audit_log_cli(cluster))
        outcome = Outcome(found, fault_rows(found, traffic), checks, time.monotonic() - began)
        (root / "summary.json").write_text(json.dumps(
            {"registrants": registrants, "faults": outcome.table, "checks": [c.__dict__ for c in checks]}, indent=2))
        return outcome
    finally:
        cluster.stop()
