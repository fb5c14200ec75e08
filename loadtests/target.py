"""The system under load: the stack `stimulus up` runs, a given URL, or a stack started for the run.

Without `--host`, a stack already answering at the configured address (STIMULUS_HOST and
STIMULUS_PORT, as `stimulus up` uses them) is used; when none answers, a fresh one is started
under `<state dir>/load/stack` (embedded PostgreSQL and Redis, the sandbox bank, the API with
its workers) and stopped after the run, so a run never mixes with earlier data.

Set-up and the checks after the run need the database (for operator tokens and the system's own
truth): it is found the way every `stimulus` command finds it, from DATABASE_URL or the embedded
server of the state directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import psutil

from kernel import auth
from kernel.embedded import EmbeddedPostgres, free_port, socket_dir_for
from kernel.servers import start_stack
from kernel.settings import Settings, load_settings
from loadtests.cpu import listening_pid

READY_TIMEOUT_S = 2.0
# Every simulated user comes from this machine's address; the per-address abuse limit would
# measure itself, so a stack started for a run exempts loopback (the identity limit stays).
OWN_STACK_ENV = {"STIMULUS_RATE_LIMIT_EXEMPT": "127.0.0.1", "STIMULUS_ENV": "development",
                 "STIMULUS_LOG_LEVEL": "WARNING"}


class TargetError(Exception):
    """The system to load cannot be reached or used; the message says what to do."""


@dataclass
class Target:
    base_url: str
    settings: Settings            # database_url and redis_url filled in
    bank_url: str | None
    started_here: bool
    maker_token: str = ""
    checker_token: str = ""
    supervisor_pid: int | None = None   # the process whose children are the API, workers and bank
    runs_dir: Path | None = None        # where run directories go: <state dir of this command>/load

    @property
    def database_url(self) -> str:
        assert self.settings.database_url
        return self.settings.database_url


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(base_url.rstrip("/") + "/ready", timeout=READY_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


SERVER_KEYS = ("DATABASE_URL", "REDIS_URL", "STIMULUS_STATE_DIR", "STIMULUS_BANK_URL", "STIMULUS_BANKS",
               "STIMULUS_ENV", "STIMULUS_SANDBOX_IDP_DIR", "STIMULUS_IDP_PORT", "STIMULUS_IDP_ISSUER",
               "STIMULUS_IDP_AUDIENCE")


def _server_environment(base_url: str) -> dict[str, str]:
    """The settings an API on this machine runs with (its process environment): its database,
    Redis, bank and state directory, and the sandbox identity provider whose key must sign the
    run's tokens."""
    parts = urlsplit(base_url)
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
        return {}
    pid = listening_pid(parts.port)
    if pid is None:
        return {}
    try:
        environ = psutil.Process(pid).environ()
    except psutil.Error:
        return {}
    return {k: environ[k] for k in SERVER_KEYS if environ.get(k)}


def _database_settings(settings: Settings) -> Settings:
    """Settings with the database of a running stack; never starts a database of its own."""
    if settings.database_url is None:
        pg_dir = settings.state_dir / "postgres"
        if not EmbeddedPostgres(pg_dir, socket_dir_for(pg_dir)).is_running():
            raise TargetError(
                f"no database for the checks: set DATABASE_URL, or run where `stimulus up` keeps its "
                f"state ({settings.state_dir})")
    return start_stack(settings, need_redis=False).settings


async def _operator_tokens(database_url: str) -> tuple[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        # Two operators: the draw's maker-checker rule refuses one approving its own request.
        return (await auth.create_token(conn, "load-maker", "operator"),
                await auth.create_token(conn, "load-checker", "operator"))
    finally:
        await conn.close()


@contextmanager
def attach(host: str | None, fresh: bool = False) -> Iterator[Target]:
    """The target for a run; a stack started here is stopped when the block ends."""
    settings = load_settings()
    runs_dir = settings.state_dir / "load"
    default_url = f"http://{settings.host}:{settings.port}"
    if host is None and not fresh and _ready(default_url):
        host = default_url
    if host is not None:
        if not _ready(host):
            raise TargetError(f"{host}/ready does not answer 200: start the stack (`stimulus up`) first")
        server_env = _server_environment(host)
        if server_env:
            settings = load_settings({**os.environ, **server_env})
        settings = _database_settings(settings)
        target = Target(host.rstrip("/"), settings, settings.bank_url or _local_bank(settings),
                        started_here=False, runs_dir=runs_dir)
        target.maker_token, target.checker_token = asyncio.run(_operator_tokens(target.database_url))
        yield target
        return
    with _own_stack(settings) as target:
        target.runs_dir = runs_dir
        yield target


def _local_bank(settings: Settings) -> str | None:
    url = f"http://127.0.0.1:{settings.bank_port}"
    try:
        return url if httpx.get(url + "/health", timeout=READY_TIMEOUT_S).status_code == 200 else None
    except httpx.HTTPError:
        return None


@contextmanager
def _own_stack(settings: Settings) -> Iterator[Target]:
    from stimulus.supervisor import Supervisor

    state_dir = settings.state_dir / "load" / "stack"
    shutil.rmtree(state_dir, ignore_errors=True)
    # The supervisor hands its own environment to the API and workers it starts.
    os.environ.update({**OWN_STACK_ENV, "STIMULUS_STATE_DIR": str(state_dir),
                       "STIMULUS_BANK_PORT": str(free_port()), "STIMULUS_IDP_PORT": str(free_port())})
    own = load_settings()
    port = free_port()
    supervisor = Supervisor(own, api_port=port)
    try:
        supervisor.start()
        assert supervisor.stack is not None
        target = Target(f"http://{own.host}:{port}", supervisor.stack.settings, supervisor.bank_url,
                        started_here=True, supervisor_pid=os.getpid())
        target.maker_token, target.checker_token = asyncio.run(_operator_tokens(target.database_url))
        yield target
    finally:
        supervisor.stop()
