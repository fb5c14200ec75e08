"""`python -m bench.registration_tallies`: what counting registrations costs at a city's scale.

A fresh embedded PostgreSQL, migrated, holds one campaign with `--rows` registrations (1 in 20
withdrawn) and a few small ones, written by generate_series (not timed per row; the triggers see
the whole statement at once). Printed, each the median execution time of `--repeats` EXPLAIN
ANALYZE runs on a warm cache:
  * the reads the public pages made before the tallies (the list's GROUP BY over the table, one
    campaign's count(*)) beside the tally reads that replace them;
  * the operators' reads on the bulk pool: the live/withdrawn count and the timeline by hour;
and the write side: PostgreSQL CPU (the server's processes' user + system time) per group-commit
INSERT of 4, 16 and 256 rows, the registration statement itself, three connections writing at
once, with the tally triggers enabled and disabled, alternately, so the triggers' share stands
apart from the machine's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg
import msgspec
import psutil

from kernel.db import connect, migrate
from kernel.embedded import EmbeddedPostgres, free_port
from kernel.sample import sample_campaign
from lottery import campaigns
from lottery.campaigns import CampaignSpec
from lottery.registration import _INSERT

BIG = "city-2026"
SMALL = [f"district-{n}" for n in range(1, 6)]
WRITERS = 6  # two API processes, each with three group-commit flushes in flight (lottery/registration.py)
BATCHES = ((4, 600), (16, 300), (256, 30))  # rows per statement, statements per writer
TRIGGERS = ("registration_tallies_insert", "registration_tallies_update", "registration_tallies_delete")

READS = {
    "list, before: GROUP BY over the table": (
        "SELECT campaign_id, count(*) AS n FROM registrations WHERE withdrawn_at IS NULL GROUP BY campaign_id", ()),
    "list, after: tallies of the listed campaigns": (
        """SELECT campaign_id, sum(live)::bigint AS live FROM registration_tallies
           WHERE campaign_id = ANY($1::text[]) GROUP BY campaign_id""", ([BIG, *SMALL],)),
    "one campaign, before: count(*)": (
        "SELECT count(*) FROM registrations WHERE campaign_id = $1 AND withdrawn_at IS NULL", (BIG,)),
    "one campaign, after: sum of its tallies": (
        "SELECT COALESCE(sum(live), 0)::bigint FROM registration_tallies WHERE campaign_id = $1", (BIG,)),
    "operators, before: live and withdrawn counted": (
        """SELECT count(*) FILTER (WHERE withdrawn_at IS NULL), count(*) FILTER (WHERE withdrawn_at IS NOT NULL)
           FROM registrations WHERE campaign_id = $1""", (BIG,)),
    "operators: timeline by hour (bulk pool)": (
        """SELECT date_trunc('hour', registered_at) AS at, count(*) AS n FROM registrations WHERE campaign_id = $1
           GROUP BY 1 ORDER BY 1 DESC LIMIT 2000""", (BIG,)),
}


async def _open_campaign(conn: asyncpg.Connection, campaign_id: str) -> None:
    spec = msgspec.convert(sample_campaign(campaign_id, 300), CampaignSpec)
    await campaigns.create(conn, spec, "bench")
    await conn.execute("UPDATE campaigns SET state = 'open', registration_opens_at = now() - interval '1 hour' "
                       "WHERE id = $1", campaign_id)


async def _fill(conn: asyncpg.Connection, campaign_id: str, rows: int) -> float:
    started = time.perf_counter()
    await conn.execute(
        """INSERT INTO registrations (campaign_id, id_hmac, pseudonym, stratum, payload_hash, registered_at,
                                      withdrawn_at)
           SELECT $1, sha256(($1 || '-' || n)::bytea), md5(n::text), '430102', '\\x00',
                  now() - interval '60 hours' + n * interval '60 hours' / $2,
                  CASE WHEN n % 20 = 0 THEN now() END
           FROM generate_series(1, $2) AS n""", campaign_id, rows)
    return time.perf_counter() - started


async def _explain_ms(conn: asyncpg.Connection, sql: str, args: tuple[object, ...], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        plan = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
        times.append(float(json.loads(plan)[0]["Execution Time"]))
    return statistics.median(times)


def _postgres_cpu_s(postmaster: psutil.Process) -> float:
    """User + system CPU of the server and its live children (backends, WAL writer, autovacuum)."""
    total = 0.0
    for process in [postmaster, *postmaster.children()]:
        try:
            cpu = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += cpu.user + cpu.system
    return total


async def _insert_cpu_us(conns: list[asyncpg.Connection], postmaster: psutil.Process, batch: int,
                         batches: int, salt: str) -> float:
    """PostgreSQL CPU per INSERT statement of `batch` new registrations, `batches` statements on
    each connection, the connections writing at once as the group commit's flushes do."""

    async def write(conn: asyncpg.Connection, writer: int) -> None:
        for b in range(batches):
            names = [f"{salt}-{writer}-{b}-{i}" for i in range(batch)]
            await conn.fetch(_INSERT, [BIG] * batch, [hashlib.sha256(n.encode()).digest() for n in names], names,
                             ["430102"] * batch, [b"\x00"] * batch, [None] * batch, [None] * batch)

    before = _postgres_cpu_s(postmaster)
    await asyncio.gather(*(write(conn, n) for n, conn in enumerate(conns)))
    return (_postgres_cpu_s(postmaster) - before) / (batches * len(conns)) * 1e6


