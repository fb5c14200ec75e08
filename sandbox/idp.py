"""The sandbox identity provider: an OpenID Connect provider for synthetic citizens and operators.

It publishes what a city's provider publishes (the discovery document at
`/.well-known/openid-configuration` and the JWKS at `/jwks`), signs ID tokens with a configurable
algorithm (EdDSA, ES256 or RS256), and rotates its key on request, keeping the old key in the JWKS
for a grace period, so the API's verifier is exercised over real HTTP exactly as in production.
Instead of a sign-in flow it mints tokens on request (`POST /tokens`): for a range of synthetic
citizens, for one explicit identity, or with arbitrary claims (operators' roles).

Run it as `python -m sandbox.idp --port 8200 --data-dir DIR`; `stimulus up`, the demo, bench and
the test session start it. It is never started in production, and nothing in the product trusts
it except through the issuer and discovery URL the settings name.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import httpx
import msgspec
from litestar import Litestar, get, post
from litestar.exceptions import HTTPException

from sandbox.citizens import citizen_claims, claims_for, synthetic_citizen
from sandbox.idp_keys import DEFAULT_GRACE_S, SIGNING_ALGORITHMS, KeyStore, Signer

MAX_TOKENS_PER_REQUEST = 1000
MIN_TTL_S = 60
MAX_TTL_S = 7 * 24 * 3600
MAX_BODY_BYTES = 64 * 1024
DEFAULT_AUDIENCE = "stimulus"
READY_TIMEOUT_S = 30.0


class TokenRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A range of synthetic citizens, one explicit citizen (`resident_id`), or free `claims`."""

    first: int = 0
    count: int = 1
    resident_id: str | None = None
    phone: str = "13800000000"
    district: str = "430102"
    city: str = "4301"
    social_insurance_city: str | None = "4301"
    claims: dict[str, Any] | None = None
    audience: str = DEFAULT_AUDIENCE
    ttl_s: int = 3600


class RotateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    algorithm: str | None = None
    grace_s: int = DEFAULT_GRACE_S


class Provider:
    def __init__(self, data_dir: Path, issuer: str, algorithm: str, public_url: str | None = None) -> None:
        self.issuer = issuer.rstrip("/")
        # Where it is reached, when that is not the issuer (a test posing as an https provider).
        self.public_url = (public_url or issuer).rstrip("/")
        self.store = KeyStore(data_dir)
        self.signer = Signer(self.store.ensure(algorithm), self.issuer)
        self.jwks_served = 0  # tests watch how often a verifier fetches the keys

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.public_url}/jwks",
            "token_endpoint": f"{self.public_url}/tokens",
            "authorization_endpoint": f"{self.public_url}/authorize",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        }

    def jwks(self) -> dict[str, Any]:
        self.jwks_served += 1
        return {"keys": [k.public_jwk() for k in self.store.published()]}

    def rotate(self, algorithm: str | None, grace_s: int) -> str:
        fresh = self.store.rotate(algorithm or self.signer.algorithm, grace_s=grace_s)
        self.signer = Signer(fresh, self.issuer)
        return fresh.kid

    def tokens(self, request: TokenRequest) -> list[str]:
        if not 1 <= request.count <= MAX_TOKENS_PER_REQUEST or request.first < 0:
            raise HTTPException(status_code=400, detail=f"count must be 1-{MAX_TOKENS_PER_REQUEST}")
        if not MIN_TTL_S <= request.ttl_s <= MAX_TTL_S:
            raise HTTPException(status_code=400, detail=f"ttl_s must be {MIN_TTL_S}-{MAX_TTL_S}")
        sign = self.signer.sign
        if request.claims is not None:
            return [sign(request.claims, audience=request.audience, ttl_s=request.ttl_s)]
        if request.resident_id is not None:
            claims = citizen_claims(subject=request.resident_id, phone=request.phone,
                                    district=request.district, city=request.city,
                                    social_insurance_city=request.social_insurance_city)
            return [sign(claims, audience=request.audience, ttl_s=request.ttl_s)]
        return [sign(claims_for(synthetic_citizen(n)), audience=request.audience, ttl_s=request.ttl_s)
                for n in range(request.first, request.first + request.count)]


