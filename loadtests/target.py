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

import asyncpg
import httpx

from stimulus import auth
from stimulus.embedded import EmbeddedPostgres, free_port, socket_dir_for
from stimulus.settings import Settings, load_settings
from stimulus.stack import start_stack

READY_TIMEOUT_S = 2.0
# Every simulated user comes from this machine's address; the per-address abuse limit would
# measure itself, so a stack started for a run exempts loopback (the identity limit stays).
OWN_STACK_ENV = {"STIMULUS_RATE_LIMIT_EXEMPT": "127.0.0.1", "STIMULUS_SANDBOX": "1",
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

    @property
    def database_url(self) -> str:
        assert self.settings.database_url
        return self.settings.database_url


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(base_url.rstrip("/") + "/ready", timeout=READY_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


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
    default_url = f"http://{settings.host}:{settings.port}"
    if host is None and not fresh and _ready(default_url):
        host = default_url
    if host is not None:
        if not _ready(host):
            raise TargetError(f"{host}/ready does not answer 200: start the stack (`stimulus up`) first")
        settings = _database_settings(settings)
        target = Target(host.rstrip("/"), settings, settings.bank_url or _local_bank(settings),
                        started_here=False)
        target.maker_token, target.checker_token = asyncio.run(_operator_tokens(target.database_url))
        yield target
        return
    with _own_stack(settings) as target:
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
                       "STIMULUS_BANK_PORT": str(free_port())})
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
