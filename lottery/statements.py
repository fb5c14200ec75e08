"""The exact bytes each party signs, as canonical JSON documents with a `type`.

Every statement is derived from its fields alone, so the bundle carries the fields and a verifier
rebuilds the bytes; canonical JSON has one form per value, so the rebuilt bytes are the signed
ones. Imports only the standard library and `cryptography`: the offline verifier uses this module.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from lottery.canonical import dumps

COMMITMENT = "stimulus/commitment/v1"
CEREMONY_COMMIT = "stimulus/ceremony-commit/v1"
CEREMONY_REVEAL = "stimulus/ceremony-reveal/v1"
BUNDLE = "stimulus/draw-bundle/v1"


def timestamp(at: datetime) -> str:
    """UTC, microseconds, `Z`: one spelling per instant, so statements stay canonical."""
    if at.tzinfo is None:
        raise ValueError("timestamps need a time zone")
    utc = at.astimezone(UTC)
    # Zero-padded explicitly: strftime's %Y does not pad years before 1000 on every platform.
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S.%f}Z"


def parse_timestamp(text: str) -> datetime:
    at = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    if timestamp(at) != text:
        raise ValueError(f"timestamp {text!r} is not canonical")
    return at


def commitment_statement(campaign_id: str, tree_size: int, root_hex: str, committed_at: str, key_id: str) -> bytes:
    return dumps({"type": COMMITMENT, "campaign_id": campaign_id, "tree_size": tree_size,
                  "root_hex": root_hex, "committed_at": committed_at, "key_id": key_id})


def ceremony_commit_statement(campaign_id: str, participant_id: str, commitment_hex: str) -> bytes:
    return dumps({"type": CEREMONY_COMMIT, "campaign_id": campaign_id, "participant_id": participant_id,
                  "commitment_hex": commitment_hex})


def ceremony_reveal_statement(campaign_id: str, participant_id: str, secret_hex: str, root_hex: str,
                              tree_size: int) -> bytes:
    """A reveal names the committed root: the participant attests the list was fixed first."""
    return dumps({"type": CEREMONY_REVEAL, "campaign_id": campaign_id, "participant_id": participant_id,
                  "secret_hex": secret_hex, "root_hex": root_hex, "tree_size": tree_size})


def ed25519_ok(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def key_id_of(public_key: bytes) -> str:
    """Matches kernel.signing.key_id_for: the first 16 hex digits of SHA-256 of the raw key."""
    import hashlib

    return hashlib.sha256(public_key).hexdigest()[:16]


def receipt_statement(campaign_id: str, ticket: int, leaf_hex: str, registered_at: str, key_id: str) -> bytes:
    """What a registration receipt signs (its fields in canonical JSON, without a type for v1)."""
    return dumps({"campaign_id": campaign_id, "ticket": ticket, "leaf_hex": leaf_hex,
                  "registered_at": registered_at, "key_id": key_id})
