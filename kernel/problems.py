"""RFC 9457 problem details: the one place where errors become HTTP responses.

Every error body carries `type`, `title`, `status`, `detail`, a stable machine `code` and the
request id. Unhandled errors become a bare 500 (no internals) and are logged with the request id.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    SerializationException,
    ValidationException,
)

from kernel.errors import DomainError

log = logging.getLogger("stimulus.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://stimulus.example/problems/"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def request_id_of(request: Request[Any, Any, Any]) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def problem(status: int, code: str, title: str, detail: str, request_id: str,
            headers: dict[str, str] | None = None, **extra: Any) -> Response[bytes]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    body.update(extra)
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    return problem(exc.status, exc.code, exc.title, exc.detail, request_id_of(request),
                   headers=exc.headers, **exc.extra)


def validation_handler(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    detail = str(exc.detail)
    code = "validation_failed"
    lowered = detail.lower()
    if "malformed" in lowered or "json is malformed" in lowered or "decode" in lowered:
        code = "malformed_json"
    errors = exc.extra if isinstance(exc.extra, list) else None
    extra: dict[str, Any] = {"errors": errors} if errors else {}
    return problem(400, code, "The request is not valid", detail, request_id_of(request), **extra)


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    code = _HTTP_CODES.get(status, "http_error")
    if isinstance(exc, NotFoundException):
        code = "not_found"
    elif isinstance(exc, NotAuthorizedException):
        code = "unauthenticated"
    elif isinstance(exc, PermissionDeniedException):
        code = "forbidden"
    elif isinstance(exc.__cause__, SerializationException):
        code = "malformed_json"  # a body Litestar could not decode for a handler's `data`
    headers = dict(exc.headers) if exc.headers else None
    return problem(status, code, code.replace("_", " ").capitalize(), str(exc.detail),
                   request_id_of(request), headers=headers)


def out_of_range_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """What the entry checks and the typed Structs missed: a value PostgreSQL or datetime arithmetic
    cannot hold (asyncpg's DataError is raised before the statement runs or rolls it back). Logged,
    since each one names an input that should have been refused at the edge."""
    request_id = request_id_of(request)
    log.warning("input out of range reached storage", exc_info=exc,
                extra={"request_id": request_id, "path": request.url.path})
    return problem(400, "invalid_value", "A value is out of range",
                   "a value in the request is beyond what can be stored", request_id)


def unhandled_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    request_id = request_id_of(request)
    log.error("unhandled error", exc_info=exc, extra={"request_id": request_id,
                                                      "path": request.url.path})
    return problem(500, "internal_error", "Internal error",
                   "the server failed; quote the request id when reporting it", request_id)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    DomainError: domain_error_handler,
    ValidationException: validation_handler,
    HTTPException: http_error_handler,
    asyncpg.DataError: out_of_range_handler,
    OverflowError: out_of_range_handler,
    Exception: unhandled_handler,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_MEDIA_TYPE", "MediaType", "problem"]
