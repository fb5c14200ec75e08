"""Production mode over real processes: an incomplete configuration is refused in one message naming
everything missing; a complete one (secrets given as files) starts, mounts nothing from the sandbox,
and two API processes given the same files agree on who a citizen is and on the signing key."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from kernel import auth
from kernel.embedded import free_port
from kernel.sample import sample_campaign
from kernel.servers import migrate_sync
from kernel.settings import Settings, load_settings
from kernel.signing import SigningKey, verify_signature
from lottery import drand
from lottery.registration import receipt_message
from sandbox.citizens import synthetic_citizen
from sandbox.idp import running_provider
from sandbox.idp_keys import Signer
from stimulus.stack import running_api, wait_http_ok
from tests.conftest import TEST_ENV, Stack

ISSUER = "https://id.city.example"
AUDIENCE = "stimulus-production-test"
# What a production process must not inherit from the test session's development setup.
DEVELOPMENT_ONLY = ("STIMULUS_ENV", "STIMULUS_SANDBOX", "STIMULUS_BANK_URL", "STIMULUS_BANKS",
                    "STIMULUS_PEPPER", "STIMULUS_SERVICE_KEY", "STIMULUS_BANK_API_KEY",
                    "STIMULUS_IDP_ISSUER", "STIMULUS_IDP_AUDIENCE", "STIMULUS_IDP_PUBLIC_KEYS",
                    "STIMULUS_BANK_PUBLIC_KEYS")


def _bare_env(stack: Stack, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DEVELOPMENT_ONLY and not k.endswith("_FILE")}
    env.update({k: v for k, v in TEST_ENV.items() if k != "STIMULUS_ENV"})
    env.update(DATABASE_URL=stack.database_url, REDIS_URL=stack.redis_url,
               STIMULUS_STATE_DIR=str(state_dir), COLUMNS="300")
    env.update(extra)
    return env


def _refusal(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "stimulus.cli", *command], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stderr


def test_incomplete_production_configuration_is_refused_naming_everything(stack: Stack,
                                                                          tmp_path: Path) -> None:
    env = _bare_env(stack, tmp_path)
    message = _refusal(["up", "--port", str(free_port())], env)
    assert message.count("refusing to start in production") == 1, message
    for missing in ("STIMULUS_PEPPER", "STIMULUS_SERVICE_KEY", "STIMULUS_IDP_ISSUER",
                    "STIMULUS_IDP_AUDIENCE", "STIMULUS_BANKS", "STIMULUS_BANK_API_KEY"):
        assert missing in message, (missing, message)
    assert not (tmp_path / "secrets").exists(), "production generated a secret"
    assert not (tmp_path / "logs").exists(), "production started something"

    # Malformed values are named as such, each bank's URL and key is asked for, and a worker is
    # refused with the same message as the API.
    (tmp_path / "pepper").write_text("not hex\n")
    (tmp_path / "service").write_text("ab" * 16 + "\n")
    env.update(STIMULUS_PEPPER_FILE=str(tmp_path / "pepper"),
               STIMULUS_SERVICE_KEY_FILE=str(tmp_path / "service"),
               STIMULUS_BANK_API_KEY_FILE=str(tmp_path / "absent"),
               STIMULUS_BANKS="ICBC,CCB=https://ccb.example/wallet",
               STIMULUS_BANK_PUBLIC_KEYS="CCB:abcd", STIMULUS_SANDBOX="1")
    message = _refusal(["worker", "notifications"], env)
    assert message.count("refusing to start in production") == 1, message
    for named in ("STIMULUS_PEPPER: not hexadecimal", "STIMULUS_SERVICE_KEY: 16 bytes, expected 32",
                  f"STIMULUS_BANK_API_KEY_FILE: cannot read {tmp_path / 'absent'}",
                  "bank ICBC: no URL", "bank ICBC: no pinned response key",
                  "STIMULUS_BANK_PUBLIC_KEYS (CCB): 2 bytes, expected 32", "STIMULUS_SANDBOX",
                  "STIMULUS_IDP_ISSUER", "STIMULUS_IDP_AUDIENCE"):
        assert named in message, (named, message)
    assert "bank CCB: no URL" not in message


class Production:
    """A complete production configuration whose secrets are files, on a database of its own."""

    def __init__(self, stack: Stack, root: Path) -> None:
        # The city's provider: a sandbox one posing as https://id.city.example, reached on loopback.
        self.idp_dir, self.idp_port = root / "idp", free_port()
        self.service_key = SigningKey.generate()
        self.root = root
        files = {
            "STIMULUS_PEPPER_FILE": secrets.token_bytes(32).hex() + "\n",
            "STIMULUS_SERVICE_KEY_FILE": self.service_key.seed_bytes().hex() + "\n",
            "STIMULUS_BANK_API_KEY_FILE": secrets.token_urlsafe(24) + "\n",
            "STIMULUS_BANK_PUBLIC_KEYS_FILE": "".join(
                f"{code}:{SigningKey.generate().public_bytes.hex()}\n" for code in ("ICBC", "CCB")),
        }
        secrets_dir = root / "secrets-mounted"
        secrets_dir.mkdir()
        extra = {}
        for name, content in files.items():
            path = secrets_dir / name.lower()
            path.write_text(content)
            extra[name] = str(path)
        self.database = f"production_{secrets.token_hex(4)}"
        asyncio.run(self._create_database(stack.database_url))
        self.env = _bare_env(
            stack, root / "state", **extra,
            DATABASE_URL=stack.database_url.replace("/postgres?", f"/{self.database}?"),
            REDIS_URL=stack.redis_url.rsplit("/", 1)[0] + "/5",
            STIMULUS_BANKS="ICBC=http://127.0.0.1:9/banks/ICBC/v1,CCB=http://127.0.0.1:9/banks/CCB/v1",
            STIMULUS_IDP_ISSUER=ISSUER, STIMULUS_IDP_AUDIENCE=AUDIENCE,
            STIMULUS_IDP_DISCOVERY_URL=f"http://127.0.0.1:{self.idp_port}/.well-known/openid-configuration",
        )

    async def _create_database(self, url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)

    def token(self, number: int) -> str:
        signer = Signer.from_data_dir(self.idp_dir, ISSUER)
        return signer.citizen_token(synthetic_citizen(number), audience=AUDIENCE, ttl_s=600)


@pytest.fixture(scope="module")
def production(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    found = Production(stack, tmp_path_factory.mktemp("production"))
    settings = found.settings
    assert not settings.sandbox
    migrate_sync(settings)
    with running_provider(found.idp_dir, found.idp_port, issuer=ISSUER):
        yield found


# What the sandbox parties answer at, once (or still) beside the API: never a route of the API.
SANDBOX_PATHS = ("/sandbox/idp/tokens", "/tokens", "/rotate", "/jwks", "/.well-known/openid-configuration",
                 "/admin/knobs")


def test_complete_production_start_serves_without_sandbox(production: Production) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "stimulus.cli", "up", "--port", str(port)],
                               env=production.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(base + "/ready", timeout_s=120, process=process)  # type: ignore[arg-type]
        schema = httpx.get(base + "/schema/openapi.json", timeout=10).json()
        assert schema["paths"], schema
        assert not any("sandbox" in p for p in schema["paths"]), schema["paths"].keys()
        for path in SANDBOX_PATHS:
            for method in ("GET", "POST"):
                response = httpx.request(method, base + path, json={}, timeout=10)
                assert response.status_code == 404, (method, path, response.status_code)
        assert not (production.root / "state" / "secrets").exists(), "production generated a secret"
        key = production.settings.service_key
        assert httpx.get(base + "/v1/keys", timeout=10).json() == {key.key_id: key.public_bytes.hex()}
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert "sandbox bank" not in output, output


@pytest.fixture
def two_apis(production: Production) -> Iterator[tuple[str, str]]:
    settings = production.settings
    env = {k: v for k, v in production.env.items() if k.startswith("STIMULUS_")}
    # Two nodes share nothing on disk: each its own state directory, only the secret files alike.
    node_a, node_b = (replace(settings, state_dir=production.root / name) for name in ("a", "b"))
    with running_api(node_a, workers=1, extra_env=env) as first, \
            running_api(node_b, workers=1, extra_env=env) as second:
        yield first, second


def test_two_nodes_with_the_same_secret_files_agree(production: Production,
                                                    two_apis: tuple[str, str]) -> None:
    first, second = two_apis
    settings = production.settings

    async def open_campaign() -> str:
        conn = await asyncpg.connect(settings.database_url)
        try:
            token = await auth.create_token(conn, "production-test", "operator")
        finally:
            await conn.close()
        campaign_id = f"prod-{secrets.token_hex(3)}"
        spec = sample_campaign(campaign_id, 12)
        # A production draw takes drand's round from after registration closes.
        closes = datetime.fromisoformat(spec["registration_closes_at"]).timestamp()
        spec["beacon"] = {"kind": "drand-quicknet",
                          "round": int(closes - drand.GENESIS_TIME) // drand.PERIOD_SECONDS + 100}
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=first, timeout=30, headers=headers) as client:
            created = await client.post("/v1/admin/campaigns", json=spec)
            assert created.status_code == 201, created.text
            opened = await client.post(f"/v1/admin/campaigns/{campaign_id}/open")
            assert opened.status_code == 200, opened.text
        return campaign_id

    campaign_id = asyncio.run(open_campaign())
    headers = {"Authorization": f"Bearer {production.token(7)}"}
    path = f"/v1/campaigns/{campaign_id}/registrations"
    at_first = httpx.post(first + path, json={}, headers=headers, timeout=30)
    assert at_first.status_code == 201, at_first.text
    # The second node recognises the citizen (same id_hmac): the same registration, not a new one.
    at_second = httpx.post(second + path, json={}, headers=headers, timeout=30)
    assert at_second.status_code == 200, at_second.text
    assert at_second.json()["ticket"] == at_first.json()["ticket"]
    assert at_second.json()["leaf_hex"] == at_first.json()["leaf_hex"]

    keys = [httpx.get(base + "/v1/keys", timeout=10).json() for base in (first, second)]
    assert keys[0] == keys[1] == {settings.service_key.key_id: settings.service_key.public_bytes.hex()}
    for answer in (at_first, at_second):
        receipt = answer.json()
        assert receipt["key_id"] == settings.service_key.key_id
        message = receipt_message(receipt["campaign_id"], receipt["ticket"], receipt["leaf_hex"],
                                  receipt["registered_at"], receipt["key_id"])
        assert verify_signature(settings.service_key.public_bytes,
                                bytes.fromhex(receipt["signature_hex"]), message)
    mine = httpx.get(second + path + "/me", headers=headers, timeout=10)
    assert mine.status_code == 200, mine.text
    assert mine.json()["receipt"] == at_first.json()
