"""What each operation promises in the OpenAPI document: who may call it, what it takes, what it
answers, and every problem it can answer with.

A route declares only what is its own (`@contract("campaign_not_found")`, a body it decodes
itself, an answer it encodes itself, a merchant signature it checks). The rest follows from how a
route is reached and is added here once, for every operation: the token its dependencies check
and their refusals, the framework's refusals of a malformed request, the status of each code
(from `kernel.problem_codes`), and request schemas from msgspec, the same types that decode the
bodies (so `additionalProperties: false` is said exactly where unknown fields are refused).
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

import msgspec
from litestar import Litestar, Request
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.params import Parameter
from litestar.routes import HTTPRoute

from kernel.auth import ROLES_OPT
from kernel.problem_codes import CODES, codes_on, statuses_of
from kernel.problems import PROBLEM_MEDIA_TYPE, TYPE_BASE

OPT_KEY = "contract"
REF = "#/components/schemas/{name}"
PROBLEM_SCHEMA = "Problem"
MERCHANT_HEADERS = ("X-Merchant-Id", "X-Timestamp", "X-Nonce", "X-Signature")

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
OPERATOR = ("operator",)  # the roles of a handler that acts; reading handlers admit auditors too
STAFF_ROLES = ("operator", "auditor")

H = TypeVar("H", bound=HTTPRouteHandler)


class Access(enum.Enum):
    """Who an operation admits; the value names the `problem_codes` kind of its refusals."""

    PUBLIC = "public"
    CITIZEN = "identity"
    STAFF = "staff"
    MERCHANT = "signature"


SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "identityToken": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "A citizen's identity token from the city's identity provider.",
    },
    "staffToken": {
        "type": "http", "scheme": "bearer",
        "description": "An operator or auditor token (`stimulus admin create-token`); auditors read, "
                       "operators act.",
    },
    **{f"merchant{header.removeprefix('X-').replace('-', '')}": {
        "type": "apiKey", "in": "header", "name": header,
        "description": "Merchant request signature header (docs/merchant-api.md); all four together.",
    } for header in MERCHANT_HEADERS},
}

SECURITY: dict[Access, list[dict[str, list[str]]]] = {
    Access.PUBLIC: [],
    Access.CITIZEN: [{"identityToken": []}],
    Access.STAFF: [{"staffToken": []}],
    Access.MERCHANT: [{name: [] for name in SECURITY_SCHEMES if name.startswith("merchant")}],
}

PROBLEM_COMPONENT: dict[str, Any] = {
    "title": PROBLEM_SCHEMA,
    "description": "RFC 9457 problem details. `code` is stable and machine-readable; some problems "
                   "carry more members (`errors`, `state`, ...).",
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail", "code", "request_id"],
}


@dataclass(frozen=True)
class Declared:
    raises: tuple[str, ...] = ()
    signed: bool = False
    body: Any = None
    body_media_type: str = "application/json"
    answers: tuple[tuple[int, Any, str], ...] = ()


def contract(*raises: str, signed: bool = False, body: Any = None,
             body_media_type: str = "application/json",
             answers: Iterable[tuple[int, Any, str]] = (), roles: tuple[str, ...] = ()) -> Callable[[H], H]:
    """Declare what a route handler does beyond what its dependencies say: the problem codes it
    raises itself, whether it checks a merchant signature, the body it decodes itself, the
    answers it encodes itself as `(status, type, media type)`, and the staff roles it admits
    (checked by `auth.authorize_staff` before the body is read)."""
    for declared_code in raises:
        statuses_of(declared_code)  # a KeyError at import time names a code missing from the catalogue
    declared = Declared(tuple(raises), signed, body, body_media_type, tuple(answers))

    def mark(handler: H) -> H:
        handler.opt[OPT_KEY] = declared
        if roles:
            handler.opt[ROLES_OPT] = roles
        return handler

    return mark


def bigint_path(description: str) -> Any:
    """A path parameter that names a bigint row: beyond the column's range it is a 400
    validation_failed (and the document says the range), not an error from the database."""
    return Parameter(ge=BIGINT_MIN, le=BIGINT_MAX, description=description)


def declared_of(handler: HTTPRouteHandler) -> Declared:
    found = handler.opt.get(OPT_KEY)
    return found if isinstance(found, Declared) else Declared()


def access_of(handler: HTTPRouteHandler) -> Access:
    """From the dependencies the handler asks for: they are what checks the credentials."""
    parameters = inspect.signature(handler.fn).parameters
    if declared_of(handler).signed:
        return Access.MERCHANT
    if "principal" in parameters:
        return Access.STAFF
    if "citizen" in parameters:
        return Access.CITIZEN
    return Access.PUBLIC


def _body_type(handler: HTTPRouteHandler) -> Any:
    declared = declared_of(handler)
    if declared.body is not None:
        return declared.body
    if "data" not in inspect.signature(handler.fn).parameters:
        return None
    return typing.get_type_hints(handler.fn)["data"]


def operations(app: Litestar) -> Iterable[tuple[str, str, HTTPRouteHandler]]:
    """(OpenAPI path, method, handler) for every operation in the document."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            for method in sorted(handler.http_methods):
                if method not in ("OPTIONS", "HEAD"):
                    yield route.path_format or "/", method, handler


