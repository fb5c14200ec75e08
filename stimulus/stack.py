"""Running the API and the sandbox's drand relay as child processes, on the servers
kernel.servers found or started."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from kernel.embedded import free_port
from kernel.settings import Settings


def child_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for API/worker child processes: the same settings, servers pinned."""
    env = dict(os.environ)
    env["STIMULUS_STATE_DIR"] = str(settings.state_dir)
    assert settings.database_url and settings.redis_url
    env["DATABASE_URL"] = settings.database_url
    env["REDIS_URL"] = settings.redis_url
    env["STIMULUS_DB_POOLER"] = settings.db_pooler
    if settings.database_direct_url:
        env["DATABASE_DIRECT_URL"] = settings.database_direct_url
    # The children run in the supervisor's environment even though their URLs now name servers.
    env["STIMULUS_ENV"] = settings.environment
    env.update(extra or {})
    return env


def api_command(settings: Settings, port: int | None = None, workers: int | None = None) -> list[str]:
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory",
        "--host", settings.host, "--port", str(port or settings.port),
        "--workers", str(workers or settings.workers), "--loop", "uvloop",
        "--no-ws", "--backlog", "2048", "--log-level", "warning", "--no-access-log",
        "--workers-kill-timeout", "10",
        "stimulus.app:create_app_from_env",
    ]


@dataclass
class ChildProcess:
    name: str
    process: subprocess.Popen[bytes]

    def stop(self, timeout_s: float = 15) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def spawn(name: str, command: list[str], env: dict[str, str], log_path: Path | None = None) -> ChildProcess:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    return ChildProcess(name, process)


def wait_http_ok(url: str, timeout_s: float = 60, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout_s} s ({last})")


def prepare_metrics_dir(settings: Settings, name: str = "") -> Path:
    """An empty multiprocess metrics directory; `name` gives one API of several in a state
    directory its own, so starting another does not wipe the files of one still running."""
    path = settings.state_dir / "metrics" / name if name else settings.state_dir / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@contextmanager
def running_api(settings: Settings, port: int | None = None, workers: int | None = None,
                extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Run the API server processes for the duration of the block; yields the base URL."""
    port = port or free_port()
    metrics_dir = prepare_metrics_dir(settings, f"api-{port}")
    # Each API started here gets a metrics port of its own unless told one (see metrics_listener).
    env = child_env(settings, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                               "STIMULUS_METRICS_PORT": str(free_port()), **(extra_env or {})})
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    child = spawn("api", api_command(settings, port, workers), env, logs / "api.log")
    base = f"http://{settings.host}:{port}"
    try:
        wait_http_ok(base + "/ready", process=child.process)
        yield base
    finally:
        child.stop()


def drand_relay_command(port: int, slow_ms: int | None = None) -> list[str]:
    """The sandbox drand relay (development only: the caller checks `settings.sandbox`)."""
    command = [sys.executable, "-m", "sandbox.drand_relay", "--host", "127.0.0.1", "--port", str(port)]
    return command + (["--slow-ms", str(slow_ms)] if slow_ms is not None else [])


@contextmanager
def running_drand_relay(settings: Settings, slow_ms: int | None = None) -> Iterator[str]:
    """Run the sandbox drand relay for the duration of the block; yields its base URL."""
    if not settings.sandbox:
        raise RuntimeError("the sandbox drand relay is for development only")
    port = free_port()
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    child = spawn("drand-relay", drand_relay_command(port, slow_ms), child_env(settings), logs / "drand-relay.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(base + "/health", process=child.process)
        yield base
    finally:
        child.stop()
