"""Two independent BLS12-381 implementations agree on drand quicknet rounds.

The verifier and the service check a round with py_ecc (`drand.verify_round`, pure Python). The
compiled `drand-verify` wheel (noislabs/drand-verify in Rust, through PyO3) is kept only here, as a
second opinion: on every published vector both accept and derive the same randomness, and on
forged signatures (other rounds, every flipped bit, malformed and off-subgroup points, wrong
lengths) both refuse. A bug in either library that changes a verdict fails this test.
"""

from __future__ import annotations

import hashlib
import itertools

import drand_verify
import pytest
from py_ecc.bls.point_compression import compress_G1
from py_ecc.fields import optimized_bls12_381_FQ as FQ
from py_ecc.optimized_bls12_381.optimized_curve import field_modulus

from lottery import drand
from tests.lottery.test_drand import BY_ROUND, VECTORS


def compiled(round_number: int, signature: bytes) -> bool:
    """drand-verify's verdict; it answers the randomness, or raises ValueError."""
    try:
        answer = drand_verify.verify_quicknet(round_number, signature.hex())
    except ValueError:
        return False
    assert answer == hashlib.sha256(signature).hexdigest()
    return True


def flipped(signature: bytes, bit: int) -> bytes:
    data = bytearray(signature)
    data[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(data)


def off_subgroup_point() -> bytes:
    x = 4  # on y^2 = x^3 + 4, outside the prime-order subgroup
    y = pow((x**3 + 4) % field_modulus, (field_modulus + 1) // 4, field_modulus)
    return int(compress_G1((FQ(x), FQ(y), FQ(1)))).to_bytes(48, "big")


@pytest.mark.parametrize(("round_number", "signature_hex", "randomness_hex"), VECTORS, ids=[str(v[0]) for v in VECTORS])
def test_both_accept_every_published_round(round_number: int, signature_hex: str, randomness_hex: str) -> None:
    signature = bytes.fromhex(signature_hex)
    assert compiled(round_number, signature) and drand.verify_round(round_number, signature)
    assert drand.randomness(signature).hex() == randomness_hex


def forgeries() -> list[tuple[str, int, bytes]]:
    signature = BY_ROUND[657413]
    cases = [(f"round {r}{d:+d}", r + d, BY_ROUND[r]) for r in (657413, 3, 30662982) for d in (-1, 1)]
    rounds = list(BY_ROUND)
    cases += [(f"round {a} with {b}'s signature", a, BY_ROUND[b]) for a, b in itertools.pairwise(rounds)][:3]
    cases += [(f"bit {bit} flipped", 657413, flipped(signature, bit)) for bit in (0, 1, 2, *range(7, 384, 48))]
    cases += [("infinity", 657413, bytes([0xC0]) + bytes(47)),
              ("x beyond the field", 657413, (field_modulus | (1 << 383)).to_bytes(48, "big")),
              ("zeros", 657413, bytes(48)), ("ones", 657413, b"\xff" * 48),
              ("off the subgroup", 657413, off_subgroup_point())]
    cases += [(f"{n} bytes", 657413, (signature * 2)[:n]) for n in (0, 47, 49, 96)]
    return cases


@pytest.mark.parametrize(("label", "round_number", "signature"), forgeries(), ids=[c[0] for c in forgeries()])
def test_both_refuse_a_forgery(label: str, round_number: int, signature: bytes) -> None:
    assert (compiled(round_number, signature), drand.verify_round(round_number, signature)) == (False, False)


def test_the_compiled_check_refuses_every_flipped_bit() -> None:
    # Every bit, through the fast library only: py_ecc's share of these is sampled above.
    signature = BY_ROUND[657413]
    assert not any(compiled(657413, flipped(signature, bit)) for bit in range(len(signature) * 8))
