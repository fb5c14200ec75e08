"""`stimulus up` on a machine with nothing running: embedded servers, migrations, the API, the workers
and the sandbox bank serving the codes STIMULUS_BANKS names; Ctrl-C stops every process it started."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from kernel.embedded import free_port
from tests.conftest import TEST_ENV

WORKERS = ("issuance-dispatcher", "issuance", "reconcile")


def _read_until_ready(process: subprocess.Popen[str], deadline: float) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"stimulus up ended early:\n{''.join(lines)}")
        lines.append(line)
        if "Ctrl-C to stop" in line:
            return lines
    raise AssertionError(f"stimulus up was not ready in time:\n{''.join(lines)}")


def _left_running(process: subprocess.Popen[str], state: Path) -> str:
    assert process.stdout is not None
    log = (state / "postgres" / "server.log").read_text()[-2000:]
    return f"PostgreSQL was left running\n{process.stdout.read()}\n{log}"


def test_up_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "STIMULUS_BANK_URL")}
    env.update(TEST_ENV, STIMULUS_STATE_DIR=str(tmp_path), STIMULUS_BANKS="ICBC,ABC", COLUMNS="200",
               STIMULUS_IDP_PORT=str(free_port()))
    env.pop("STIMULUS_SANDBOX_IDP_DIR")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "stimulus.cli", "up", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = "".join(_read_until_ready(process, time.monotonic() + 120))
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).status_code == 200
        bank = re.search(r"sandbox bank\s+(http://\S+)", output)
        assert bank is not None, output
        assert httpx.get(f"{bank.group(1)}/health", timeout=10).json()["banks"] == ["ICBC", "ABC"]
        idp = re.search(r"sandbox IdP\s+(http://\S+)", output)
        assert idp is not None, output
        discovery = httpx.get(f"{idp.group(1)}/.well-known/openid-configuration", timeout=10).json()
        assert discovery["issuer"] == idp.group(1)
        assert httpx.post(f"http://127.0.0.1:{port}/sandbox/idp/tokens", json={}, timeout=10).status_code == 404
        children = psutil.Process(process.pid).children(recursive=True)
        commands = [" ".join(c.cmdline()) for c in children]
        for worker in WORKERS:
            assert any(cmd.endswith(f"worker {worker}") for cmd in commands), (worker, commands)
        assert (tmp_path / "postgres" / "PG_VERSION").exists()

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(children, timeout=15)
        assert alive == [], f"still running after Ctrl-C: {[p.pid for p in alive]}"
        assert not (tmp_path / "postgres" / "postmaster.pid").exists(), _left_running(process, tmp_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _comes_back(find_pid: Any, dead_pid: int, port: int, within_s: float) -> int:
    """Waits for a new server process and the API ready on it; returns the new pid."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        pid = find_pid()
        if pid is not None and pid != dead_pid and psutil.pid_exists(pid) and _ready(port):
            return int(pid)
        time.sleep(0.2)
    raise AssertionError(f"not back within {within_s} s")


def test_up_restarts_embedded_servers_that_die(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "STIMULUS_BANK_URL")}
    env.update(TEST_ENV, STIMULUS_STATE_DIR=str(tmp_path), COLUMNS="200")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "stimulus.cli", "up", "--port", str(port), "--no-bank"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def redis_pid() -> int | None:
        for child in psutil.Process(process.pid).children():
            with contextlib.suppress(psutil.Error):
                if "redis" in child.name() and child.status() != psutil.STATUS_ZOMBIE:
                    return int(child.pid)
        return None

    def postgres_pid() -> int | None:
        try:
            return int((tmp_path / "postgres" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    try:
        _read_until_ready(process, time.monotonic() + 120)
        for find_pid in (redis_pid, postgres_pid):
            pid = find_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            _comes_back(find_pid, pid, port, within_s=60)
        # And once more for Redis, now that PostgreSQL came back too.
        pid = redis_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _comes_back(redis_pid, pid, port, within_s=60)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert not (tmp_path / "postgres" / "postmaster.pid").exists(), _left_running(process, tmp_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