def create_app(provider: Provider) -> Litestar:
    @get("/health", sync_to_thread=False)
    def health() -> dict[str, Any]:
        return {"status": "live", "issuer": provider.issuer, "kid": provider.signer.kid,
                "jwks_served": provider.jwks_served}

    @get("/.well-known/openid-configuration", sync_to_thread=False)
    def discovery() -> dict[str, Any]:
        return provider.discovery()

    @get("/jwks", sync_to_thread=False)
    def jwks() -> dict[str, Any]:
        return provider.jwks()

    @post("/tokens", status_code=200, sync_to_thread=False)
    def tokens(data: TokenRequest) -> dict[str, Any]:
        return {"sandbox": True, "kid": provider.signer.kid, "tokens": provider.tokens(data)}

    @post("/rotate", status_code=200, sync_to_thread=False)
    def rotate(data: RotateRequest) -> dict[str, str]:
        if data.algorithm is not None and data.algorithm not in SIGNING_ALGORITHMS:
            raise HTTPException(status_code=400, detail=f"algorithm must be one of {SIGNING_ALGORITHMS}")
        if not 0 <= data.grace_s <= MAX_TTL_S:
            raise HTTPException(status_code=400, detail=f"grace_s must be 0-{MAX_TTL_S}")
        return {"kid": provider.rotate(data.algorithm, data.grace_s), "algorithm": provider.signer.algorithm}

    return Litestar(route_handlers=[health, discovery, jwks, tokens, rotate],
                    request_max_body_size=MAX_BODY_BYTES, openapi_config=None)


async def _serve(provider: Provider, host: str, port: int) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(create_app(provider), address=host, port=port, interface=Interfaces.ASGI,
                    http=HTTPModes.http1, websockets=False, log_level=LogLevels.warning, log_access=False)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    await server.serve()


def command(host: str, port: int, data_dir: Path, issuer: str | None = None,
            algorithm: str = "EdDSA") -> list[str]:
    """The command line that starts the provider (for supervisors and fixtures)."""
    return [sys.executable, "-m", "sandbox.idp", "--host", host, "--port", str(port),
            "--data-dir", str(data_dir), "--issuer", issuer or f"http://{host}:{port}",
            "--public-url", f"http://{host}:{port}", "--algorithm", algorithm]


def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None,
               timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the sandbox identity provider exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sandbox identity provider at {url} did not come up")
        time.sleep(0.1)


@contextmanager
def running_provider(data_dir: Path, port: int, host: str = "127.0.0.1", algorithm: str = "EdDSA",
                     issuer: str | None = None) -> Iterator[str]:
    """Run the provider as a child process for the block; yields the URL it is reached at (its
    issuer too, unless another `issuer` is given)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    with open(data_dir / "idp.log", "ab") as log:
        process = subprocess.Popen(command(host, port, data_dir, issuer or url, algorithm),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8200, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True,
              help="where the provider keeps its keys")
@click.option("--issuer", default=None, help="the `iss` of its tokens [default: http://HOST:PORT]")
@click.option("--public-url", default=None, help="where it is reached, for its discovery document [default: the issuer]")
@click.option("--algorithm", type=click.Choice(SIGNING_ALGORITHMS), default="EdDSA", show_default=True,
              help="what the current key signs with (a different one rotates the key)")
def main(host: str, port: int, data_dir: Path, issuer: str | None, public_url: str | None,
         algorithm: str) -> None:
    """Serve the sandbox OpenID Connect provider until a signal."""
    import uvloop

    provider = Provider(data_dir, issuer or f"http://{host}:{port}", algorithm, public_url)
    uvloop.run(_serve(provider, host, port))


if __name__ == "__main__":
    main()
