"""The faults of the cluster run, one small function each.

Each kills something real and waits until the cluster shows it carries on; it returns when the
fault began and how long recovery took. Which requests failed in that window is read afterwards
from the traffic log the campaign keeps (see `Traffic`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg
import httpx
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tests.cluster.nodes import Cluster, Node
from wallet_adapter import streams

RECOVERY_LIMIT_S = 120.0
POLL_S = 0.1
ISSUANCE_LIMIT_S = 600.0
KILL_ATTEMPTS = 5


@dataclass
class Traffic:
    """Every request the campaign made: (monotonic time, succeeded)."""

    events: list[tuple[float, bool]] = field(default_factory=list)

    def note(self, ok: bool) -> None:
        self.events.append((time.monotonic(), ok))

    def failed_between(self, start: float, end: float) -> int:
        return sum(1 for t, ok in self.events if start <= t <= end and not ok)

    def succeeded_after(self, start: float) -> float | None:
        return next((t for t, ok in self.events if t > start and ok), None)


@dataclass
class Fault:
    name: str
    started: float
    recovered_s: float
    note: str = ""
    caught: bool = True  # False: what it was to hit had ended before it could be hit


async def _until(predicate: object, limit_s: float = RECOVERY_LIMIT_S, poll_s: float = POLL_S) -> float:
    """Seconds until the async predicate holds (it must, within the limit)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if await predicate():  # type: ignore[operator]
            return time.monotonic() - started
        await asyncio.sleep(poll_s)
    raise RuntimeError(f"not recovered within {limit_s:.0f} s")


async def _served_after(traffic: Traffic, since: float) -> bool:
    return traffic.succeeded_after(since) is not None


async def kill_api_node(cluster: Cluster, traffic: Traffic) -> Fault:
    """SIGKILL one API node under load; haproxy's health check takes it out, then it starts again."""
    node = cluster.apis[0]
    started = time.monotonic()
    node.kill()
    recovered = await _until(lambda: _served_after(traffic, started))
    await asyncio.to_thread(node.start)
    return Fault(f"API node {node.url} SIGKILLed", started, recovered,
                 f"back in the pool after {time.monotonic() - started:.1f} s")


async def restart_pgbouncer(cluster: Cluster, traffic: Traffic) -> Fault:
    """SIGKILL PgBouncer and start it again on the same port a second later."""
    assert cluster.bouncer is not None
    started = time.monotonic()
    cluster.bouncer.kill()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(cluster.bouncer.start)
    restarted = time.monotonic()
    recovered = await _until(lambda: _served_after(traffic, restarted))
    return Fault("PgBouncer SIGKILLed, restarted after 1 s", started, restarted - started + recovered)


async def kill_redis_primary(cluster: Cluster, traffic: Traffic) -> Fault:
    """SIGKILL the Redis primary; the sentinels promote the replica and the nodes follow them."""
    assert cluster.redis is not None
    old = await asyncio.to_thread(cluster.redis.primary_port)
    started = time.monotonic()
    await asyncio.to_thread(cluster.redis.kill_primary)
    await asyncio.to_thread(cluster.redis.wait_for_new_primary, old)
    promoted = time.monotonic() - started
    recovered = await _until(lambda: _served_after(traffic, started + promoted))
    return Fault("Redis primary SIGKILLed (Sentinel fails over)", started, promoted + recovered,
                 f"replica promoted after {promoted:.1f} s")


async def _lease_holder(database_url: str, name: str) -> str | None:
    conn = await asyncpg.connect(database_url)
    try:
        holder: str | None = await conn.fetchval(
            "SELECT holder FROM leases WHERE name = $1 AND expires_at > clock_timestamp()", name)
        return holder
    finally:
        await conn.close()


async def kill_dispatcher_leader(cluster: Cluster, traffic: Traffic) -> Fault:
    """SIGKILL the dispatcher holding the lease; another takes the lease over once it expires."""
    from wallet_adapter.outbox import LEADER_LEASE

    url = cluster.direct_url
    holder = await _lease_holder(url, LEADER_LEASE)
    if holder is None:
        await _until(lambda: _lease_holder(url, LEADER_LEASE))
        holder = await _lease_holder(url, LEADER_LEASE)
    assert holder is not None
    pid = int(holder.split(":")[1])
    leader: Node = next(n for n in cluster.dispatchers if n.pid == pid)
    started = time.monotonic()
    leader.kill()

    async def taken_over() -> bool:
        now = await _lease_holder(url, LEADER_LEASE)
        return now is not None and now != holder

    recovered = await _until(taken_over)
    await asyncio.to_thread(leader.start)
    return Fault(f"dispatcher leader {leader.name} (pid {pid}) SIGKILLed", started, recovered,
                 "recovered = another dispatcher holds the lease")


