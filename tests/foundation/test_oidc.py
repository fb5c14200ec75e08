"""Identity tokens as the city's OpenID Connect provider issues them, over real HTTP.

The module runs its own sandbox provider (it rotates keys, which the session's provider must not)
and its own API trusting it, with a short JWKS refetch floor so the floor can be watched.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from kernel.embedded import free_port
from sandbox.citizens import claims_for, synthetic_citizen
from sandbox.idp import running_provider
from sandbox.idp_keys import KeyStore, Signer
from stimulus.stack import running_api
from tests.conftest import TEST_ENV, Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

REFETCH_FLOOR_S = 5
MAX_LIFETIME_S = 6 * 3600
ADMIN_AUDIENCE = "stimulus-admin"
PROBE = "/v1/campaigns/no-such-campaign/registrations/me"


class Provider:
    def __init__(self, issuer: str, data_dir: Path) -> None:
        self.issuer = issuer
        self.data_dir = data_dir

    def signer(self) -> Signer:
        return Signer.from_data_dir(self.data_dir, self.issuer)

    def citizen(self, number: int, ttl_s: int = 600, **claims: Any) -> str:
        return self.signer().sign({**claims_for(synthetic_citizen(number)), **claims},
                                  audience="stimulus", ttl_s=ttl_s)

    async def rotate(self, algorithm: str | None = None, grace_s: int = 600) -> str:
        async with httpx.AsyncClient(base_url=self.issuer, timeout=30) as client:
            response = await client.post("/rotate", json={"algorithm": algorithm, "grace_s": grace_s})
            assert response.status_code == 200, response.text
            kid: str = response.json()["kid"]
            return kid

    async def jwks_served(self) -> int:
        async with httpx.AsyncClient(base_url=self.issuer, timeout=30) as client:
            served: int = (await client.get("/health")).json()["jwks_served"]
            return served

    async def minted(self, body: dict[str, Any]) -> str:
        async with httpx.AsyncClient(base_url=self.issuer, timeout=30) as client:
            response = await client.post("/tokens", json=body)
            assert response.status_code == 200, response.text
            token: str = response.json()["tokens"][0]
            return token


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    data_dir = tmp_path_factory.mktemp("oidc-idp")
    with running_provider(data_dir, free_port()) as issuer:
        yield Provider(issuer, data_dir)


@pytest.fixture(scope="module")
def oidc_api(stack: Stack, provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from dataclasses import replace

    env = {**TEST_ENV, "STIMULUS_IDP_ISSUER": provider.issuer,
           "STIMULUS_IDP_DISCOVERY_URL": f"{provider.issuer}/.well-known/openid-configuration",
           "STIMULUS_SANDBOX_IDP_DIR": str(provider.data_dir),
           "STIMULUS_IDP_JWKS_REFETCH_FLOOR_S": str(REFETCH_FLOOR_S),
           "STIMULUS_IDP_MAX_TOKEN_LIFETIME_S": str(MAX_LIFETIME_S),
           "STIMULUS_OPERATOR_OIDC_AUDIENCE": ADMIN_AUDIENCE,
           "STIMULUS_OPERATOR_ROLE_CLAIM": "roles"}
    state_dir = tmp_path_factory.mktemp("oidc-api")
    with running_api(replace(stack.settings, state_dir=state_dir), workers=1, extra_env=env) as base:
        yield base


@pytest.fixture
async def api(oidc_api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=oidc_api, timeout=30) as client:
        yield client


async def refused(api: httpx.AsyncClient, token: str) -> str:
    response = await api.get(PROBE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    code: str = response.json()["code"]
    return code


async def accepted(api: httpx.AsyncClient, token: str) -> None:
    # A verified citizen who never registered: 404, never 401.
    response = await api.get(PROBE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404, response.text


async def wait_out_floor() -> None:
    await asyncio.sleep(REFETCH_FLOOR_S + 0.5)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


async def test_rotation_new_key_verifies_and_old_key_lasts_its_grace(api: httpx.AsyncClient,
                                                                     provider: Provider) -> None:
    before = provider.citizen(1)
    await accepted(api, before)
    await wait_out_floor()
    new_kid = await provider.rotate(grace_s=600)
    after = provider.citizen(2)
    assert json.loads(base64.urlsafe_b64decode(after.split(".")[0] + "=="))["kid"] == new_kid
    await accepted(api, after)  # a kid the API did not hold: it fetched the JWKS again
    old_key = next(k for k in KeyStore(provider.data_dir).keys if k.retire_at is not None)
    old = Signer(old_key, provider.issuer).sign(claims_for(synthetic_citizen(3)), audience="stimulus",
                                               ttl_s=600)
    await accepted(api, old)  # the retired key is still published for its grace period
    await accepted(api, before)


async def test_a_key_withdrawn_from_the_jwks_is_trusted_no_more(api: httpx.AsyncClient,
                                                                provider: Provider) -> None:
    await wait_out_floor()
    await provider.rotate(grace_s=0)
    doomed = provider.signer()
    cached = doomed.citizen_token(synthetic_citizen(4), audience="stimulus", ttl_s=600)
    await accepted(api, cached)
    await wait_out_floor()
    await provider.rotate(grace_s=0)  # no grace: the key leaves the JWKS at once
    await accepted(api, provider.citizen(5))  # the API fetches the JWKS without the doomed key
    assert await refused(api, cached) == "token_unknown_key"  # its cached verdict went too
    fresh = doomed.citizen_token(synthetic_citizen(4), audience="stimulus", ttl_s=300)
    assert await refused(api, fresh) == "token_unknown_key"


async def test_unknown_kid_fetches_once_then_401_and_a_burst_holds_the_floor(
        api: httpx.AsyncClient, provider: Provider, tmp_path: Path) -> None:
    stranger = Signer(KeyStore(tmp_path).ensure("EdDSA"), provider.issuer)
    await wait_out_floor()
    served = await provider.jwks_served()
    assert await refused(api, stranger.citizen_token(synthetic_citizen(6), audience="stimulus")) \
        == "token_unknown_key"
    assert await provider.jwks_served() == served + 1
    # A burst of made-up kids within the floor: all refused, none fetches the JWKS, so a key
    # rotated in meanwhile stays unknown until the floor has passed.
    await provider.rotate(grace_s=600)
    fresh = provider.citizen(7)
    now = int(time.time())
    forged = [unsigned({"alg": "EdDSA", "kid": f"made-up-{n}"}, {**claims_for(synthetic_citizen(8)),
                       "iss": provider.issuer, "aud": "stimulus", "iat": now, "exp": now + 600}, b"x" * 64)
              for n in range(50)]
    codes = await asyncio.gather(*[refused(api, token) for token in forged])
    assert set(codes) == {"token_unknown_key"}
    assert await refused(api, fresh) == "token_unknown_key"
    assert await provider.jwks_served() == served + 1
    await wait_out_floor()
    await accepted(api, fresh)
    assert await provider.jwks_served() == served + 2


async def test_wrong_algorithms_are_refused(api: httpx.AsyncClient, provider: Provider) -> None:
    signer = provider.signer()
    public = next(k for k in KeyStore(provider.data_dir).keys if k.kid == signer.kid).public_jwk()
    now = int(time.time())
    claims = {**claims_for(synthetic_citizen(9)), "iss": provider.issuer, "aud": "stimulus",
              "iat": now, "exp": now + 600}
    header = {"alg": "HS256", "kid": signer.kid, "typ": "JWT"}
    signing_input = unsigned(header, claims).rsplit(".", 1)[0]
    # The classic confusion: the public key (as published, and as raw bytes) used as an HMAC secret.
    for secret in (json.dumps(public).encode(), base64.urlsafe_b64decode(public["x"] + "==")):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert await refused(api, f"{signing_input}.{b64(mac)}") == "token_algorithm"
    assert await refused(api, unsigned({"alg": "none", "kid": signer.kid}, claims)) == "token_algorithm"
    # A real signature whose alg is not on the list (ES384 is not configured).
    es384 = unsigned({"alg": "ES384", "kid": signer.kid}, claims, b"y" * 96)
    assert await refused(api, es384) == "token_algorithm"


async def test_over_long_lifetimes_are_refused(api: httpx.AsyncClient, provider: Provider) -> None:
    signer = provider.signer()
    citizen = claims_for(synthetic_citizen(10))
    assert await refused(api, signer.sign(citizen, audience="stimulus", ttl_s=MAX_LIFETIME_S + 3600)) \
        == "token_lifetime"
    forever = signer.sign({**citizen, "exp": 10**30}, audience="stimulus", ttl_s=600)
    assert await refused(api, forever) == "token_lifetime"
    backdated = signer.sign({**citizen, "iat": int(time.time()) - 2 * MAX_LIFETIME_S}, audience="stimulus",
                            ttl_s=600)
    assert await refused(api, backdated) == "token_lifetime"
    not_yet = signer.sign({**citizen, "nbf": int(time.time()) + 3600}, audience="stimulus", ttl_s=600)
    assert await refused(api, not_yet) == "token_not_yet_valid"
    await accepted(api, signer.sign(citizen, audience="stimulus", ttl_s=MAX_LIFETIME_S))


async def test_wrong_issuer_or_audience_is_refused(api: httpx.AsyncClient, provider: Provider) -> None:
    signer = provider.signer()
    citizen = claims_for(synthetic_citizen(11))
    assert await refused(api, signer.sign({**citizen, "iss": "https://elsewhere.example"}, audience="stimulus",
                                          ttl_s=600)) == "token_issuer"
    assert await refused(api, signer.sign(citizen, audience="another-app", ttl_s=600)) == "token_audience"
    await accepted(api, signer.sign(citizen, audience=["another-app", "stimulus"], ttl_s=600))  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["ES256", "RS256", "EdDSA"])
async def test_each_configured_algorithm_is_accepted(api: httpx.AsyncClient, provider: Provider,
                                                     algorithm: str) -> None:
    await wait_out_floor()
    await provider.rotate(algorithm=algorithm, grace_s=600)
    token = await provider.minted({"first": 12, "count": 1, "audience": "stimulus", "ttl_s": 600})
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == algorithm
    await accepted(api, token)


async def test_operator_signs_in_with_an_id_token_and_gets_the_claimed_role(
        api: httpx.AsyncClient, provider: Provider, db: asyncpg.Connection) -> None:
    async def as_(roles: Any, name: str = "olga", audience: str = ADMIN_AUDIENCE) -> dict[str, str]:
        token = await provider.minted({"claims": {"sub": f"staff-{name}", "preferred_username": name,
                                                  "roles": roles}, "audience": audience, "ttl_s": 600})
        return {"Authorization": f"Bearer {token}"}

    assert (await api.get("/v1/admin/approvals", headers=await as_(["auditor"]))).status_code == 200
    from kernel.sample import sample_campaign
    from tests.foundation.helpers import new_campaign_id

    campaign_id = new_campaign_id("oidc")
    spec = sample_campaign(campaign_id, 30)
    refused_auditor = await api.post("/v1/admin/campaigns", json=spec, headers=await as_("auditor"))
    assert refused_auditor.status_code == 403 and refused_auditor.json()["code"] == "role_required"
    no_role = await api.get("/v1/admin/approvals", headers=await as_([]))
    assert no_role.status_code == 403 and no_role.json()["code"] == "role_required"
    citizen_audience = await api.get("/v1/admin/approvals", headers=await as_("operator", audience="stimulus"))
    assert citizen_audience.status_code == 401 and citizen_audience.json()["code"] == "token_audience"
    created = await api.post("/v1/admin/campaigns", json=spec,
                             headers=await as_(["auditor", "operator"], name="olga"))
    assert created.status_code == 201, created.text
    actors = await db.fetch("SELECT actor FROM audit_log WHERE subject = $1", campaign_id)
    assert [r["actor"] for r in actors] == ["operator:olga"]
    # A citizen's token is not an operator's: the admin API refuses it.
    citizen = await api.get("/v1/admin/approvals", headers={"Authorization": f"Bearer {provider.citizen(13)}"})
    assert citizen.status_code == 401


async def test_the_cli_prints_tokens_from_the_running_sandbox_provider(api: httpx.AsyncClient,
                                                                       provider: Provider) -> None:
    import os
    import sys

    env = {**os.environ, **TEST_ENV, "STIMULUS_IDP_ISSUER": provider.issuer}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stimulus.cli", "idp", "token", "--citizen", "20", "--count", "2",
        env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    tokens = out.decode().split()
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    for token in tokens:
        await accepted(api, token)
