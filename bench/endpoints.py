"""`make bench`: the four hot endpoints, each against the least work its contract needs.

One embedded stack (PostgreSQL, Redis, the sandbox drand relay) serves two apps side by side,
both by the same granian command line (`stimulus.stack.api_command`): ours, and the bare
contract of bench/bare_app.py. For registration, result check, claim and merchant notice the
benchmark drives ours and the bare app alternately, `--runs` times each, with wrk at 32
connections and bench/requests.lua feeding requests made ahead of time, so the measured loop
signs nothing. Every run gets rows of its own: distinct citizens register, distinct winners
claim, every notice has its own nonce, transaction id and packet. Result checks read the same
citizens in every run; both apps have verified their tokens once beforehand (an unmeasured
pass), so each check is a cache hit, as it is for a citizen who registered.

Both apps get the same settings, and a pool sized for the machine (`pool_size`: twice its
cores per server process, since PostgreSQL shares them; `STIMULUS_DB_POOL_MAX` overrides).

Set-up (not timed): a campaign open for registration, a campaign taken through its ceremony and
draw by the admin API (loadtests/prepare.py), and a campaign with issued packets and merchants
written straight to the database (bench/setup.py).

Printed per endpoint, medians over the runs: requests/s, p50 and p99 latency, the server's CPU
microseconds per request (user + system over the server's processes, before and after the
run), PostgreSQL's and Redis's CPU per request the same way (both apps share them, and only one
side runs at a time), and the ratio of our rate to the bare app's (the median of the runs'
ratios). The last line is the smallest of the four ratios: `ratio = X`. The machine's load
average is printed at the start and the end, since the figures mean little without it.

`--profile DIR` also samples each app's processes with py-spy (`py-spy record --subprocesses`,
raw collapsed stacks) during each of its runs, one file per endpoint, run and side, for finding
where a request's time goes and what ours does that the bare contract does not; sampling costs
the servers some CPU, so read those runs' figures apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import setup
from kernel.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from kernel.servers import RunningStack, migrate_sync, start_stack
from kernel.settings import Settings, load_settings
from loadtests.prepare import BANKS, Preparer
from sandbox.idp import running_provider
from sandbox.idp_keys import mint_citizen_tokens
from stimulus.stack import (
    api_command,
    child_env,
    running_api,
    running_drand_relay,
    spawn,
    wait_http_ok,
)

LUA = Path(__file__).with_name("requests.lua")
ENDPOINTS = ("registration", "result check", "claim", "merchant notice")
TARGET_RATIO = 0.7
TARGET_P99_MS = 50.0
WRK_THREADS = 2
TOKEN_TTL_S = 6 * 3600
REGISTRATION_BASE = 20_000_000


@dataclass(frozen=True)
class Scale:
    # Each run lasts some 3-5 s on a quiet 2-core machine: long enough that its p99 is not the
    # first second's transients (pools filling, caches warming) and one stall moves it little.
    registrations: int = 8_000
    results: int = 16_000
    claims: int = 4_000
    notices: int = 6_000
    runs: int = 3
    connections: int = 32
    workers: int = 2


SMOKE = Scale(registrations=150, results=150, claims=60, notices=150, runs=1, connections=8)


@dataclass(frozen=True)
class Measured:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    ok: int
    refused: int
    postgres_cpu_us: float = 0.0
    redis_cpu_us: float = 0.0


@dataclass(frozen=True)
class Watched:
    """The shared servers whose CPU is counted per request, and where py-spy profiles go."""

    postgres_pid: int | None
    redis_pid: int | None
    profile_dir: Path | None = None


@dataclass(frozen=True)
class Compared:
    endpoint: str
    ours: list[Measured]
    bare: list[Measured]

    @property
    def ratio(self) -> float:
        return statistics.median(o.rate / b.rate for o, b in zip(self.ours, self.bare, strict=True))


def _process_tree(pid: int | None) -> dict[int, psutil.Process]:
    if pid is None:
        return {}
    try:
        root = psutil.Process(pid)
        return {p.pid: p for p in (root, *root.children(recursive=True))}
    except psutil.Error:
        return {}


def _cpu_seconds(procs: dict[int, psutil.Process]) -> dict[int, float]:
    spent: dict[int, float] = {}
    for pid, proc in procs.items():
        try:
            times = proc.cpu_times()
            spent[pid] = times.user + times.system
        except psutil.Error:
            pass
    return spent


class CpuMeter:
    """CPU seconds a process tree spends between `start` and `stop`. Children started meanwhile
    (a PostgreSQL backend for a new pooled connection) count in full."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.before: dict[int, float] = {}

    def start(self) -> None:
        self.before = _cpu_seconds(_process_tree(self.pid))

    def stop(self) -> float:
        after = _cpu_seconds(_process_tree(self.pid))
        return sum(seconds - self.before.get(pid, 0.0) for pid, seconds in after.items())


