"""The byte encoding of a registration as a Merkle leaf (see docs/draw-spec.md).

leaf = 0x01 (version) || ticket (8-byte big-endian) || lp(campaign_id) || lp(pseudonym) || lp(stratum)
where lp(s) = 2-byte big-endian length of UTF-8(s) || UTF-8(s). Length prefixes make the encoding
unambiguous: no two different registrations share leaf bytes.
"""

from __future__ import annotations

import struct

LEAF_VERSION = 1
MAX_FIELD_BYTES = 255
MAX_TICKET = 2**64 - 1


class LeafError(ValueError):
    pass


def _lp(name: str, value: str) -> bytes:
    data = value.encode("utf-8")
    if not data:
        raise LeafError(f"{name} must not be empty")
    if len(data) > MAX_FIELD_BYTES:
        raise LeafError(f"{name} longer than {MAX_FIELD_BYTES} bytes")
    return struct.pack(">H", len(data)) + data


def encode_leaf(campaign_id: str, ticket: int, pseudonym: str, stratum: str) -> bytes:
    if not 0 <= ticket <= MAX_TICKET:
        raise LeafError("ticket out of range")
    return (bytes([LEAF_VERSION]) + struct.pack(">Q", ticket) + _lp("campaign_id", campaign_id)
            + _lp("pseudonym", pseudonym) + _lp("stratum", stratum))


def decode_leaf(data: bytes) -> tuple[str, int, str, str]:
    if len(data) < 9 or data[0] != LEAF_VERSION:
        raise LeafError("not a version-1 leaf")
    (ticket,) = struct.unpack_from(">Q", data, 1)
    offset = 9
    fields: list[str] = []
    for _ in range(3):
        if offset + 2 > len(data):
            raise LeafError("truncated leaf")
        (length,) = struct.unpack_from(">H", data, offset)
        offset += 2
        if length == 0 or offset + length > len(data):
            raise LeafError("bad field length")
        fields.append(data[offset:offset + length].decode("utf-8"))
        offset += length
    if offset != len(data):
        raise LeafError("trailing bytes")
    return fields[0], int(ticket), fields[1], fields[2]