async def _write_side(url: str, conn: asyncpg.Connection, rounds: int, writers_n: int) -> dict[tuple[int, bool], float]:
    postmaster = psutil.Process(int(await conn.fetchval("SELECT pg_backend_pid()"))).parent()
    assert postmaster is not None
    writers = [await asyncpg.connect(url) for _ in range(writers_n)]
    results: dict[tuple[int, bool], list[float]] = {}
    try:
        for r in range(rounds):
            for batch, batches in BATCHES:
                for enabled in (True, False):
                    verb = "ENABLE" if enabled else "DISABLE"
                    for trigger in TRIGGERS:
                        await conn.execute(f"ALTER TABLE registrations {verb} TRIGGER {trigger}")
                    cost = await _insert_cpu_us(writers, postmaster, batch, batches, f"w{r}-{batch}-{enabled}")
                    results.setdefault((batch, enabled), []).append(cost)
    finally:
        for trigger in TRIGGERS:
            await conn.execute(f"ALTER TABLE registrations ENABLE TRIGGER {trigger}")
        for writer in writers:
            await writer.close()
    return {key: statistics.median(costs) for key, costs in results.items()}


async def run(rows: int, repeats: int, rounds: int, writers: int, workdir: Path) -> None:
    postgres = EmbeddedPostgres(workdir / "pg", workdir / "sock", free_port())
    postgres.start()
    try:
        conn = await connect(postgres.url)
        try:
            await migrate(conn)
            for campaign_id in (BIG, *SMALL):
                await _open_campaign(conn, campaign_id)
            print(f"{rows:,} registrations written in {await _fill(conn, BIG, rows):.1f} s "
                  f"(one statement, tallies by its trigger)")
            for campaign_id in SMALL:
                await _fill(conn, campaign_id, 20_000)
            await conn.execute("VACUUM ANALYZE registrations")
            await conn.execute("VACUUM ANALYZE registration_tallies")
            tally = await conn.fetchval("SELECT sum(live)::bigint FROM registration_tallies WHERE campaign_id = $1", BIG)
            counted = await conn.fetchval(READS["one campaign, before: count(*)"][0], BIG)
            assert tally == counted, (tally, counted)
            print(f"live registrations of {BIG}: {counted:,} counted, {tally:,} tallied\n")
            print(f"{'read':<48} {'median ms':>10}")
            for name, (sql, args) in READS.items():
                print(f"{name:<48} {await _explain_ms(conn, sql, args, repeats):>10.3f}")
            costs = await _write_side(postgres.url, conn, rounds, writers)
            print(f"\n{'group-commit INSERT':<28} {'triggers on':>12} {'off':>8} {'per row on/off':>16}"
                  "   (PostgreSQL CPU us)")
            for batch, _ in BATCHES:
                on, off = costs[(batch, True)], costs[(batch, False)]
                print(f"{f'{batch} rows per statement':<28} {on:>12.0f} {off:>8.0f} "
                      f"{f'{on / batch:.1f} / {off / batch:.1f}':>16}")
        finally:
            await conn.close()
    finally:
        postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--repeats", type=int, default=5, help="EXPLAIN ANALYZE runs per read")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of triggers on/off per batch size")
    parser.add_argument("--writers", type=int, default=WRITERS, help="connections inserting at once")
    args = parser.parse_args()
    print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-tallies-") as workdir:
        asyncio.run(run(args.rows, args.repeats, args.rounds, args.writers, Path(workdir)))
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
