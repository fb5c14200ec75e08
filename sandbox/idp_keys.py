"""The sandbox identity provider's signing keys: one current key, and retired ones kept for a grace period.

Keys live in `keys.json` in the provider's data directory (private JWKs, written atomically), so
the provider keeps its keys across restarts and development tooling that must mint many tokens
fast (the demo, bench, load tests, test fixtures) can sign locally with the current key instead of
asking the provider over HTTP. The API never reads this file: it trusts only what the provider's
JWKS publishes.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key

from kernel.oidc import jws_registry
from sandbox.citizens import SyntheticCitizen, claims_for

KEYS_FILE = "keys.json"
SIGNING_ALGORITHMS = ("EdDSA", "ES256", "RS256")
RSA_KEY_BITS = 2048
DEFAULT_GRACE_S = 3600

SigningJwk = OKPKey | ECKey | RSAKey


def generate_key(algorithm: str) -> SigningJwk:
    key: SigningJwk
    if algorithm == "EdDSA":
        key = OKPKey.generate_key("Ed25519", private=True)
    elif algorithm == "ES256":
        key = ECKey.generate_key("P-256", private=True)
    elif algorithm == "RS256":
        key = RSAKey.generate_key(RSA_KEY_BITS, private=True)
    else:
        raise ValueError(f"the sandbox provider signs with {', '.join(SIGNING_ALGORITHMS)}, not {algorithm!r}")
    return key


@dataclass(frozen=True)
class StoredKey:
    kid: str
    algorithm: str
    private_jwk: dict[str, Any]
    created_at: int
    retire_at: int | None  # None: the current key

    def public_jwk(self) -> dict[str, Any]:
        public = import_key(self.private_jwk).as_dict(private=False)
        return {**public, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


class KeyStore:
    """The provider's keys in `data_dir/keys.json`; the provider process is its only writer."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / KEYS_FILE
        self.keys: list[StoredKey] = []
        if self.path.exists():
            self.keys = [StoredKey(**item) for item in json.loads(self.path.read_text())["keys"]]

    @property
    def current(self) -> StoredKey:
        return next(k for k in self.keys if k.retire_at is None)

    def ensure(self, algorithm: str) -> StoredKey:
        """The current key, made (or rotated to) `algorithm` if it signs with another."""
        if not self.keys:
            return self.rotate(algorithm, grace_s=0)
        if self.current.algorithm != algorithm:
            return self.rotate(algorithm)
        return self.current

    def rotate(self, algorithm: str, grace_s: int = DEFAULT_GRACE_S, now: int | None = None) -> StoredKey:
        """A new current key; the old one stays published (and valid) for `grace_s` seconds."""
        now = int(time.time()) if now is None else now
        key = generate_key(algorithm)
        kid = key.thumbprint()
        kept = [k if k.retire_at is not None else StoredKey(k.kid, k.algorithm, k.private_jwk, k.created_at, now + grace_s)
                for k in self.keys]
        fresh = StoredKey(kid, algorithm, key.as_dict(private=True), now, None)
        self.keys = [fresh, *(k for k in kept if k.retire_at is not None and k.retire_at > now)]
        self._save()
        return fresh

    def published(self, now: int | None = None) -> list[StoredKey]:
        now = int(time.time()) if now is None else now
        return [k for k in self.keys if k.retire_at is None or k.retire_at > now]

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"keys": [k.__dict__ for k in self.keys]}, fh)
        os.replace(tmp, self.path)


class Signer:
    """Signs ID tokens with one of the provider's keys (by default the current one)."""

    def __init__(self, stored: StoredKey, issuer: str) -> None:
        self.kid = stored.kid
        self.algorithm = stored.algorithm
        self.issuer = issuer
        self._key = import_key(stored.private_jwk)
        self._header = {"alg": stored.algorithm, "typ": "JWT", "kid": stored.kid}
        self._registry = jws_registry([stored.algorithm])

    @classmethod
    def from_data_dir(cls, data_dir: Path, issuer: str) -> Signer:
        store = KeyStore(data_dir)
        if not store.keys:
            raise FileNotFoundError(f"no sandbox identity-provider keys in {data_dir} (is it running?)")
        return cls(store.current, issuer)

    def sign(self, claims: dict[str, Any], *, audience: str, ttl_s: int, now: int | None = None) -> str:
        """An ID token carrying `claims`; iss, aud, iat and exp are added unless `claims` sets them."""
        now = int(time.time()) if now is None else now
        full = {"iss": self.issuer, "aud": audience, "iat": now, "exp": now + ttl_s, **claims}
        return jwt.encode(self._header, full, self._key, registry=self._registry)

    def citizen_token(self, citizen: SyntheticCitizen, *, audience: str, ttl_s: int = 24 * 3600,
                      now: int | None = None) -> str:
        return self.sign(claims_for(citizen), audience=audience, ttl_s=ttl_s, now=now)


def _citizen_tokens(data_dir: str, issuer: str, audience: str, first: int, count: int,
                    ttl_s: int) -> list[str]:
    from sandbox.citizens import synthetic_citizen

    signer = Signer.from_data_dir(Path(data_dir), issuer)
    return [signer.citizen_token(synthetic_citizen(n), audience=audience, ttl_s=ttl_s)
            for n in range(first, first + count)]


def mint_citizen_tokens(data_dir: Path, issuer: str, audience: str, first: int, count: int,
                        workers: int = 2, ttl_s: int = 6 * 3600) -> list[str]:
    """Tokens for synthetic citizens first..first+count-1, signed locally in `workers` processes
    with the provider's current key (~10k a second per process with EdDSA)."""
    if count < 2000 or workers <= 1:
        return _citizen_tokens(str(data_dir), issuer, audience, first, count, ttl_s)
    step = -(-count // (workers * 4))
    starts = list(range(first, first + count, step))
    with ProcessPoolExecutor(workers) as pool:
        parts = pool.map(_citizen_tokens, [str(data_dir)] * len(starts), [issuer] * len(starts),
                         [audience] * len(starts), starts,
                         [min(step, first + count - s) for s in starts], [ttl_s] * len(starts))
        return [token for part in parts for token in part]
