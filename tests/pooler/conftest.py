"""A real PgBouncer (Debian's package) in transaction mode in front of the session's PostgreSQL.

The test setup installs the package when it is missing (apt-get, as root, with a time limit);
when it cannot be had (no network, not root) the PgBouncer tests are skipped with the reason.
PgBouncer runs from a config file and a userlist in a temporary directory, on a port of its own,
as the embedded server's system user (it refuses to run as root), and clients log in with a
SCRAM password as they would in production.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from kernel.embedded import PG_SYSTEM_USER, free_port
from tests import debian
from tests.conftest import Stack

START_TIMEOUT_S = 20
PASSWORD = "pooled-secret"
POOL_SIZE = 20


@pytest.fixture(scope="session")
def pgbouncer_bin() -> str:
    found = debian.ensure(("pgbouncer",), "pgbouncer")
    if found is None:
        pytest.skip("PgBouncer is not installed and could not be installed (apt-get needs root and a network)")
    return found


def _upstream(database_url: str) -> tuple[str, int, str, str]:
    """host (or socket directory), port, database and user of a libpq-style URL."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    return host, port, (parts.path.lstrip("/") or "postgres"), (parts.username or "postgres")


@dataclass
class PgBouncer:
    """One PgBouncer process; `restart()` kills it (SIGKILL) and starts it again on the same port."""

    binary: str
    directory: Path
    upstream_url: str
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        _, _, database, user = _upstream(self.upstream_url)
        return f"postgresql://{user}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def configure(self) -> None:
        host, port, database, user = _upstream(self.upstream_url)
        self.port = self.port or free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "userlist.txt").write_text(f'"{user}" "{PASSWORD}"\n')
        (self.directory / "pgbouncer.ini").write_text(f"""\
[databases]
{database} = host={host} port={port} dbname={database} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {self.directory / "userlist.txt"}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
max_client_conn = 1000
server_reset_query =
server_check_delay = 0
ignore_startup_parameters = extra_float_digits
logfile = {self.directory / "pgbouncer.log"}
pidfile = {self.directory / "pgbouncer.pid"}
""")
        if os.geteuid() == 0:  # PgBouncer will not run as root: it runs as the database's user
            entry = pwd.getpwnam(PG_SYSTEM_USER)
            for path in (self.directory, *self.directory.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            for parent in self.directory.parents:
                parent.chmod(parent.stat().st_mode | 0o011)

    def start(self) -> None:
        run_as: dict[str, int] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
            run_as = {"user": entry.pw_uid, "group": entry.pw_gid}
        (self.directory / "pgbouncer.pid").unlink(missing_ok=True)
        with (self.directory / "stderr.log").open("ab") as stderr:
            self.process = subprocess.Popen([self.binary, str(self.directory / "pgbouncer.ini")],
                                            stdout=stderr, stderr=subprocess.STDOUT, **run_as)  # type: ignore[call-overload]
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}: {self.log()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return "".join(path.read_text(errors="replace")[-2000:] for path in
                       (self.directory / "pgbouncer.log", self.directory / "stderr.log") if path.exists())


@pytest.fixture(scope="session")
def pgbouncer(pgbouncer_bin: str, stack: Stack) -> Iterator[PgBouncer]:
    # Not under pytest's temporary root: any pytest run on the machine may make that root private
    # again, and PgBouncer (another user) must still read its config when it is restarted.
    with tempfile.TemporaryDirectory(prefix="stimulus-pgbouncer-") as tmp:
        bouncer = PgBouncer(pgbouncer_bin, Path(tmp) / "pgbouncer", stack.database_url)
        bouncer.configure()
        bouncer.start()
        try:
            yield bouncer
        finally:
            bouncer.stop()