async def kill_jobs_worker_mid_draw(cluster: Cluster, traffic: Traffic) -> Fault:
    """SIGKILL the jobs worker running the draw; the other takes the job over once its lease expires,
    and the draw happens once."""
    conn = await asyncpg.connect(cluster.direct_url)
    try:
        while True:
            row = await conn.fetchrow("SELECT id, lease_holder, state FROM jobs WHERE kind = 'draw.run' "
                                      "ORDER BY id DESC LIMIT 1")
            if row is not None and row["state"] in ("succeeded", "failed"):
                return Fault("jobs worker running the draw: not caught", time.monotonic(), 0.0,
                             f"the draw job ended {row['state']} before it was seen running", caught=False)
            if row is not None and row["state"] == "running" and row["lease_holder"]:
                break
            await asyncio.sleep(0.02)
        job_id, holder = row["id"], row["lease_holder"]
        pid = int(holder.split(":")[1])
        worker = next(n for n in cluster.jobs if n.pid == pid)
        started = time.monotonic()
        worker.kill()

        async def finished() -> bool:
            return bool(await conn.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", job_id))

        recovered = await _until(finished, ISSUANCE_LIMIT_S)
        attempts = await conn.fetchval("SELECT attempts FROM jobs WHERE id = $1", job_id)
    finally:
        await conn.close()
    await asyncio.to_thread(worker.start)
    return Fault(f"jobs worker {worker.name} SIGKILLed mid-draw (job #{job_id})", started, recovered,
                 f"recovered = the draw job succeeded, attempt {attempts}")


async def _batches_in_hand(cluster: Cluster) -> dict[int, list[tuple[str, str]]]:
    """The stream entries each issuance worker has taken and not yet acknowledged, by its pid:
    Redis's pending list per bank stream, whose consumer names end in `-PID-RANDOM`."""
    assert cluster.redis is not None and cluster.settings is not None
    port = await asyncio.to_thread(cluster.redis.primary_port)
    client = Redis(port=port, password=cluster.redis.password)
    held: dict[int, list[tuple[str, str]]] = {}
    try:
        for code in cluster.settings.bank_codes:
            key = streams.stream_key(streams.DEFAULT_PREFIX, code)
            try:
                rows = await client.xpending_range(key, streams.GROUP, min="-", max="+", count=10_000)
            except ResponseError:  # no group yet: nothing published to this bank
                continue
            for row in rows:
                pid = int(streams._text(row["consumer"]).rsplit("-", 2)[1])
                held.setdefault(pid, []).append((key, streams._text(row["message_id"])))
    finally:
        await client.aclose()
    return held


async def _outbox_rows(cluster: Cluster, entries: list[tuple[str, str]]) -> list[int]:
    assert cluster.redis is not None
    port = await asyncio.to_thread(cluster.redis.primary_port)
    client = Redis(port=port, password=cluster.redis.password)
    try:
        ids: list[int] = []
        for key, entry_id in entries:
            for _, fields in await client.xrange(key, min=entry_id, max=entry_id):
                ids += streams._decode_entry(entry_id, fields).outbox_ids
        return ids
    finally:
        await client.aclose()


async def kill_issuance_worker_mid_batch(cluster: Cluster, traffic: Traffic) -> Fault:
    """SIGKILL the issuance worker that holds batches taken from the streams and not yet done;
    the other takes them over once they have been idle `claim_idle_s` (XAUTOCLAIM), and every
    packet in them is issued once."""
    holder: list[int] = []

    async def holding() -> bool:
        found = await _batches_in_hand(cluster)
        holder[:] = [n.pid for n in cluster.issuers if found.get(n.pid)][:1]
        return bool(holder)

    kills = 0
    while kills < KILL_ATTEMPTS:
        kills += 1
        await _until(holding, ISSUANCE_LIMIT_S, poll_s=0.02)
        worker = next(n for n in cluster.issuers if n.pid == holder[0])
        started = time.monotonic()
        worker.kill()
        # What it held at its death stays pending under its name until another worker claims it.
        entries = (await _batches_in_hand(cluster)).get(holder[0], [])
        if entries:
            break
        # It finished its batch between the look and the kill: start it again and look again.
        await asyncio.to_thread(worker.start)
    rows = await _outbox_rows(cluster, entries)
    conn = await asyncpg.connect(cluster.direct_url)
    try:
        async def done() -> bool:
            return not await conn.fetchval(
                "SELECT count(*) FROM issuance_outbox WHERE id = ANY($1::bigint[]) AND done_at IS NULL", rows)

        recovered = await _until(done, ISSUANCE_LIMIT_S)
        states = await conn.fetch(
            """SELECT p.state, count(*) AS n FROM issuance_outbox o JOIN packets p ON p.id = o.packet_id
               WHERE o.id = ANY($1::bigint[]) GROUP BY p.state""", rows)
    finally:
        await conn.close()
    await asyncio.to_thread(worker.start)
    return Fault(f"issuance worker {worker.name} SIGKILLed holding {len(entries)} batch(es), {len(rows)} packets",
                 started, recovered,
                 "recovered = another worker claimed them after they idled and they are done: "
                 + ", ".join(f"{r['n']} {r['state']}" for r in states)
                 + (f"; caught at kill {kills}" if kills > 1 else ""), caught=bool(rows))


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
