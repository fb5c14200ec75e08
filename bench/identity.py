"""Micro-benchmark of citizen identity-token verification: uncached (signature, claims, mapping) and
cached (the LRU hit every later request of the same citizen takes), per algorithm, in CPU time.

`python -m bench.identity [EdDSA ES256 RS256]`; the best of 9 rounds of 3,000 distinct tokens, and
of 7 rounds of 100,000 cached look-ups. No server is involved: the keys are handed to the verifier
as a JWKS fetch would.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator
from pathlib import Path

from joserfc.jwk import import_key

from kernel.identity import TokenVerifier
from kernel.oidc import IdTokenVerifier, ProviderKeys
from sandbox.citizens import synthetic_citizen
from sandbox.idp_keys import KeyStore, Signer

TOKENS = 3000
CACHED_CALLS = 100_000


def _verify_each(verifier: TokenVerifier, tokens: Iterator[str]) -> None:
    verifier.verify_known(next(tokens))


def measure(algorithm: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        stored = KeyStore(Path(tmp)).ensure(algorithm)
    keys = ProviderKeys("http://idp.invalid/.well-known/openid-configuration", "https://idp.invalid")
    keys.keys = {stored.kid: import_key(stored.public_jwk())}  # type: ignore[dict-item]
    verifier = TokenVerifier(IdTokenVerifier(keys, audience="stimulus", algorithms=["EdDSA", "ES256", "RS256"],
                                             clock_skew_s=60, max_lifetime_s=86400), b"p" * 32, 60)
    signer = Signer(stored, "https://idp.invalid")
    tokens = [signer.citizen_token(synthetic_citizen(n), audience="stimulus") for n in range(TOKENS)]
    rounds = []
    for _ in range(9):
        verifier._cache.clear()
        rounds.append(timeit.Timer(functools.partial(_verify_each, verifier, iter(tokens)),
                                   timer=time.process_time).timeit(TOKENS) / TOKENS)
    cached = min(timeit.Timer(lambda: verifier.verify_known(tokens[0]),
                              timer=time.process_time).timeit(CACHED_CALLS) / CACHED_CALLS for _ in range(7))
    return min(rounds) * 1e6, cached * 1e6


def main() -> None:
    for algorithm in sys.argv[1:] or ["EdDSA", "ES256", "RS256"]:
        uncached_us, cached_us = measure(algorithm)
        print(f"{algorithm:6} uncached {uncached_us:7.1f} us   cached {cached_us:5.2f} us")


if __name__ == "__main__":
    main()
