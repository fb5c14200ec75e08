"""Running locust headless as a child process, bounded in time, and measuring who used the CPU.

Locust monkey-patches its process with gevent, so it never runs inside `stimulus` or pytest; it
is a child with its own process group, stopped (SIGINT, then SIGKILL) if it overruns its time.
The load generator shares the machine with the system it loads, so every run reports the CPU
seconds of each side (psutil, from process CPU times): locust, the API, the workers, the
sandbox bank, PostgreSQL, Redis, and whatever else ran.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.cpu import CpuMeter, Watched

STOP_TIMEOUT_S = 15          # users finish the request they are in, so no answer is lost at the end
START_GRACE_S = 60           # locust's own start-up and its final reports
PROGRESS_EVERY_S = 10.0


@dataclass
class LocustOptions:
    locustfile: Path
    host: str
    users: int
    duration_s: int
    run_dir: Path
    plan_path: Path
    processes: int = 1
    master: bool = False
    expect_workers: int = 0
    master_bind_port: int = 5557
    extra_args: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "locust", "-f", str(self.locustfile), "--headless",
            "-H", self.host, "-u", str(self.users), "-t", f"{self.duration_s}s",
            "--csv", str(self.run_dir / "locust"), "--html", str(self.run_dir / "report.html"),
            "--json-file", str(self.run_dir / "locust_final"),
            "--stop-timeout", str(STOP_TIMEOUT_S), "--only-summary", "--loglevel", "WARNING",
        ]
        if self.processes > 1:
            command += ["--processes", str(self.processes)]
        if self.master:
            command += ["--master", "--expect-workers", str(self.expect_workers),
                        "--master-bind-port", str(self.master_bind_port)]
        return command + self.extra_args


@dataclass
class LocustRun:
    command: list[str]
    returncode: int
    wall_s: float
    timed_out: bool
    cpu_s: dict[str, float]
    log_path: Path

    @property
    def stats_path(self) -> Path:
        return self.log_path.parent / "locust_final.json"


def _progress(run_dir: Path) -> str:
    history = run_dir / "locust_stats_history.csv"
    try:
        with history.open() as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("Name") == "Aggregated"]
    except OSError:
        return ""
    if not rows:
        return ""
    last = rows[-1]
    return (f"users {last.get('User Count', '?')}  {float(last.get('Requests/s') or 0):,.0f} req/s  "
            f"failures {float(last.get('Failures/s') or 0):,.1f}/s  "
            f"requests {int(float(last.get('Total Request Count') or 0)):,}")


def run_locust(options: LocustOptions, env: dict[str, str], say: Callable[[str], None],
               watched: Watched) -> LocustRun:
    """Run locust until its shape ends (or the time bound), measuring CPU on the way."""
    command = options.command()
    log_path = options.run_dir / "locust.log"
    meter = CpuMeter(watched)
    meter.start()
    started = time.perf_counter()
    deadline = started + options.duration_s + STOP_TIMEOUT_S + START_GRACE_S
    timed_out = False
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=options.run_dir)
        next_report = started + PROGRESS_EVERY_S
        try:
            while process.poll() is None:
                time.sleep(0.5)
                meter.sample_locust(process.pid)
                now = time.perf_counter()
                if now >= next_report:
                    meter.sample()
                    say(f"{now - started:6.0f} s  {_progress(options.run_dir)}")
                    next_report = now + PROGRESS_EVERY_S
                if now > deadline and not timed_out:
                    timed_out = True
                    say("locust overran its time bound; stopping it")
                    os.killpg(process.pid, signal.SIGINT)
                    deadline = now + STOP_TIMEOUT_S
                elif now > deadline:
                    os.killpg(process.pid, signal.SIGKILL)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    wall_s = time.perf_counter() - started
    cpu = meter.stop()
    return LocustRun(command, process.returncode, wall_s, timed_out, cpu, log_path)


def run_worker(locustfile: Path, master_host: str, master_port: int, env: dict[str, str]) -> int:
    """A locust worker for a distributed run; it takes its share of the plan's populations."""
    command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--worker",
               "--master-host", master_host, "--master-port", str(master_port), "--loglevel", "WARNING"]
    return subprocess.call(command, env=env)
