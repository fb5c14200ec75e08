"""Operator endpoints for jobs: follow an approved action's progress, queue a failed one again."""

from __future__ import annotations

from typing import Any

from litestar import get, post
from litestar.params import QueryParameter

from kernel import approvals, jobs
from kernel.auth import Principal, require_role
from kernel.contract import OPERATOR, bigint_path, contract
from kernel.errors import InvalidInput
from kernel.jobs import Job
from kernel.services import Services

JobId = bigint_path("job id")
# `state` is a name Litestar keeps for the application state: the parameter is renamed.
StateFilter: Any = QueryParameter(name="state", default=None, description="queued, running, succeeded or failed")


@get("/v1/admin/jobs", tags=["operator"], summary="Jobs, newest first")
async def list_jobs(services: Services, principal: Principal,
                    job_state: str | None = StateFilter) -> list[Job]:
    require_role(principal, "operator", "auditor")
    if job_state is not None and job_state not in jobs.STATES:
        raise InvalidInput(f"state is one of {', '.join(jobs.STATES)}", code="validation_failed")
    return await jobs.list_recent(services.pool, job_state)


@contract("job_not_found")
@get("/v1/admin/jobs/{job_id:int}", tags=["operator"], summary="One job: its state, progress and error")
async def get_job(services: Services, principal: Principal, job_id: int = JobId) -> Job:
    require_role(principal, "operator", "auditor")
    return await jobs.fetch(services.pool, job_id)


@contract("job_not_found", "job_not_failed", roles=OPERATOR)
@post("/v1/admin/jobs/{job_id:int}/retry", tags=["operator"], status_code=202,
      summary="Queue a failed job again; it runs from scratch")
async def retry_job(services: Services, principal: Principal, job_id: int = JobId) -> Job:
    async with services.pool.acquire() as conn:
        return await jobs.retry(conn, job_id, principal.actor, approvals.requeued)


ROUTES = [list_jobs, get_job, retry_job]