def problem_codes(handler: HTTPRouteHandler, operation: dict[str, Any]) -> dict[int, list[str]]:
    """status -> every code the operation can answer with under it, in catalogue order."""
    kinds = {access_of(handler).value}
    if operation.get("parameters") or operation.get("requestBody"):
        kinds.add("request")
    if operation.get("requestBody"):
        kinds.add("body")
    if "services" in inspect.signature(handler.fn).parameters:
        kinds.add("storage")
    wanted = [pair for kind in sorted(kinds) for pair in codes_on(kind)]
    if access_of(handler) is Access.STAFF and not handler.opt.get(ROLES_OPT):
        wanted = [pair for pair in wanted if pair[0] != "role_required"]  # every staff role may
    if any(p.get("in") == "path" and p.get("schema", {}).get("type") == "integer"
           for p in operation.get("parameters", ())):
        wanted.append(("not_found", (404,)))  # a path that is not a number matches no route
    wanted += [statuses_of(declared) for declared in declared_of(handler).raises]
    order = {code: n for n, code in enumerate(CODES)}
    by_status: dict[int, list[str]] = {}
    for code, statuses in sorted(wanted, key=lambda pair: order[pair[0]]):
        for status in statuses:
            listed = by_status.setdefault(status, [])
            if code not in listed:
                listed.append(code)
    return by_status


def problem_responses(by_status: dict[int, list[str]]) -> dict[str, dict[str, Any]]:
    responses: dict[str, dict[str, Any]] = {}
    for status in sorted(by_status):
        listed = by_status[status]
        schema = {"allOf": [{"$ref": REF.format(name=PROBLEM_SCHEMA)},
                            {"type": "object", "properties": {"code": {"enum": listed},
                                                              "status": {"enum": [status]}}}]}
        examples = {code: {"summary": CODES[code].meaning,
                           "value": {"type": TYPE_BASE + code, "title": CODES[code].meaning,
                                     "status": status, "detail": CODES[code].meaning, "code": code,
                                     "request_id": "00000000000000000000000000000000"}}
                    for code in listed}
        responses[str(status)] = {
            "description": "; ".join(f"`{code}`: {CODES[code].meaning}" for code in listed),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": schema, "examples": examples}},
        }
    return responses


def _optional(type_: Any) -> bool:
    return typing.get_origin(type_) in (typing.Union, types.UnionType) and type(None) in typing.get_args(type_)


def _schema_for(type_: Any, components: dict[str, Any], replace: bool) -> dict[str, Any]:
    if type_ is bytes or type_ is str:
        return {"type": "string"}
    (schema,), found = msgspec.json.schema_components([type_], ref_template=REF)
    for name, component in found.items():
        if replace or name not in components:
            components[name] = component
    return schema


def document(app: Litestar, openapi_schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document Litestar generated, completed with what `contract` knows."""
    doc: dict[str, Any] = msgspec.to_builtins(openapi_schema)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[PROBLEM_SCHEMA] = PROBLEM_COMPONENT
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, method, handler in operations(app):
        operation = doc["paths"][path][method.lower()]
        declared = declared_of(handler)
        body = _body_type(handler)
        if body is not None:
            media_type = declared.body_media_type if declared.body is not None else "application/json"
            operation["requestBody"] = {"required": not _optional(body), "content": {
                media_type: {"schema": _schema_for(body, schemas, replace=True)}}}
        responses = {status: answer for status, answer in operation.get("responses", {}).items()
                     if int(status) < 400}
        if declared.answers:
            responses.pop(str(handler.status_code), None)
        for status, type_, media_type in declared.answers:
            answer = responses.setdefault(str(status), {"description": HTTPStatus(status).phrase, "content": {}})
            answer["content"][media_type] = {"schema": _schema_for(type_, schemas, replace=False)}
        responses.update(problem_responses(problem_codes(handler, operation)))
        operation["responses"] = responses
        operation["security"] = SECURITY[access_of(handler)]
        if access_of(handler) is Access.STAFF:
            roles = handler.opt.get(ROLES_OPT) or STAFF_ROLES
            operation["description"] = (operation.get("description", "") + f"\n\nRoles: {', '.join(roles)}.").strip()
    return doc


def openapi_document(app: Litestar) -> dict[str, Any]:
    return document(app, app.openapi_schema.to_schema())


class ContractJsonPlugin(JsonRenderPlugin):
    """Serves the completed document at /schema/openapi.json (built on first request)."""

    def __init__(self) -> None:
        super().__init__()
        self._document: dict[str, Any] | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._document is None:
            self._document = document(request.app, openapi_schema)
        return self.render_json(request, self._document)
