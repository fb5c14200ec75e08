"""The domain error hierarchy: every refusal has a stable machine `code` and an HTTP status.

Domain code raises these; `kernel.problems` maps them once to RFC 9457 problem details.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str | None = None, *, code: str | None = None,
                 status: int | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code is not None:
            self.code = code  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]
        self.headers = headers or {}
        self.extra = extra


class InvalidInput(DomainError):
    status = 400
    code = "invalid_input"
    title = "The request is not valid"


class Unauthenticated(DomainError):
    status = 401
    code = "unauthenticated"
    title = "Authentication is required"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"
    title = "Not allowed"


class NotFound(DomainError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    code = "conflict"
    title = "Conflicts with the current state"


class WrongState(Conflict):
    code = "wrong_state"
    title = "Not allowed in the current state"


class Unprocessable(DomainError):
    status = 422
    code = "unprocessable"
    title = "The request cannot be processed"


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class Unavailable(DomainError):
    status = 503
    code = "unavailable"
    title = "Temporarily unavailable"
