"""Operator and auditor tokens over real HTTP and the real CLI: they expire, they are listed, and a
revocation holds on the API within seconds."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import httpx

from tests.conftest import TEST_ENV, Stack

GUARDED = "/v1/admin/approvals"


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **TEST_ENV, "DATABASE_URL": stack.database_url, "REDIS_URL": stack.redis_url,
           "STIMULUS_STATE_DIR": str(stack.settings.state_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "stimulus.cli", "admin", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _create(stack: Stack, name: str, *extra: str) -> str:
    done = _cli(stack, "create-token", "--role", "operator", "--name", name, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def _status_until(http: httpx.AsyncClient, token: str, code: str, within_s: float) -> float:
    """Seconds until the guarded route answers 401 `code` to `token`."""
    started = time.monotonic()
    while True:
        response = await http.get(GUARDED, headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 401:
            assert response.json()["code"] == code, response.text
            return time.monotonic() - started
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < within_s, f"still accepted after {within_s} s"
        await asyncio.sleep(0.1)


async def test_a_token_expires(http: httpx.AsyncClient, stack: Stack) -> None:
    token = _create(stack, "short-lived", "--ttl", "3s")
    assert (await http.get(GUARDED, headers={"Authorization": f"Bearer {token}"})).status_code == 200
    waited = await _status_until(http, token, "admin_token_expired", within_s=10)
    assert waited < 10
    listed = _cli(stack, "tokens", "--all")
    assert re.search(r"short-lived\s+operator\s+expired", listed.stdout), listed.stdout
    assert "short-lived" not in _cli(stack, "tokens").stdout


def test_ttl_is_bounded(stack: Stack) -> None:
    for bad in ("0s", "31d", "soon"):
        done = _cli(stack, "create-token", "--role", "auditor", "--ttl", bad)
        assert done.returncode != 0 and "--ttl" in done.stderr, (bad, done.stderr)


async def test_a_revoked_token_is_refused_within_seconds(http: httpx.AsyncClient, stack: Stack) -> None:
    token = _create(stack, "to-be-revoked")
    other = _create(stack, "keeps-working")
    assert (await http.get(GUARDED, headers={"Authorization": f"Bearer {token}"})).status_code == 200
    listed = _cli(stack, "tokens").stdout
    found = re.search(r"^\s*(\d+)\s+to-be-revoked\s+operator\s+active", listed, re.MULTILINE)
    assert found is not None, listed

    revoked = _cli(stack, "revoke", found.group(1), "--by", "operator:alice")
    assert revoked.returncode == 0 and f"revoked {found.group(1)}" in revoked.stdout, revoked.stderr
    assert await _status_until(http, token, "admin_token_revoked", within_s=5) < 5
    assert (await http.get(GUARDED, headers={"Authorization": f"Bearer {other}"})).status_code == 200
    assert re.search(r"to-be-revoked\s+operator\s+revoked", _cli(stack, "tokens", "--all").stdout)

    # Revoking by holder takes every token of theirs; nothing left to revoke is an error.
    assert _cli(stack, "revoke", "--name", "keeps-working").returncode == 0
    assert await _status_until(http, other, "admin_token_revoked", within_s=5) < 5
    again = _cli(stack, "revoke", "--name", "keeps-working")
    assert again.returncode != 0 and "no active token" in again.stderr
    assert _cli(stack, "revoke").returncode != 0


async def test_an_unknown_token_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.get(GUARDED, headers={"Authorization": "Bearer stm_not-a-token"})
    assert response.status_code == 401 and response.json()["code"] == "invalid_admin_token"
