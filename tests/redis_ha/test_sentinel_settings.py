"""Redis through Sentinel in the settings: addresses, the primary's name, passwords from the
environment or from files, and one refusal naming what is malformed; and the clients built from
them authenticating to real sentinels and a real primary."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.exceptions

from kernel.redis_clients import request_client, worker_client
from kernel.settings import ConfigurationError, load_settings
from tests.redis_ha.sentinel_group import SentinelGroup


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"STIMULUS_ENV": "development", "STIMULUS_STATE_DIR": str(tmp_path), **extra}


def test_sentinels_and_passwords(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("primary-secret\n")
    settings = load_settings(_env(
        tmp_path, REDIS_SENTINELS="10.0.0.1:26379, sentinel-b:26380,[::1]:26381",
        REDIS_SENTINEL_MASTER="stimulus", REDIS_PASSWORD_FILE=str(secret),
        REDIS_SENTINEL_PASSWORD="sentinel-secret"))
    assert settings.redis_sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381))
    assert settings.redis_sentinel_master == "stimulus"
    assert settings.redis_password is not None and settings.redis_password.reveal() == b"primary-secret"
    assert settings.redis_sentinel_password is not None
    assert settings.redis_sentinel_password.reveal() == b"sentinel-secret"
    assert "secret" not in repr(settings)
    assert settings.redis_url is not None and settings.redis_url.startswith("redis+sentinel://")
    # a child process handed the same environment plus the displayed URL reads the same settings
    again = load_settings(_env(tmp_path, REDIS_URL=settings.redis_url, REDIS_SENTINELS="10.0.0.1:26379",
                               REDIS_SENTINEL_MASTER="stimulus"))
    assert again.redis_sentinels == (("10.0.0.1", 26379),)


def test_sentinels_mean_production_by_default(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="production"):
        load_settings({"STIMULUS_STATE_DIR": str(tmp_path), "DATABASE_URL": "postgresql://db/x",
                       "REDIS_SENTINELS": "s:26379", "REDIS_SENTINEL_MASTER": "m"})


def test_malformed_sentinel_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(_env(tmp_path, REDIS_SENTINELS="good:26379,nohost,bad:port",
                           REDIS_URL="redis://elsewhere:6379/0"))
    message = str(caught.value)
    assert "'nohost' is not host:port" in message
    assert "'bad:port' is not host:port" in message
    assert "REDIS_SENTINEL_MASTER" in message
    assert "REDIS_URL and REDIS_SENTINELS" in message


def test_one_url_needs_no_sentinel(tmp_path: Path) -> None:
    settings = load_settings(_env(tmp_path, REDIS_URL="redis://127.0.0.1:6379/0"))
    assert settings.redis_sentinels == () and settings.redis_password is None


async def test_clients_authenticate_to_the_sentinels_and_the_primary(
        redis_binary: str, tmp_path: Path) -> None:
    group = SentinelGroup(redis_binary, password="primary-secret", sentinel_password="sentinel-secret")
    try:
        await asyncio.to_thread(group.start)
        (tmp_path / "sentinel-password").write_text("sentinel-secret\n")
        env = _env(tmp_path, **group.env, REDIS_PASSWORD="primary-secret",
                   REDIS_SENTINEL_PASSWORD_FILE=str(tmp_path / "sentinel-password"))
        settings = load_settings(env)
        for client in (request_client(settings, 4), worker_client(settings)):
            async with client:
                await client.set("sentinel-auth", b"1")
                assert await client.get("sentinel-auth") == b"1"
        wrong = load_settings({**env, "REDIS_PASSWORD": "not-it"})
        async with request_client(wrong, 4) as refused:
            with pytest.raises(redis.exceptions.AuthenticationError):
                await refused.ping()
    finally:
        await asyncio.to_thread(group.stop)
