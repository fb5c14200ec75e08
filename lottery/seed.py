"""The draw's seed and every ticket's score (see docs/draw-spec.md for the bytes).

seed  = SHA-256( lp("stimulus/seed/v1") || lp(campaign_id) || root(32) || u64(size)
                 || u32(#participants) || per participant, ordered by id:
                    lp(participant_id) || u8(revealed) || lp(secret or empty)
                 || lp(beacon kind) || u64(beacon round) || lp(beacon randomness) )
score = SHA-256( "stimulus/score/v1" || seed(32) || u64(ticket) )
lp(x) = u32 big-endian length || bytes (strings as UTF-8). Fixed-width fields need no prefix.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SEED_DOMAIN = b"stimulus/seed/v1"
SCORE_DOMAIN = b"stimulus/score/v1"


def lp(data: bytes | str) -> bytes:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return struct.pack(">I", len(raw)) + raw


@dataclass(frozen=True)
class RevealInput:
    participant_id: str
    secret: bytes | None  # None: never revealed (the bundle records the fallback taken)


def seed_preimage(campaign_id: str, root: bytes, size: int, reveals: Sequence[RevealInput],
                  beacon_kind: str, beacon_round: int, beacon_randomness: bytes) -> bytes:
    if len(root) != 32 or len(beacon_randomness) != 32:
        raise ValueError("root and beacon randomness are 32 bytes")
    parts = [lp(SEED_DOMAIN), lp(campaign_id), root, struct.pack(">Q", size),
             struct.pack(">I", len(reveals))]
    for reveal in sorted(reveals, key=lambda r: r.participant_id):
        parts.append(lp(reveal.participant_id))
        parts.append(b"\x01" if reveal.secret is not None else b"\x00")
        parts.append(lp(reveal.secret or b""))
    parts += [lp(beacon_kind), struct.pack(">Q", beacon_round), lp(beacon_randomness)]
    return b"".join(parts)


def derive_seed(campaign_id: str, root: bytes, size: int, reveals: Sequence[RevealInput],
                beacon_kind: str, beacon_round: int, beacon_randomness: bytes) -> bytes:
    return hashlib.sha256(seed_preimage(campaign_id, root, size, reveals, beacon_kind,
                                        beacon_round, beacon_randomness)).digest()


def score(seed: bytes, ticket: int) -> bytes:
    return hashlib.sha256(SCORE_DOMAIN + seed + struct.pack(">Q", ticket)).digest()


def scores(seed: bytes, tickets: Iterable[int]) -> list[bytes]:
    prefix = SCORE_DOMAIN + seed
    sha = hashlib.sha256
    pack = struct.Struct(">Q").pack
    return [sha(prefix + pack(t)).digest() for t in tickets]


def rank_key(score_value: bytes, ticket: int) -> bytes:
    """Order of the draw: lower score first, ticket number breaks ties; compared as bytes."""
    return score_value + struct.pack(">Q", ticket)
