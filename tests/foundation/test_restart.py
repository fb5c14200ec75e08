"""The stack restarted keeps its data; the launcher reuses the same state directory."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import asyncpg
import httpx

from kernel.servers import migrate_sync, start_stack
from kernel.settings import load_settings
from stimulus.stack import running_api
from tests.conftest import TEST_ENV
from tests.foundation.helpers import citizen_token


def test_restart_keeps_registrations_and_secrets(sandbox_idp: str) -> None:
    if os.environ.get("DATABASE_URL"):
        return  # restarting is about the embedded servers
    with tempfile.TemporaryDirectory(prefix="stimulus-restart-") as tmp:
        env = {**os.environ, **TEST_ENV, "STIMULUS_STATE_DIR": tmp}
        settings = load_settings(env)
        stack = start_stack(settings, need_redis=True)
        try:
            migrate_sync(stack.settings)
            token = asyncio.run(_operator(stack.settings.database_url or ""))
            with running_api(stack.settings, workers=1, extra_env=TEST_ENV) as base:
                from kernel.sample import sample_campaign

                with httpx.Client(base_url=base, timeout=30) as client:
                    headers = {"Authorization": f"Bearer {token}"}
                    client.post("/v1/admin/campaigns", json=sample_campaign("restart-1", 60),
                                headers=headers).raise_for_status()
                    client.post("/v1/admin/campaigns/restart-1/open", headers=headers).raise_for_status()
                    receipt = client.post("/v1/campaigns/restart-1/registrations", headers={
                        "Authorization": f"Bearer {citizen_token(stack.settings, 1)}"}).json()
        finally:
            stack.stop()
        again = load_settings(env)
        assert again.service_key.key_id == settings.service_key.key_id
        assert again.pepper.reveal() == settings.pepper.reveal()
        stack = start_stack(again, need_redis=True)
        try:
            assert migrate_sync(stack.settings) == []
            with running_api(stack.settings, workers=1, extra_env=TEST_ENV) as base, \
                    httpx.Client(base_url=base, timeout=30) as client:
                own = client.get("/v1/campaigns/restart-1/registrations/me", headers={
                    "Authorization": f"Bearer {citizen_token(stack.settings, 1)}"})
                assert own.status_code == 200
                assert own.json()["receipt"] == receipt
                assert client.get("/ready").status_code == 200
        finally:
            stack.stop()
        assert (Path(tmp) / "postgres" / "PG_VERSION").exists()


async def _operator(database_url: str) -> str:
    from kernel import auth

    conn = await asyncpg.connect(database_url)
    try:
        return await auth.create_token(conn, "restart", "operator")
    finally:
        await conn.close()
