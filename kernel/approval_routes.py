"""Operator endpoints for maker-checker approvals."""

from __future__ import annotations

from litestar import get, post

from kernel import approvals
from kernel.approvals import Approval
from kernel.auth import Principal, require_role
from kernel.contract import OPERATOR, bigint_path, contract
from kernel.errors import InvalidInput
from kernel.input_types import Input
from kernel.services import Services

ApprovalId = bigint_path("approval request id")


class Rejection(Input, frozen=True):
    reason: str


@get("/v1/admin/approvals", tags=["operator"], summary="Approval requests, newest first")
async def list_approvals(services: Services, principal: Principal, status: str | None = None) -> list[Approval]:
    require_role(principal, "operator", "auditor")
    return await approvals.list_recent(services.pool, status)


@contract("approval_not_found")
@get("/v1/admin/approvals/{approval_id:int}", tags=["operator"], summary="One approval request")
async def get_approval(services: Services, principal: Principal, approval_id: int = ApprovalId) -> Approval:
    require_role(principal, "operator", "auditor")
    return await approvals.fetch(services.pool, approval_id)


@contract("approval_not_found", "approval_decided", "same_operator", "unknown_action", "campaign_not_found",
          "wrong_campaign_state", "already_drawn", "beacon_not_recorded:409", "ceremony_incomplete", "not_drawn:409",
          "claim_deadline_passed", roles=OPERATOR)
@post("/v1/admin/approvals/{approval_id:int}/approve", tags=["operator"], status_code=202,
      summary="Approve a request (a different operator from the requester); its job runs it",
      description="Answers at once with the approval and its `job_id`; follow the job at /v1/admin/jobs/{id}.")
async def approve(services: Services, principal: Principal, approval_id: int = ApprovalId) -> Approval:
    async with services.pool.acquire() as conn:
        return await approvals.approve(conn, approval_id, principal.actor)


@contract("approval_not_found", "approval_decided", "same_operator", "reason_required", roles=OPERATOR)
@post("/v1/admin/approvals/{approval_id:int}/reject", tags=["operator"], status_code=200,
      summary="Reject a request")
async def reject(services: Services, principal: Principal, data: Rejection, approval_id: int = ApprovalId) -> Approval:
    if not data.reason.strip():
        raise InvalidInput("a rejection needs a reason", code="reason_required")
    async with services.pool.acquire() as conn:
        return await approvals.reject(conn, approval_id, principal.actor, data.reason)


ROUTES = [list_approvals, get_approval, approve, reject]
