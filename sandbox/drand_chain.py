"""The sandbox drand chain's signer: quicknet's scheme with a secret key that is public on purpose.

`lottery.drand.SANDBOX` pins the chain's public parameters; this module holds the other half, so a
demo or a test can have its rounds signed without reaching the internet. Because the key is
published here, anyone can compute any round's signature in advance: a draw on this chain is
predictable, and the bundle and the verifier say so.
"""

from __future__ import annotations

import functools
import hashlib

from py_ecc.bls.hash_to_curve import hash_to_G1
from py_ecc.bls.point_compression import compress_G1, compress_G2
from py_ecc.optimized_bls12_381.optimized_curve import G2, curve_order, multiply

from lottery import drand

SECRET_KEY = int.from_bytes(
    hashlib.sha256(b"stimulus/sandbox-drand/v1 secret key, public on purpose").digest(), "big") % curve_order
GENESIS_SEED_LABEL = b"stimulus/sandbox-drand/v1 genesis"
CHAIN = drand.SANDBOX
SIGNED_ROUNDS_KEPT = 4096


def public_key_hex() -> str:
    """The public key of `SECRET_KEY`, compressed as drand serves it (G2, 96 bytes)."""
    x, y = compress_G2(multiply(G2, SECRET_KEY))
    return (x.to_bytes(48, "big") + y.to_bytes(48, "big")).hex()


@functools.lru_cache(maxsize=SIGNED_ROUNDS_KEPT)
def sign_round(round_number: int) -> bytes:
    """The sandbox chain's signature on `round_number` (~20 ms in pure Python)."""
    point = hash_to_G1(drand.round_message(round_number), drand.DST, hashlib.sha256)  # type: ignore[arg-type]
    return int(compress_G1(multiply(point, SECRET_KEY))).to_bytes(drand.SIGNATURE_SIZE, "big")