def _py_spy(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: pip install -e '.[dev]'")
    return subprocess.Popen([found, "record", "--subprocesses", "--nonblocking", "-r", "200", "-f", "raw",
                             "-o", str(output), "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def drive(wrk: str, base: str, server_pid: int, lines: list[str], path: Path, connections: int,
          watched: Watched | None = None, profile_name: str | None = None) -> Measured:
    """One wrk run over `lines` (one request each) against the server at `base`."""
    path.write_text("".join(line + "\n" for line in lines))
    watched = watched or Watched(None, None)
    meters = [CpuMeter(server_pid), CpuMeter(watched.postgres_pid), CpuMeter(watched.redis_pid)]
    spy = None
    if watched.profile_dir is not None and profile_name is not None:
        spy = _py_spy(server_pid, watched.profile_dir / f"{profile_name}.txt")
        time.sleep(0.5)  # py-spy attaches to every worker before the run starts
    for meter in meters:
        meter.start()
    markers = [path.with_name(f"{path.name}.done.{t}") for t in range(WRK_THREADS)]
    wrk_proc = subprocess.Popen(
        [wrk, f"-t{WRK_THREADS}", f"-c{connections}", "-d600s", "--timeout", "10s", "-s", str(LUA), base],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "REQUESTS_FILE": str(path), "THREADS": str(WRK_THREADS)})
    while wrk_proc.poll() is None and not all(m.exists() for m in markers):
        time.sleep(0.02)
    wrk_proc.send_signal(signal.SIGINT)
    out, err = wrk_proc.communicate(timeout=60)
    spent, postgres, redis = (meter.stop() for meter in meters)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.communicate(timeout=60)
    line = next((ln for ln in out.splitlines() if ln.startswith("{")), None)
    if line is None:
        raise SystemExit(f"wrk gave no result:\n{out}\n{err}")
    result = json.loads(line)
    ok = int(result["ok"])
    return Measured(rate=ok / (result["duration_us"] / 1e6), p50_ms=result["p50_us"] / 1000,
                    p99_ms=result["p99_us"] / 1000, cpu_us=spent * 1e6 / max(ok, 1), ok=ok,
                    refused=int(result["other"]) + int(result["errors_status"]),
                    postgres_cpu_us=postgres * 1e6 / max(ok, 1), redis_cpu_us=redis * 1e6 / max(ok, 1))


def _bearer(method: str, path: str, token: str, body: str = "") -> str:
    line = f"{method}\t{path}\t{body}\tAuthorization\tBearer {token}"
    return line + "\tContent-Type\tapplication/json" if body else line


@contextmanager
def bare_server(settings: Settings, extra_env: dict[str, str], workers: int) -> Iterator[tuple[str, int]]:
    """The bare-contract app, by our API's own command line with only the app swapped."""
    port = free_port()
    command = api_command(settings, port, workers)
    command[-1] = "bench.bare_app:create_app"
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    child = spawn("bare", command, child_env(settings, extra_env), logs / "bare.log")
    base = f"http://{settings.host}:{port}"
    try:
        wait_http_ok(base + "/ready", process=child.process)
        yield base, child.process.pid
    finally:
        child.stop()


def _watched(stack: RunningStack, profile_dir: Path | None) -> Watched:
    postgres = next((s for s in stack.owned if isinstance(s, EmbeddedPostgres)), None)
    redis = next((s for s in stack.owned if isinstance(s, EmbeddedRedis)), None)
    pid_file = postgres.data_dir / "postmaster.pid" if postgres else None
    postgres_pid = int(pid_file.read_text().split()[0]) if pid_file and pid_file.exists() else None
    return Watched(postgres_pid, redis.process.pid if redis and redis.process else None, profile_dir)


def pool_size() -> int:
    """Both apps' connections per server process, sized for the machine: twice its cores.

    PostgreSQL runs on the same cores. At the product's default of 16 per process the two apps'
    two processes kept 32 backends runnable on 2 cores, and each statement cost PostgreSQL several
    times its CPU on one connection (context switches, snapshot and lock contention): a 2-core
    run measured the oversubscription more than either app. `STIMULUS_DB_POOL_MAX` overrides it.
    """
    return 2 * (os.cpu_count() or 1)


def run(scale: Scale, say: Any = print, profile_dir: Path | None = None) -> list[Compared]:
    wrk = setup.ensure_wrk()
    state_dir = Path(tempfile.mkdtemp(prefix="stimulus-bench-"))
    env = {**os.environ, "STIMULUS_STATE_DIR": str(state_dir), "STIMULUS_ENV": "development",
           # every request comes from 127.0.0.1 here, so the per-address limit would measure itself
           "STIMULUS_RATE_LIMIT_EXEMPT": "127.0.0.1", "STIMULUS_LOG_LEVEL": "WARNING",
           "STIMULUS_IDP_PORT": str(free_port()),
           "STIMULUS_DB_POOL_MAX": os.environ.get("STIMULUS_DB_POOL_MAX", str(pool_size()))}
    settings = load_settings(env)
    stack = start_stack(settings, need_redis=True)
    try:
        settings = stack.settings
        migrate_sync(settings)
        with running_provider(settings.sandbox_idp_dir, settings.idp_port), running_drand_relay(settings) as relay:
            server_env = {k: v for k, v in env.items() if k.startswith("STIMULUS_")}
            server_env["STIMULUS_DRAND_RELAYS"] = ",".join([relay, *settings.drand_relays])
            # The jobs worker runs approved actions (the draw); its metrics port is off.
            logs = settings.state_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            jobs = spawn("jobs", [sys.executable, "-m", "stimulus.cli", "worker", "jobs"],
                         child_env(settings, {**server_env, "STIMULUS_METRICS_PORT": "0"}), logs / "jobs.log")
            try:
                with running_api(settings, workers=scale.workers, extra_env=server_env) as ours, \
                        bare_server(settings, server_env, scale.workers) as (bare, bare_pid):
                    return _measure(wrk, settings, scale, state_dir, (ours, setup.api_pid(ours)), (bare, bare_pid),
                                    _watched(stack, profile_dir), say)
            finally:
                jobs.stop()
    finally:
        stack.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def _measure(wrk: str, settings: Settings, scale: Scale, run_dir: Path, ours: tuple[str, int],
             bare: tuple[str, int], watched: Watched, say: Any) -> list[Compared]:
    assert settings.database_url
    maker, checker = asyncio.run(setup.operator_tokens(settings.database_url))
    preparer = Preparer(ours[0], settings, maker, checker, run_dir, say)
    sides = (("ours", ours), ("bare", bare))
    n = 0

    def alternate(endpoint: str, lines_for: Any) -> Compared:
        nonlocal n
        measured: dict[str, list[Measured]] = {"ours": [], "bare": []}
        for run in range(scale.runs):
            for side, (base, pid) in sides:
                n += 1
                result = drive(wrk, base, pid, lines_for(run, side), run_dir / f"requests-{n}.tsv",
                               scale.connections, watched,
                               f"{endpoint.replace(' ', '-')}-{run + 1}-{side}")
                measured[side].append(result)
                say(f"  {endpoint:<16} run {run + 1} {side:<4}  {result.rate:8,.0f}/s  p50 {result.p50_ms:6.1f} ms"
                    f"  p99 {result.p99_ms:6.1f} ms  {result.cpu_us:7,.0f} us CPU/request"
                    f"  (PostgreSQL {result.postgres_cpu_us:,.0f} us, Redis {result.redis_cpu_us:,.0f} us)"
                    f"  ({result.ok:,} ok, {result.refused:,} refused)")
        return Compared(endpoint, measured["ours"], measured["bare"])

    def token_block(first: int, count: int) -> list[str]:
        return mint_citizen_tokens(settings.sandbox_idp_dir, settings.idp_issuer, settings.idp_audience, first, count,
                           ttl_s=TOKEN_TTL_S)

    compared: list[Compared] = []
    say(f"load average at the start: {_load()}; {settings.db_pool_max} database connections per server process")

    # Registration: every run registers citizens never seen before.
    cid = preparer.campaign_id("registration")
    preparer.open_campaign(cid, 6)
    blocks = {(run, side): token_block(REGISTRATION_BASE + (2 * run + s) * scale.registrations, scale.registrations)
              for run in range(scale.runs) for s, side in enumerate(("ours", "bare"))}
    compared.append(alternate("registration", lambda run, side: [
        _bearer("POST", f"/v1/campaigns/{cid}/registrations", t, "{}") for t in blocks[(run, side)]]))

    # Result check and claim: a drawn campaign with a winner for every claim of every run.
    winners = 2 * scale.runs * scale.claims
    drawn = preparer.drawn_campaign("results", max(winners + winners // 4, 60), winners)
    token_of = dict(zip(drawn.numbers, drawn.tokens, strict=True))
    result_path = f"/v1/campaigns/{drawn.campaign_id}/result"
    checks = [_bearer("GET", result_path, drawn.tokens[i % len(drawn.tokens)]) for i in range(scale.results)]
    checked = drawn.tokens[:scale.results]
    for side, (base, pid) in sides:  # unmeasured: both apps verify every token they will see once
        drive(wrk, base, pid, [_bearer("GET", result_path, t) for t in checked] * 2,
              run_dir / f"warm-{side}.tsv", scale.connections)
    compared.append(alternate("result check", lambda run, side: checks))
    claimants = drawn.winner_numbers()
    claim_path = f"/v1/campaigns/{drawn.campaign_id}/claim"

    def claims(run: int, side: str) -> list[str]:
        start = (2 * run + (side == "bare")) * scale.claims
        return [_bearer("POST", claim_path, token_of[c], json.dumps(
                    {"wallet": {"bank_code": BANKS[c % len(BANKS)], "wallet_id": f"w-{c}"}}, separators=(",", ":")))
                for c in claimants[start:start + scale.claims]]

    compared.append(alternate("claim", claims))

    # Merchant notices: each redeems part of a packet of its own, signed just before its run
    # (a signature's timestamp is good for 300 s).
    notice_cid = f"{drawn.campaign_id[:30]}-ntc"
    issued = asyncio.run(setup.issued_campaign(settings, notice_cid, 2 * scale.runs * scale.notices,
                                               max(10, scale.notices // 20)))
    keys, references = issued.merchants, [reference for _, _, reference in issued.packets]

    def notices(run: int, side: str) -> list[str]:
        start = (2 * run + (side == "bare")) * scale.notices
        signed = setup.signed_notices(ours[0], keys, references[start:start + scale.notices], f"r{run}{side}")
        return ["\t".join([p.method, p.path, p.body.decode(), *(x for kv in p.headers.items() for x in kv)])
                for p in signed]

    compared.append(alternate("merchant notice", notices))
    say(f"load average at the end: {_load()}")
    return compared


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) + f" (1/5/15 min, {os.cpu_count()} cores)"


def report(compared: list[Compared]) -> str:
    lines = ["", f"{'endpoint':<16} {'side':<5} {'requests/s':>11} {'p50 ms':>7} {'p99 ms':>7} "
                 f"{'CPU us/req':>10} {'PG us/req':>9} {'Redis us':>8} {'ratio':>6}"]
    for c in compared:
        for side, runs in (("ours", c.ours), ("bare", c.bare)):
            lines.append(f"{c.endpoint:<16} {side:<5} {statistics.median(r.rate for r in runs):11,.0f} "
                         f"{statistics.median(r.p50_ms for r in runs):7.1f} "
                         f"{statistics.median(r.p99_ms for r in runs):7.1f} "
                         f"{statistics.median(r.cpu_us for r in runs):10,.0f} "
                         f"{statistics.median(r.postgres_cpu_us for r in runs):9,.0f} "
                         f"{statistics.median(r.redis_cpu_us for r in runs):8,.0f} "
                         + (f"{c.ratio:6.2f}" if side == "ours" else ""))
    lines.append(f"targets: ratio >= {TARGET_RATIO} of the bare contract, p99 <= {TARGET_P99_MS:.0f} ms "
                 "(medians of the runs)")
    lines.append(f"ratio = {min(c.ratio for c in compared):.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.endpoints", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=Scale.runs)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="requests per run and side, as a fraction of the default (0.5: half)")
    parser.add_argument("--smoke", action="store_true", help="a few hundred requests, one run")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy both apps during each run; collapsed stacks into DIR")
    args = parser.parse_args(argv)
    full = Scale()
    scale = SMOKE if args.smoke else Scale(
        registrations=round(full.registrations * args.scale), results=round(full.results * args.scale),
        claims=round(full.claims * args.scale), notices=round(full.notices * args.scale), runs=args.runs)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    compared = run(scale, profile_dir=args.profile)
    print(f"\n{sum(len(c.ours) + len(c.bare) for c in compared)} wrk runs in {time.perf_counter() - started:.0f} s")
    print(report(compared))
    return 0


if __name__ == "__main__":
    sys.exit(main())
