"""The entry check every request passes before a handler runs: text, integers and bodies.

Input reaches the handlers by four doors: path parameters, the query string, the headers we read
and the body. Rather than each handler guarding its own, one app-wide check (it runs after routing,
so it sees the parsed path parameters and the route's options, and before the handler's
parameters and body are decoded) refuses, with a 4xx problem and before anything is read from or
written to storage:

- control characters (C0, DEL, C1) in any path parameter, query value or header value, and a
  query string that is not UTF-8 (`invalid_text`);
- an integer-looking query value outside PostgreSQL's bigint, the widest column we have
  (`validation_failed`, as for a body field out of its range);
- a body without `Content-Type: application/json`, unless the route names the media types it
  takes in its `opt` under `BODY_MEDIA_TYPES` (the CSV uploads) (415 `unsupported_media_type`);
- in a JSON body: a control character in a string (`invalid_text`) and a key given twice in one
  object (`duplicate_key`): msgspec, like most decoders, silently keeps the last one, so two
  parties (a merchant's signer and our decoder, a proxy and us) could read different requests.

Types, bounds and datetimes inside a body are the typed Structs' job (`kernel.input_types`).

Cost: the body checks are two regular-expression scans in C and, only when a key name repeats
somewhere in the body (nested objects with the same fields, escaped keys), a second parse with
the standard library that sees every key. See `check_json_body`.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from kernel.errors import DomainError, InvalidInput
from kernel.input_types import INT64_MAX, INT64_MIN

BODY_MEDIA_TYPES = "body_media_types"  # route opt key: the media types a route's body may have
JSON_MEDIA_TYPE = "application/json"

_CONTROL_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_HEADER = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is legal whitespace in a header
_INTEGER = re.compile(r"[+-]?[0-9]+")
# In JSON, a control character inside a string is an escape (raw C0 bytes are not JSON): a
# backslash that is not itself escaped, then one of b f n r t or a \u00XX naming C0, DEL or C1.
# DEL and C1 may also come raw (UTF-8 C2 80-9F).
_CONTROL_JSON = re.compile(
    rb'(?<!\\)(?:\\\\)*\\(?:[bfnrt]|u00[01][0-9A-Fa-f]|u007[Ff]|u00[89][0-9A-Fa-f])|\x7f|\xc2[\x80-\x9f]')
# Every key of every object in a body without backslashes: a string followed by a colon. For valid
# JSON this finds exactly the keys: without escapes no string holds a quote, so none but a key
# ends in `":`. (With escapes the body is parsed instead: a key may be spelled two ways.)
_PLAIN_KEY = re.compile(rb'"([^"]*)"\s*:')


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"
    title = "The body's media type is not accepted here"


def invalid_text(where: str) -> InvalidInput:
    return InvalidInput(f"{where}: control characters are not accepted", code="invalid_text", where=where)


def check_text(where: str, value: str) -> None:
    if _CONTROL_TEXT.search(value):
        raise invalid_text(where)


def check_path_params(params: dict[str, Any]) -> None:
    # Integer path parameters are the routes' own: most are bounded to bigint (a 400), a ticket
    # beyond it is one never committed (a 404); a route that forgets meets the database's
    # out-of-range error, answered as 400 invalid_value (kernel.problems).
    for name, value in params.items():
        if isinstance(value, str):
            check_text(name, value)


def check_query(query: bytes) -> None:
    if not query:
        return
    try:
        pairs = parse_qsl(query.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InvalidInput("the query string is not UTF-8", code="invalid_text", where="query string") from None
    for name, value in pairs:
        check_text("query parameter name", name)
        check_text(name, value)
        # An integer filter (`?after=`) beyond bigint, refused whatever the parameter's type: no
        # text parameter of ours holds a number of 19 digits or more either.
        if len(value) >= 19 and _INTEGER.fullmatch(value.strip()) \
                and not INT64_MIN <= int(value) <= INT64_MAX:
            raise InvalidInput(f"{name}: beyond a 64-bit integer", code="validation_failed", where=name)


def check_headers(headers: list[tuple[bytes, bytes]]) -> None:
    if not _CONTROL_HEADER.search(b"\t".join([value for _, value in headers])):  # one scan for all
        return
    for name, value in headers:
        if _CONTROL_HEADER.search(value):
            raise invalid_text(f"header {name.decode('latin-1')}")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidInput(f"the key {key!r} is given twice in one object", code="duplicate_key",
                                   key=key)
            seen.add(key)
    return result


def check_json_body(body: bytes) -> None:
    """Refuse control characters in strings and a key repeated within one object."""
    if b"\\" in body:
        # Escapes: the exact scans (rare in our bodies, so their cost matters little).
        if _CONTROL_JSON.search(body):
            raise invalid_text("body")
        _parse_refusing_duplicates(body)
        return
    if b"\x7f" in body or (b"\xc2" in body and _CONTROL_JSON.search(body)):
        raise invalid_text("body")
    keys = _PLAIN_KEY.findall(body)
    if len(keys) != len(set(keys)):
        _parse_refusing_duplicates(body)  # a name used twice somewhere: is it twice in one object?


def _parse_refusing_duplicates(body: bytes) -> None:
    with contextlib.suppress(ValueError):  # not JSON at all: the decoder refuses it as malformed_json
        json.loads(body, object_pairs_hook=_refuse_duplicates)


def media_type_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower().decode("latin-1")
    return None


def has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


async def guard_input(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Refuses what `check_*` refuse, for every route: run by `stimulus.app.check_entry`, after
    the staff-token check (a caller without the right token learns 401/403, not what their input
    lacks) and before Litestar reads the parameters and the body for the handler."""
    scope = connection.scope
    headers: list[tuple[bytes, bytes]] = scope["headers"]  # type: ignore[assignment]
    check_path_params(scope.get("path_params") or {})
    check_query(scope.get("query_string", b""))  # type: ignore[arg-type]
    check_headers(headers)
    if isinstance(connection, Request) and has_body(headers):
        accepted = handler.opt.get(BODY_MEDIA_TYPES, (JSON_MEDIA_TYPE,))
        media_type = media_type_of(headers)
        if media_type not in accepted:
            raise UnsupportedMediaType(
                f"the body must be {' or '.join(accepted)}; got {media_type or 'no Content-Type'}",
                accepted=list(accepted))
        if media_type == JSON_MEDIA_TYPE:
            # Litestar's body read applies the route's size limit and caches the body for the handler.
            check_json_body(await connection.body())
