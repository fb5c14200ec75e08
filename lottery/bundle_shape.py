"""The shape of a proof bundle, an inclusion proof and a receipt, checked before anything is read.

docs/draw-spec.md §12 lists every object's keys and every value's type; this module holds that
table as data and checks a parsed document against it, so the verifier's later steps can index
and compare without guarding each access, and any JSON shape at all (wrong types, missing or extra
keys, non-string list entries, numbers past 2^64) ends in one numbered rule, never a traceback.
Imports only the standard library: the offline verifier uses this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lottery.statements import parse_timestamp
from lottery.violation import Violation

Check = Callable[[Any, str], None]

KEYS = "R12.2.1"
TYPES = "R12.2.2"
VALUES = "R12.2.3"
INTEGER_RANGE = "R2.1.1"
HEX = "R2.3.1"
TIMESTAMP = "R2.4.1"
CAMPAIGN_ID = "R3.1"
LABEL = "R3.2"
ENVELOPE = "R12.1.1"
CITIZEN_FILE = "R12.5.1"

U64_MAX = 2**64 - 1
CAMPAIGN_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{2,39}")
LABEL_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX_DIGITS = frozenset("0123456789abcdef")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def obj(fields: dict[str, Check], *, rule: str = KEYS, exact: bool = True) -> Check:
    """An object with exactly these keys (or at least these, when not `exact`)."""
    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise Violation(TYPES if rule == KEYS else rule, f"{path} must be an object, not {_type_name(value)}")
        missing = sorted(set(fields) - set(value))
        if missing:
            raise Violation(rule, f"{path} lacks the key {missing[0]!r}")
        extra = sorted(set(value) - set(fields))
        if exact and extra:
            raise Violation(rule, f"{path} has the unexpected key {extra[0]!r}")
        for key in sorted(fields):
            fields[key](value[key], f"{path}.{key}")
    return check


def array(item: Check) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise Violation(TYPES, f"{path} must be an array, not {_type_name(value)}")
        for i, entry in enumerate(value):
            item(entry, f"{path}[{i}]")
    return check


def row(*items: Check) -> Check:
    """A fixed-length array whose entries have these types, in this order."""
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list) or len(value) != len(items):
            raise Violation(TYPES, f"{path} must be an array of {len(items)} entries")
        for i, (entry, item) in enumerate(zip(value, items, strict=True)):
            item(entry, f"{path}[{i}]")
    return check


def nullable(inner: Check) -> Check:
    def check(value: Any, path: str) -> None:
        if value is not None:
            inner(value, path)
    return check


def string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise Violation(TYPES, f"{path} must be a string, not {_type_name(value)}")


def boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise Violation(TYPES, f"{path} must be true or false, not {_type_name(value)}")


def u64(value: Any, path: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Violation(TYPES, f"{path} must be an integer, not {_type_name(value)}")
    if not 0 <= value <= U64_MAX:
        raise Violation(INTEGER_RANGE, f"{path} = {value} lies outside 0..2^64-1")


def hex_bytes(low: int, high: int | None = None) -> Check:
    """Lower-case hex of `low` bytes (or `low`..`high` bytes)."""
    top = low if high is None else high

    def check(value: Any, path: str) -> None:
        string(value, path)
        size, odd = divmod(len(value), 2)
        if odd or not low <= size <= top or not _HEX_DIGITS.issuperset(value):
            wanted = f"{low}" if high is None else f"{low}..{high}"
            raise Violation(HEX, f"{path} must be {wanted} bytes in lower-case hex")
    return check


def timestamp(value: Any, path: str) -> None:
    string(value, path)
    try:
        parse_timestamp(value)
    except ValueError:
        raise Violation(TIMESTAMP, f"{path} = {value!r} is not a YYYY-MM-DDTHH:MM:SS.ffffffZ timestamp") from None


def one_of(*values: str) -> Check:
    def check(value: Any, path: str) -> None:
        string(value, path)
        if value not in values:
            raise Violation(VALUES, f"{path} = {value!r} is not one of {', '.join(values)}")
    return check


def matching(pattern: re.Pattern[str], rule: str) -> Check:
    def check(value: Any, path: str) -> None:
        string(value, path)
        if not pattern.fullmatch(value):
            raise Violation(rule, f"{path} = {value!r} does not match {pattern.pattern}")
    return check


HASH = hex_bytes(32)
SIGNATURE = hex_bytes(64)
KEY_ID = hex_bytes(8)

CAMPAIGN = obj({
    "id": matching(CAMPAIGN_ID_PATTERN, CAMPAIGN_ID),
    "name": string,
    "budget_fen": u64,
    "tiers": array(obj({"tier": matching(LABEL_PATTERN, LABEL), "amount_fen": u64, "count": u64})),
    "strata": array(obj({"stratum": matching(LABEL_PATTERN, LABEL), "quota": u64})),
    "registration_opens_at": timestamp,
    "registration_closes_at": timestamp,
    "registration_closed_at": timestamp,
    "beacon": obj({"kind": one_of("drand-quicknet", "sandbox"), "round": nullable(u64),
                   "fallback": one_of("next-round", "none")}),
    "participants": array(obj({"id": string, "name": string, "public_key_hex": hex_bytes(32)})),
    "draw_rules": obj({"algorithm": one_of("sha256-score-v1", "rfc3797"), "tier_scope": one_of("global"),
                       "spillover": one_of("redistribute-lowest-scores", "none"),
                       "missing_reveal": one_of("proceed-without", "abort"),
                       "reveal_deadline": nullable(timestamp)}),
})

COMMITMENT = obj({"campaign_id": string, "tree_size": u64, "root_hex": HASH, "committed_at": timestamp,
                  "key_id": KEY_ID, "signature_hex": SIGNATURE})

CEREMONY_ENTRY = obj({
    "participant_id": string,
    "commitment_hex": nullable(HASH),
    "commit_signature_hex": nullable(SIGNATURE),
    "committed_at": nullable(timestamp),
    "secret_hex": nullable(hex_bytes(16, 64)),
    "reveal_signature_hex": nullable(SIGNATURE),
    "revealed_at": nullable(timestamp),
    "status": one_of("revealed", "missing"),
})

DRAND_FIELDS = {"kind": string, "chain_hash": HASH, "round": u64, "signature_hex": hex_bytes(48),
                "randomness_hex": HASH, "round_time": timestamp}
DRAND_BEACON = obj({**DRAND_FIELDS, "path": one_of("declared-round", "next-round-fallback")})
# The sandbox chain's round, marked: its public key (G2, 96 bytes) and the warning.
SANDBOX_BEACON = obj({**DRAND_FIELDS, "path": one_of("declared-round", "next-round-fallback",
                                                     "first-round-after-reveals"),
                      "public_key_hex": hex_bytes(96), "warning": string})


def beacon(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise Violation(TYPES, f"{path} must be an object, not {_type_name(value)}")
    if "kind" not in value:
        raise Violation(KEYS, f"{path} lacks the key 'kind'")
    one_of("drand-quicknet", "sandbox")(value["kind"], f"{path}.kind")
    (DRAND_BEACON if value["kind"] == "drand-quicknet" else SANDBOX_BEACON)(value, path)


CUTOFF = {"cutoff_score_hex": nullable(HASH), "cutoff_ticket": nullable(u64)}
DRAW = obj({
    "algorithm": string,
    "seed_hex": HASH,
    "strata": array(obj({"stratum": string, "registrants": u64, "quota": u64, "winners_round1": u64, **CUTOFF})),
    "spillover": obj({"rule": string, "unused_quota": u64, "winners": u64, **CUTOFF}),
    "winner_count": u64,
    "winners_root_hex": HASH,
    "winners": array(row(u64, string, string, u64, u64)),
})

BUNDLE = obj({
    "format": string,
    "software": obj({"name": one_of("stimulus"), "version": string}),
    "sandbox": boolean,
    "campaign": CAMPAIGN,
    "commitment": COMMITMENT,
    "ceremony": array(CEREMONY_ENTRY),
    "beacon": beacon,
    "draw": DRAW,
    "drawn_at": timestamp,
    "fallbacks_taken": array(string),
})

def _any_object(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise Violation(ENVELOPE, f"{path} must be an object, not {_type_name(value)}")


def _envelope_string(inner: Check) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise Violation(ENVELOPE, f"{path} must be a string, not {_type_name(value)}")
        inner(value, path)
    return check


ENVELOPE_SHAPE = obj({"bundle": _any_object, "key_id": _envelope_string(KEY_ID),
                      "public_key_hex": _envelope_string(hex_bytes(32)),
                      "signature_hex": _envelope_string(SIGNATURE)}, rule=ENVELOPE)

PROOF = obj({"ticket": u64, "leaf_index": u64, "tree_size": u64, "leaf_hex": hex_bytes(0, 1 + 8 + 3 * 257),
             "audit_path": array(HASH), "root_hex": HASH}, rule=CITIZEN_FILE, exact=False)
RECEIPT = obj({"campaign_id": string, "ticket": u64, "leaf_hex": hex_bytes(0, 1 + 8 + 3 * 257),
               "registered_at": string, "key_id": KEY_ID, "signature_hex": SIGNATURE},
              rule=CITIZEN_FILE, exact=False)


def check_bundle(bundle: Any) -> None:
    BUNDLE(bundle, "bundle")
