"""Canonical JSON: sorted keys, no insignificant whitespace, UTF-8, integers only (no floats).

Everything the service signs as JSON is these bytes, so a verifier can re-serialise and compare.
"""

from __future__ import annotations

import json
from typing import Any


class NotCanonical(ValueError):
    pass


def _check(value: Any) -> None:
    if isinstance(value, float):
        raise NotCanonical("floats are not allowed in canonical JSON")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotCanonical("object keys must be strings")
            _check(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check(item)
    elif not (value is None or isinstance(value, bool | int | str)):
        raise NotCanonical(f"{type(value).__name__} is not a JSON value")


def dumps(value: Any) -> bytes:
    _check(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads_strict(data: bytes) -> Any:
    """Parse and insist the bytes were already canonical (no second form of the same value)."""
    value = json.loads(data.decode("utf-8"), parse_float=_no_float)
    if dumps(value) != data:
        raise NotCanonical("the document is not in canonical form")
    return value


def _no_float(text: str) -> Any:
    raise NotCanonical(f"float {text} in canonical JSON")
