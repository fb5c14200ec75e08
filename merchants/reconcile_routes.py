"""Operator endpoints for settlement files, reconciliation runs and breaks."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import Parameter, QueryParameter

from kernel.auth import Principal, require_role
from kernel.contract import OPERATOR, bigint_path, contract
from kernel.errors import InvalidInput
from kernel.input_guard import BODY_MEDIA_TYPES
from kernel.input_types import Input, Seconds
from kernel.services import Services
from merchants import reconciler, settlement
from merchants.reconciler import Break, RunOptions, RunView
from merchants.settlement import FileView

MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_REJECTS_SHOWN = 100
BankCode = Parameter(pattern=r"^[A-Z0-9]{2,16}$", description="the bank the file must come from")
# Query names that are Python keywords or builtins, mapped to other argument names.
BreakClass: Any = QueryParameter(name="class", default=None, description="one break class")


class ImportView(msgspec.Struct, frozen=True):
    file_id: int
    created: bool
    bank_code: str
    settlement_date: date
    complete: bool
    format: str
    sha256_hex: str
    lines: int
    repeated: int
    rejected: int
    covers_until: datetime
    rejects: list[dict[str, Any]]


class RunRequest(Input, frozen=True):
    window_s: Seconds = reconciler.DEFAULT_WINDOW_S
    grace_s: Seconds = reconciler.DEFAULT_GRACE_S


class Resolution(Input, frozen=True):
    resolution: str


def _import_view(result: settlement.ImportResult) -> ImportView:
    return ImportView(result.file_id, result.created, result.bank_code, result.settlement_date, result.complete,
                      result.format, result.sha256_hex, result.lines, result.repeated, result.rejected,
                      result.covers_until,
                      [{"line": r.line_no, "error": r.error, "raw": r.raw} for r in result.rejects[:MAX_REJECTS_SHOWN]])


@contract("settlement_empty", "settlement_not_utf8", "settlement_bad_header", "settlement_bad_trailer",
          "settlement_truncated", "settlement_wrong_bank", "settlement_wrong_day", "settlement_count_mismatch",
          "settlement_total_mismatch", body=str, body_media_type="text/csv",
          answers=[(201, ImportView, "application/json"), (200, ImportView, "application/json")], roles=OPERATOR)
@post("/v1/admin/settlements", tags=["operator"], request_max_body_size=MAX_FILE_BYTES,
      opt={BODY_MEDIA_TYPES: ("text/csv", "application/x-ndjson", "application/ndjson")},
      summary="Upload a bank's settlement file (CSV or NDJSON); importing the same file again changes nothing")
async def upload_settlement(request: Request[Any, Any, Any], services: Services, principal: Principal,
                            bank: str = BankCode) -> Response[ImportView]:
    """201 with the counts and the rejected lines (line number, reason); 200 when the file was
    already imported. A file without its trailer, or whose trailer disagrees with its lines, is
    refused whole (422-class problems: `settlement_truncated`, `settlement_count_mismatch`, ...)."""
    raw = await request.body()
    async with services.bulk_pool.acquire() as conn:
        result = await settlement.import_file(conn, raw, source="uploaded", actor=principal.actor, expect_bank=bank)
    return Response(_import_view(result), status_code=201 if result.created else 200)


@get("/v1/admin/settlements", tags=["operator"], summary="Imported settlement files, newest first")
async def list_settlements(services: Services, principal: Principal, bank: str | None = None,
                           limit: int = Parameter(default=100, ge=1, le=1000)) -> list[FileView]:
    require_role(principal, "operator", "auditor")
    return await settlement.list_files(services.pool, bank, limit)


@get("/v1/admin/settlements/{file_id:int}/rejects", tags=["operator"],
     summary="The lines of a settlement file that were kept aside, with their line numbers and reasons")
async def settlement_rejects(services: Services, principal: Principal,
                             file_id: int = bigint_path("settlement file id")) -> list[dict[str, Any]]:
    require_role(principal, "operator", "auditor")
    async with services.pool.acquire() as conn:
        return [{"line": r.line_no, "error": r.error, "raw": r.raw} for r in await settlement.rejects_of(conn, file_id)]


@contract("invalid_run_options", "reconciliation_running", "lease_lost", roles=OPERATOR)
@post("/v1/admin/reconciliation/runs", tags=["operator"], status_code=201,
      summary="Run reconciliation now (409 reconciliation_running while another run holds the lease)")
async def start_run(services: Services, principal: Principal, data: RunRequest | None = None) -> reconciler.RunSummary:
    request = data or RunRequest()
    if not (0 <= request.window_s <= 86_400 and 0 <= request.grace_s <= 30 * 86_400):
        raise InvalidInput("window_s within a day, grace_s within 30 days", code="invalid_run_options")
    async with services.bulk_pool.acquire() as conn:
        return await reconciler.run(conn, RunOptions(window_s=request.window_s, grace_s=request.grace_s))


@get("/v1/admin/reconciliation/runs", tags=["operator"], summary="Recent reconciliation runs and their outcomes")
async def list_runs(services: Services, principal: Principal,
                    limit: int = Parameter(default=20, ge=1, le=500)) -> list[RunView]:
    require_role(principal, "operator", "auditor")
    async with services.pool.acquire() as conn:
        return await reconciler.recent_runs(conn, limit)


@contract("invalid_break_class")
@get("/v1/admin/reconciliation/breaks", tags=["operator"],
     summary="Reconciliation breaks, open ones by default, a page at a time")
async def list_breaks(services: Services, principal: Principal, campaign: str | None = None,
                      break_class: str | None = BreakClass, include_resolved: bool = False,
                      after: int = Parameter(default=0, ge=0),
                      limit: int = Parameter(default=100, ge=1, le=1000)) -> list[Break]:
    require_role(principal, "operator", "auditor")
    if break_class is not None and break_class not in reconciler.BREAK_CLASSES:
        raise InvalidInput(f"class: one of {', '.join(reconciler.BREAK_CLASSES)}", code="invalid_break_class")
    async with services.pool.acquire() as conn:
        return await reconciler.list_breaks(conn, campaign_id=campaign, break_class=break_class,
                                            open_only=not include_resolved, after=after, limit=limit)


@contract("break_not_found", "break_already_resolved", "invalid_resolution", roles=OPERATOR)
@post("/v1/admin/reconciliation/breaks/{break_id:int}/resolve", tags=["operator"], status_code=200,
      summary="Resolve a break with the reason (audit-logged); the money stays as it is")
async def resolve_break(services: Services, principal: Principal, data: Resolution,
                        break_id: int = bigint_path("break id")) -> Break:
    reason = data.resolution.strip()
    if not 3 <= len(reason) <= 1000:
        raise InvalidInput("resolution: the reason, 3 to 1000 characters", code="invalid_resolution")
    async with services.pool.acquire() as conn:
        return await reconciler.resolve(conn, break_id, reason, principal.actor)


ROUTES = [upload_settlement, list_settlements, settlement_rejects, start_run, list_runs, list_breaks, resolve_break]
