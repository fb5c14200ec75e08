"""Session fixtures: real PostgreSQL and Redis from the project's launcher, the API over real HTTP.

Set DATABASE_URL / REDIS_URL to run against existing servers instead of embedded ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as redis_asyncio

from kernel.embedded import free_port
from kernel.servers import RunningStack, migrate_sync, start_stack
from kernel.settings import Settings, load_settings
from sandbox.idp import running_provider
from stimulus.stack import running_api, running_drand_relay

# One sandbox identity provider serves the session (started by the `sandbox_idp` fixture); every
# API a test starts with TEST_ENV trusts it, and fixtures sign citizens' tokens with its key file.
SANDBOX_IDP_DIR = Path(tempfile.mkdtemp(prefix="stimulus-test-idp-"))

TEST_ENV = {
    "STIMULUS_ENV": "development",
    "STIMULUS_IDP_PORT": str(free_port()),
    "STIMULUS_SANDBOX_IDP_DIR": str(SANDBOX_IDP_DIR),
    "STIMULUS_RATE_LIMIT_IDENTITY_PER_MIN": "60",
    "STIMULUS_RATE_LIMIT_ADDRESS_PER_MIN": "0",
    "STIMULUS_WORKERS": "1",
    "STIMULUS_LOG_LEVEL": "WARNING",
    # Small enough that the end-to-end draw test takes the multi-process path large campaigns use.
    "STIMULUS_DRAW_PARALLEL_FROM": "30",
}


@dataclass
class Stack:
    settings: Settings
    running: RunningStack

    @property
    def database_url(self) -> str:
        assert self.settings.database_url
        return self.settings.database_url

    @property
    def redis_url(self) -> str:
        assert self.settings.redis_url
        return self.settings.redis_url


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="stimulus-test-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def stack(state_dir: Path, sandbox_idp: str) -> Iterator[Stack]:
    env = {**os.environ, **TEST_ENV, "STIMULUS_STATE_DIR": str(state_dir)}
    settings = load_settings(env)
    running = start_stack(settings, need_redis=True)
    migrate_sync(running.settings)
    try:
        yield Stack(running.settings, running)
    finally:
        running.stop()


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """A free port below the kernel's ephemeral range (32768+), so no process that binds port 0
    (a worker's listener, a client socket) can take it between this pick and the API's bind."""
    import random
    import socket

    for port in random.sample(range(20_000, 30_000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


@pytest.fixture(scope="session")
def drand_relay_url(stack: Stack) -> Iterator[str]:
    """The sandbox drand relay, over real HTTP; `/fault/...` under it names misbehaving relays."""
    with running_drand_relay(stack.settings, slow_ms=3000) as base:
        yield base


@pytest.fixture(scope="session")
def sandbox_idp() -> Iterator[str]:
    """The session's sandbox identity provider; yields its issuer URL."""
    try:
        with running_provider(SANDBOX_IDP_DIR, int(TEST_ENV["STIMULUS_IDP_PORT"])) as issuer:
            yield issuer
    finally:
        shutil.rmtree(SANDBOX_IDP_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def api_url(stack: Stack, drand_relay_url: str, sandbox_idp: str, metrics_port: int) -> Iterator[str]:
    # metrics_port last: its free port is picked just before the API binds it, not before the
    # relay and the identity provider start and might be handed the same port.
    env = {**TEST_ENV, "STIMULUS_METRICS_PORT": str(metrics_port), "STIMULUS_DRAND_RELAYS": drand_relay_url}
    with running_api(stack.settings, workers=1, extra_env=env) as base:
        yield base


@pytest.fixture(scope="session")
def metrics_url(api_url: str, metrics_port: int) -> str:
    """The session API's Prometheus endpoint, on its own port."""
    return f"http://127.0.0.1:{metrics_port}/metrics"


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    from kernel.db import _init_connection

    conn = await asyncpg.connect(stack.database_url)
    await _init_connection(conn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(stack.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def operator_token(stack: Stack) -> str:
    return _token(stack, "alice", "operator")


@pytest.fixture(scope="session")
def second_operator_token(stack: Stack) -> str:
    return _token(stack, "bob", "operator")


@pytest.fixture(scope="session")
def auditor_token(stack: Stack) -> str:
    return _token(stack, "audrey", "auditor")


def _token(stack: Stack, name: str, role: str) -> str:
    import asyncio

    from kernel import auth

    async def make() -> str:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return await auth.create_token(conn, name, role)
        finally:
            await conn.close()

    return asyncio.run(make())


def settings_with(stack: Stack, **changes: object) -> Settings:
    return replace(stack.settings, **changes)  # type: ignore[arg-type]
