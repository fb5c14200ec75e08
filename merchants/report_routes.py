"""Operator endpoints for the campaign report and the merchants' statements."""

from __future__ import annotations

from datetime import date
from typing import Any

from litestar import Response, get
from litestar.params import Parameter, QueryParameter

from kernel.auth import Principal, require_role
from kernel.contract import contract
from kernel.errors import InvalidInput
from kernel.services import Services
from merchants import registry, report_html, reports
from merchants.reports import CampaignReport, Statement

CampaignId = Parameter(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="campaign id")
MerchantId = Parameter(pattern=registry.MERCHANT_ID_PATTERN.pattern, description="merchant id")
# Query names that are Python keywords or builtins, mapped to other argument names.
Since: Any = QueryParameter(name="from", default=None, description="first day (UTC+8), inclusive")
Until: Any = QueryParameter(name="to", default=None, description="last day (UTC+8), inclusive")
Format: Any = QueryParameter(name="format", default="json", description="json or csv")


@contract("campaign_not_found")
@get("/v1/admin/campaigns/{campaign_id:str}/report", tags=["operator"],
     summary="Campaign report: money, breaks by class, spend by day/district/category, consumption multiplier")
async def report_json(services: Services, principal: Principal, campaign_id: str = CampaignId) -> CampaignReport:
    require_role(principal, "operator", "auditor")
    async with services.bulk_pool.acquire() as conn:
        return await reports.campaign_report(conn, campaign_id)


@contract("campaign_not_found", answers=[(200, str, "text/html")])
@get("/v1/admin/campaigns/{campaign_id:str}/report.html", tags=["operator"],
     summary="The campaign report as a printable HTML page with charts")
async def report_page(services: Services, principal: Principal, campaign_id: str = CampaignId) -> Response[str]:
    require_role(principal, "operator", "auditor")
    async with services.bulk_pool.acquire() as conn:
        report = await reports.campaign_report(conn, campaign_id)
    return Response(report_html.render(report), media_type="text/html; charset=utf-8")


@contract("merchant_not_found", "campaign_not_found", "invalid_format",
          answers=[(200, Statement, "application/json"), (200, str, "text/csv")])
@get("/v1/admin/merchants/{merchant_id:str}/statement", tags=["operator"],
     summary="A merchant's statement: every notice with its reconciliation, as JSON or CSV")
async def statement(services: Services, principal: Principal, merchant_id: str = MerchantId,
                    campaign: str | None = Parameter(default=None),
                    since: date | None = Since,
                    until: date | None = Until,
                    fmt: str = Format) -> Response[Any]:
    require_role(principal, "operator", "auditor")
    if fmt not in ("json", "csv"):
        raise InvalidInput("format: json or csv", code="invalid_format")
    async with services.bulk_pool.acquire() as conn:
        result = await reports.merchant_statement(conn, merchant_id, campaign, since, until)
    if fmt == "csv":
        return Response(reports.statement_csv(result), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="statement-{merchant_id}.csv"'})
    return Response(result)


ROUTES = [report_json, report_page, statement]
