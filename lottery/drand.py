"""drand chains: quicknet and the sandbox chain pinned, round times, and a BLS check of a round.

Quicknet signs SHA-256(round as 8-byte big-endian) with BLS12-381, signatures on G1, unchained
(scheme `bls-unchained-g1-rfc9380`). The round's randomness is SHA-256 of the signature, recomputed
here and never taken from a relay. This module needs only `py_ecc` (pure Python, 0.2-0.7 s a
round): the offline verifier and the service check a round the same way, with the same library
(docs/draw-spec.md §13.5 says why this one; a test checks it agrees with the compiled
`drand-verify` on every published vector and on forged signatures).

The sandbox chain speaks the same scheme with a secret key that is published on purpose (in
`sandbox.drand_chain`): anyone can sign its rounds, so a draw on it is marked as a sandbox draw,
but it is fetched and checked on the same path as quicknet.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

CHAIN_HASH = "52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971"
PUBLIC_KEY_HEX = (
    "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6a5776a2d1064510d1fec"
    "758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9c76a4bc09e76eae8991ef5ece45a"
)
GENESIS_TIME = 1692803367
PERIOD_SECONDS = 3
SCHEME = "bls-unchained-g1-rfc9380"
DST = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"
SIGNATURE_SIZE = 48
# The last round whose time a timestamp can spell (9999-12-31T23:59:59Z); later ones never come.
MAX_ROUND = (253402300799 - GENESIS_TIME) // PERIOD_SECONDS + 1




@dataclass(frozen=True)
class Chain:
    """A drand chain's public parameters, as its relays' `/{chain_hash}/info` gives them."""

    chain_hash: str
    public_key_hex: str
    genesis_time: int
    period_seconds: int
    genesis_seed_hex: str
    beacon_id: str

    @property
    def max_round(self) -> int:
        """The last round whose time a timestamp can spell (year 9999)."""
        return (253402300799 - self.genesis_time) // self.period_seconds + 1

    def round_time(self, round_number: int) -> datetime:
        """When the chain publishes `round_number` (round 1 at genesis)."""
        return datetime.fromtimestamp(self.genesis_time + (round_number - 1) * self.period_seconds, tz=UTC)

    def first_round_after(self, moment: datetime) -> int:
        """The first round published strictly after `moment`."""
        elapsed = int(moment.timestamp()) - self.genesis_time
        return max(1, elapsed // self.period_seconds + 2)

    def computed_hash(self) -> str:
        """drand's chain hash: SHA-256(u32 period || i64 genesis || public key || genesis seed || id)."""
        digest = hashlib.sha256(struct.pack(">I", self.period_seconds) + struct.pack(">q", self.genesis_time))
        digest.update(bytes.fromhex(self.public_key_hex) + bytes.fromhex(self.genesis_seed_hex))
        if self.beacon_id not in ("", "default"):
            digest.update(self.beacon_id.encode())
        return digest.hexdigest()


QUICKNET = Chain(CHAIN_HASH, PUBLIC_KEY_HEX, GENESIS_TIME, PERIOD_SECONDS,
                 "f477d5c89f21a17c863a7f937c6a6d15859414d2be09cd448d4279af331c5d3e", "quicknet")
SANDBOX = Chain(
    "97b117f34ef1a160537e83bd3a89647c5ea1a1220c60faa0d4b8e0470b79a45b",
    "a303ac7370a946c54bc324696e2540acb09c9a05cb39ad655f8f3cfe6a4ce703b5a66d42b437603212767dd6a682e756"
    "0eecd6f8b29a62d7385f9db25921e63857509887c99224312fff6c3179df15ca46bc4c7f636dc4afa58984f7e34f90bd",
    1600000000, 1, "76a4ee86e5b3d5a18b66b1bbe98999e56111b4cdbdd9086130dfa4b05ab73140", "stimulus-sandbox")
# The chain each beacon kind must come from.
CHAINS = {"drand-quicknet": QUICKNET, "sandbox": SANDBOX}


def round_time(round_number: int) -> datetime:
    """When quicknet publishes `round_number` (round 1 at genesis)."""
    return QUICKNET.round_time(round_number)


def round_message(round_number: int) -> bytes:
    return hashlib.sha256(round_number.to_bytes(8, "big")).digest()


def randomness(signature: bytes) -> bytes:
    return hashlib.sha256(signature).digest()


def verify_round(round_number: int, signature: bytes, public_key_hex: str = PUBLIC_KEY_HEX) -> bool:
    """Is `signature` the chain's BLS signature on `round_number`? Pure Python (py_ecc)."""
    if not 0 < round_number < 2**64 or len(signature) != SIGNATURE_SIZE:
        return False
    from py_ecc.bls.hash_to_curve import hash_to_G1
    from py_ecc.bls.point_compression import decompress_G1, decompress_G2
    from py_ecc.fields import optimized_bls12_381_FQ12 as FQ12
    from py_ecc.optimized_bls12_381.optimized_curve import (
        G2,
        curve_order,
        is_inf,
        multiply,
        neg,
    )
    from py_ecc.optimized_bls12_381.optimized_pairing import final_exponentiate, miller_loop

    public_key = bytes.fromhex(public_key_hex)
    try:
        sig_point = decompress_G1(int.from_bytes(signature, "big"))  # type: ignore[arg-type]
        key_point = decompress_G2((int.from_bytes(public_key[:48], "big"),  # type: ignore[arg-type]
                                   int.from_bytes(public_key[48:], "big")))
    except (ValueError, AssertionError):
        return False
    # A point off the prime-order subgroup would let a forger pick signatures that pair correctly.
    if is_inf(sig_point) or not is_inf(multiply(sig_point, curve_order)):
        return False
    hashed = hash_to_G1(round_message(round_number), DST, hashlib.sha256)  # type: ignore[arg-type]
    product = miller_loop(G2, sig_point, final_exponentiate=False) \
        * miller_loop(neg(key_point), hashed, final_exponentiate=False)
    return bool(final_exponentiate(product) == FQ12.one())
