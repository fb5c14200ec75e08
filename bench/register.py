"""`make bench`: citizen registration through the HTTP API against a same-run database baseline.

The load generator is wrk (C, a fraction of a core) with a Lua script over identity tokens made
ahead of time, so the measured loop signs nothing. The baseline is what PostgreSQL takes as
durable single-row INSERT commits from asyncpg, one connection held per task, 32 tasks. The
target: ratio = api_rate / baseline_rate >= 0.4 with p99 <= 50 ms, and rows in the database equal
to acknowledged registrations.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import psutil

from sandbox.citizens import synthetic_citizen
from sandbox.idp import running_provider
from sandbox.idp_keys import Signer
from stimulus.embedded import free_port
from stimulus.sample import sample_campaign
from stimulus.servers import migrate_sync, start_stack
from stimulus.settings import Settings, load_settings
from stimulus.stack import running_api

BASELINE_TASKS = 32
BASELINE_SECONDS = 8.0
TARGET_RATIO = 0.4
TARGET_P99_MS = 50.0
LUA = Path(__file__).with_name("register.lua")


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is needed as the low-cost load generator: apt-get install wrk")
    return found


async def baseline(database_url: str) -> float:
    conns = [await asyncpg.connect(database_url) for _ in range(BASELINE_TASKS)]
    await conns[0].execute(
        """DROP TABLE IF EXISTS bench_baseline;
           CREATE TABLE bench_baseline (id bigserial PRIMARY KEY, campaign_id text NOT NULL,
               id_hmac bytea NOT NULL, payload bytea NOT NULL, at timestamptz NOT NULL DEFAULT now())""")
    stop_at = time.perf_counter() + BASELINE_SECONDS
    counts = [0] * BASELINE_TASKS

    async def task(i: int, conn: asyncpg.Connection) -> None:
        value = os.urandom(32)
        while time.perf_counter() < stop_at:
            await conn.execute("INSERT INTO bench_baseline (campaign_id, id_hmac, payload) VALUES ($1, $2, $3)",
                               "bench", value, value)
            counts[i] += 1

    started = time.perf_counter()
    await asyncio.gather(*[task(i, c) for i, c in enumerate(conns)])
    elapsed = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    return sum(counts) / elapsed


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _groups(api_pid: int) -> dict[str, list[psutil.Process]]:
    groups: dict[str, list[psutil.Process]] = {"server": [], "postgres": [], "redis": []}
    try:
        api = psutil.Process(api_pid)
        groups["server"] = [api, *api.children(recursive=True)]
    except psutil.Error:
        pass
    for proc in psutil.process_iter(["name", "cmdline"]):
        name = proc.info["name"] or ""
        if name == "postgres" or name.startswith("postgres:"):
            groups["postgres"].append(proc)
        elif name.startswith("redis-server"):
            groups["redis"].append(proc)
    return groups


def run(registrations: int = 100_000, connections: int = 32, workers: int = 2) -> int:
    wrk = ensure_wrk()
    state_dir = Path(tempfile.mkdtemp(prefix="stimulus-bench-"))
    env = {**os.environ, "STIMULUS_STATE_DIR": str(state_dir), "STIMULUS_ENV": "development",
           # every request comes from 127.0.0.1 here, so the per-address limit would measure itself
           "STIMULUS_RATE_LIMIT_ADDRESS_PER_MIN": "0", "STIMULUS_LOG_LEVEL": "WARNING",
           "STIMULUS_IDP_PORT": str(free_port())}
    settings = load_settings(env)
    stack = start_stack(settings, need_redis=True)
    try:
        settings = stack.settings
        migrate_sync(settings)
        with running_provider(settings.sandbox_idp_dir, settings.idp_port):
            return _measure(settings, env, wrk, state_dir, registrations, connections, workers)
    finally:
        stack.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def _measure(settings: Settings, env: dict[str, str], wrk: str, state_dir: Path, registrations: int,
             connections: int, workers: int) -> int:
    print(f"pre-generating {registrations} identity tokens ...", flush=True)
    tokens_file = state_dir / "tokens.txt"
    signer = Signer.from_data_dir(settings.sandbox_idp_dir, settings.idp_issuer)
    with tokens_file.open("w") as fh:
        for n in range(registrations):
            fh.write(signer.citizen_token(synthetic_citizen(n), audience=settings.idp_audience,
                                          ttl_s=6 * 3600) + "\n")
    assert settings.database_url
    base_rate = asyncio.run(baseline(settings.database_url))
    print(f"baseline: {base_rate:,.0f} single-row INSERT commits/s "
          f"(asyncpg, {BASELINE_TASKS} tasks, one connection each)", flush=True)
    campaign_id = f"bench-{int(time.time())}"
    result = _drive(settings, env, wrk, campaign_id, tokens_file, connections, workers)
    rows = asyncio.run(_count(settings.database_url, campaign_id))
    return _report(result, base_rate, rows)


async def _count(database_url: str, campaign_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM registrations WHERE campaign_id = $1", campaign_id))
    finally:
        await conn.close()


def _drive(settings: object, env: dict[str, str], wrk: str, campaign_id: str, tokens_file: Path,
           connections: int, workers: int) -> dict[str, object]:
    from stimulus.settings import Settings

    assert isinstance(settings, Settings)
    api_env = {k: v for k, v in env.items() if k.startswith("STIMULUS_")}
    with running_api(replace(settings), workers=workers, extra_env=api_env) as base:
        operator = _operator_token(settings)
        spec = sample_campaign(campaign_id, winners=3000, registration_s=6 * 3600)
        headers = {"Authorization": f"Bearer {operator}"}
        with httpx.Client(base_url=base, timeout=30) as client:
            client.post("/v1/admin/campaigns", json=spec, headers=headers).raise_for_status()
            client.post(f"/v1/admin/campaigns/{campaign_id}/open", headers=headers).raise_for_status()
            # Warm up the connection pools and the campaign cache with a few registrations.
            signer = Signer.from_data_dir(settings.sandbox_idp_dir, settings.idp_issuer)
            for n in range(3):
                token = signer.citizen_token(synthetic_citizen(10_000_000 + n), audience=settings.idp_audience)
                client.post(f"/v1/campaigns/{campaign_id}/registrations",
                            headers={"Authorization": f"Bearer {token}"}).raise_for_status()
        api_pid = _api_pid(base)
        threads = 2
        groups = _groups(api_pid)
        before = {k: _cpu(v) for k, v in groups.items()}
        started = time.perf_counter()
        wrk_proc = subprocess.Popen(
            [wrk, f"-t{threads}", f"-c{connections}", "-d600s", "--timeout", "10s", "-s", str(LUA), base],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TOKENS_FILE": str(tokens_file), "CAMPAIGN": campaign_id,
                 "THREADS": str(threads)},
        )
        wrk_ps = psutil.Process(wrk_proc.pid)
        wrk_cpu = 0.0
        expected = sum(1 for _ in tokens_file.open())
        while wrk_proc.poll() is None:
            try:
                t = wrk_ps.cpu_times()
                wrk_cpu = t.user + t.system
            except psutil.Error:
                pass
            # wrk runs for a duration, not a count: stop it (SIGINT makes it report) once every
            # token has been used, which the database's own count tells.
            if asyncio.run(_count(settings.database_url or "", campaign_id)) >= expected + 3:
                wrk_proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.25)
        wall = time.perf_counter() - started
        out, err = wrk_proc.communicate()
        after = {k: _cpu(v) for k, v in groups.items()}
    line = next((ln for ln in out.splitlines() if ln.startswith("{")), None)
    if line is None:
        raise SystemExit(f"wrk gave no result:\n{out}\n{err}")
    result: dict[str, object] = json.loads(line)
    cpu = {k: after[k] - before[k] for k in before}
    cpu["load generator (wrk)"] = wrk_cpu
    result["cpu_s"] = cpu
    result["wall_s"] = wall
    return result


def _api_pid(base: str) -> int:
    port = int(base.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            proc = psutil.Process(conn.pid)
            while proc.parent() is not None and "granian" in " ".join(proc.parent().cmdline()):
                proc = proc.parent()
            return int(proc.pid)
    return os.getpid()


def _operator_token(settings: object) -> str:
    from stimulus import auth
    from stimulus.settings import Settings

    assert isinstance(settings, Settings) and settings.database_url

    async def make() -> str:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await auth.create_token(conn, "bench", "operator")
        finally:
            await conn.close()

    return asyncio.run(make())


def _report(result: dict[str, object], base_rate: float, rows: int) -> int:
    created = int(str(result["created"]))
    duration_s = int(str(result["duration_us"])) / 1e6
    rate = created / duration_s
    p50_ms = int(str(result["p50_us"])) / 1000
    p99_ms = int(str(result["p99_us"])) / 1000
    ratio = rate / base_rate
    cpu = result["cpu_s"]
    assert isinstance(cpu, dict)
    total_cpu = sum(cpu.values()) or 1.0
    print()
    print(f"registrations acknowledged (201): {created:,}   repeats (200): {result['repeated']}   "
          f"other statuses: {result['other']}   socket errors: {result['errors_connect']}/{result['errors_timeout']}")
    print(f"rows in the database:             {rows - 3:,} (+3 warm-up; rows above the acknowledged "
          "count are requests whose answers wrk dropped when it was stopped)")
    print(f"API rate:      {rate:,.0f} registrations/s over {duration_s:.1f} s")
    print(f"latency:       p50 {p50_ms:.1f} ms   p90 {int(str(result['p90_us'])) / 1000:.1f} ms   "
          f"p99 {p99_ms:.1f} ms   max {int(str(result['max_us'])) / 1000:.1f} ms")
    print("CPU split:     " + "   ".join(
        f"{name} {seconds:.1f} s ({seconds / total_cpu:.0%})" for name, seconds in cpu.items()))
    print(f"baseline:      {base_rate:,.0f} INSERT commits/s")
    print(f"ratio = api_rate / baseline_rate = {ratio:.2f}   (target >= {TARGET_RATIO}, p99 <= {TARGET_P99_MS:.0f} ms)")
    lost = rows - 3 < created
    ok = ratio >= TARGET_RATIO and p99_ms <= TARGET_P99_MS and not lost and int(str(result["other"])) == 0
    print("RESULT:", "PASS" if ok else "FAIL", "(registrations lost!)" if lost else "")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run(registrations=int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
