"""The Sentinel group fixture (a fresh primary, replica and three sentinels per test), and the
sandbox bank the issuance tests use, reused here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_ha.sentinel_group import SentinelGroup, redis_server_binary
from tests.wallet.conftest import admin as admin  # the wallet tests' fixture, reused
from tests.wallet.conftest import bank as bank  # the wallet tests' fixture, reused


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary, origin = redis_server_binary()
    print(f"\nRedis Sentinel group: {origin} server {binary}")
    return binary


@pytest.fixture
def sentinel_group(redis_binary: str) -> Iterator[SentinelGroup]:
    group = SentinelGroup(redis_binary)
    try:
        group.start()
        yield group
    finally:
        group.stop()
