"""Who used the CPU during a run: the load generator, and each part of the system under test.

The machine may run other stacks (other test sessions, benchmarks) at the same time, so
processes are found by ancestry, never by name alone: the API from the port it listens on (and
the `stimulus up` supervisor above it, whose children are the workers and the sandbox bank),
PostgreSQL from its data directory's postmaster.pid, Redis from its port. Whatever else the
machine did is reported as "other".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psutil

from kernel.settings import Settings

GROUPS = ("locust", "api", "workers", "bank", "postgres", "redis")


@dataclass
class Watched:
    """Roots of the system's process trees; their descendants are found at every sample."""

    server: int | None = None      # the supervisor of `stimulus up`, or the API's granian root
    postgres: int | None = None    # the postmaster
    redis: int | None = None
    named: dict[int, str] = field(default_factory=dict)   # single processes with a known group


def listening_pid(port: int) -> int | None:
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
    return None


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _server_root(api_pid: int) -> int:
    proc = psutil.Process(api_pid)
    with contextlib.suppress(psutil.Error):
        while (parent := proc.parent()) is not None and "granian" in _cmdline(parent):
            proc = parent
        parent = proc.parent()
        if parent is not None and "stimulus" in _cmdline(parent) and " up" in _cmdline(parent):
            return int(parent.pid)
    return int(proc.pid)


def _postmaster(settings: Settings) -> int | None:
    pid_file = settings.state_dir / "postgres" / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(ValueError, IndexError, OSError):
            return int(pid_file.read_text().splitlines()[0])
    url = urlsplit(settings.database_url or "")
    return listening_pid(url.port) if url.hostname in ("127.0.0.1", "localhost") and url.port else None


def find_watched(base_url: str, settings: Settings, supervisor_pid: int | None = None) -> Watched:
    api_port = urlsplit(base_url).port
    api_pid = listening_pid(api_port) if api_port else None
    server = supervisor_pid or (_server_root(api_pid) if api_pid else None)
    redis_port = urlsplit(settings.redis_url or "").port
    port_file = settings.state_dir / "redis.port"
    if redis_port is None and port_file.exists():
        # The embedded Redis of `stimulus up`, found the way every `stimulus` command finds it.
        with contextlib.suppress(ValueError, OSError):
            redis_port = int(port_file.read_text())
    return Watched(server=server, postgres=_postmaster(settings),
                   redis=listening_pid(redis_port) if redis_port else None)


def _server_group(proc: psutil.Process) -> str | None:
    cmdline = _cmdline(proc)
    with contextlib.suppress(psutil.Error):
        if proc.name().startswith("redis-server"):
            return "redis"
    if "granian" in cmdline:
        return "api"
    if "sandbox.bank" in cmdline or "sandbox_bank" in cmdline or "sandbox-bank" in cmdline:
        return "bank"
    if "stimulus.cli worker" in cmdline or "stimulus worker" in cmdline:
        return "workers"
    return None


def _family(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class CpuMeter:
    """CPU seconds per group between `start` and `stop`.

    Processes alive at the start count from there; processes born during the run (locust and
    its children) count from their birth. Locust's processes are sampled often, because they
    exit before the final sample; the servers outlive the run.
    """

    def __init__(self, watched: Watched) -> None:
        self.watched = watched
        self.locust: set[int] = set()
        self.baseline: dict[int, tuple[str, float]] = {}
        self.last: dict[int, float] = {}
        self.machine_start = 0.0
        self.machine_s = 0.0

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))

    def _record(self, proc: psutil.Process, group: str, born_during_run: bool) -> None:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            return
        used = float(t.user + t.system)
        if proc.pid not in self.baseline:
            self.baseline[proc.pid] = (group, 0.0 if born_during_run else used)
        self.last[proc.pid] = used

    def _groups(self) -> list[tuple[psutil.Process, str]]:
        found: list[tuple[psutil.Process, str]] = []
        for proc in _family(self.watched.server):
            group = _server_group(proc)
            if group is not None and proc.pid not in self.locust:
                found.append((proc, group))
        found += [(p, "postgres") for p in _family(self.watched.postgres)]
        found += [(p, "redis") for p in _family(self.watched.redis) if p.pid not in {q.pid for q, _ in found}]
        for pid, group in self.watched.named.items():
            with contextlib.suppress(psutil.Error):
                found.append((psutil.Process(pid), group))
        return found

    def start(self) -> None:
        for proc, group in self._groups():
            self._record(proc, group, born_during_run=False)
        self.machine_start = self._busy()

    def sample_locust(self, root_pid: int) -> None:
        for proc in _family(root_pid):
            self.locust.add(proc.pid)
            self._record(proc, "locust", born_during_run=True)

    def sample(self) -> None:
        for proc, group in self._groups():
            self._record(proc, group, born_during_run=True)

    def stop(self) -> dict[str, float]:
        self.sample()
        self.machine_s = self._busy() - self.machine_start
        totals = dict.fromkeys(GROUPS, 0.0)
        for pid, (group, at_start) in self.baseline.items():
            totals[group] += max(0.0, self.last.get(pid, at_start) - at_start)
        totals["other"] = max(0.0, self.machine_s - sum(totals.values()))
        return totals
