"""Ed25519 keys for what the service signs: receipts, commitments, bundles, identity tokens.

A key id is the first 16 hex digits of SHA-256 of the raw public key, so a verifier can tell
which published key a signature claims without trusting anything else in the message.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)


def key_id_for(public_bytes: bytes) -> str:
    return hashlib.sha256(public_bytes).hexdigest()[:16]


class SigningKey:
    """An Ed25519 private key whose repr never shows the secret."""

    __slots__ = ("_private", "key_id", "public_bytes")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_bytes = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id_for(self.public_bytes)

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def seed_bytes(self) -> bytes:
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"


@functools.lru_cache(maxsize=1024)
def _public_key(public_bytes: bytes) -> Ed25519PublicKey:
    # Loading a key decompresses a curve point: worth doing once per key, not per signature.
    return Ed25519PublicKey.from_public_bytes(public_bytes)


def verify_signature(public_bytes: bytes, signature: bytes, message: bytes) -> bool:
    try:
        _public_key(public_bytes).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def load_or_create_signing_key(path: Path, given_hex: str | None = None) -> SigningKey:
    """The key from `given_hex` (a 32-byte seed), else from `path`, else a new one saved there."""
    if given_hex:
        return SigningKey.from_seed(bytes.fromhex(given_hex))
    if path.exists():
        return SigningKey.from_seed(bytes.fromhex(path.read_text().strip()))
    key = SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it first: use theirs so every process signs with one key.
        return SigningKey.from_seed(bytes.fromhex(path.read_text().strip()))
    with os.fdopen(fd, "w") as fh:
        fh.write(key.seed_bytes().hex())
    return key
