"""Maker-checker: actions that need a second operator before they run.

An operator requests an action (it is recorded and does nothing yet); a different operator
approves it, which enqueues a job in the approval's transaction and answers at once. A jobs
worker runs the action in one transaction with the approval's `executed` (kernel.jobs), so
"executed" and "done" are one commit, and a worker that dies leaves nothing half done. Every step
is written to the audit log. The assembly (stimulus.actions) wires each action by name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from kernel import audit_log, jobs
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound, WrongState
from kernel.jobs import Job, JobContext, JobKind, Progress
from kernel.settings import Settings


@dataclass(frozen=True)
class ApprovalContext:
    conn: asyncpg.Connection  # inside the transaction that marks the approval executed
    settings: Settings
    approval_id: int
    subject: str
    params: dict[str, Any]
    maker: str
    checker: str
    progress: Progress = jobs.no_progress


Executor = Callable[[ApprovalContext], Awaitable[dict[str, Any]]]
Precheck = Callable[[asyncpg.Connection, str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Action:
    execute: Executor
    precheck: Precheck | None = None  # refuses a request that could never be approved


ACTIONS: dict[str, Action] = {}


class Approval(msgspec.Struct, frozen=True):
    id: int
    action: str
    subject: str
    params: dict[str, Any]
    status: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    result: dict[str, Any] | None
    job_id: int | None = None  # the job that runs an approved action


_COLUMNS = ("id, action, subject, params, status, requested_by, requested_at, decided_by, decided_at, result, "
            "job_id")


def _from_row(row: asyncpg.Record) -> Approval:
    return msgspec.convert(dict(row), Approval)


async def request(conn: asyncpg.Connection, action: str, subject: str, params: dict[str, Any],
                  maker: str) -> Approval:
    spec = ACTIONS.get(action)
    if spec is None:
        raise InvalidInput(f"unknown action {action!r}", code="unknown_action")
    if spec.precheck is not None:
        await spec.precheck(conn, subject, params)
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO approvals (action, subject, params, requested_by) VALUES ($1, $2, $3, $4)
                ON CONFLICT (action, subject) WHERE status = 'pending' DO NOTHING RETURNING {_COLUMNS}""",
            action, subject, params, maker)
        if row is None:
            pending = await conn.fetchval(
                "SELECT id FROM approvals WHERE action = $1 AND subject = $2 AND status = 'pending'",
                action, subject)
            raise Conflict(f"{action} for {subject} is already waiting for approval (#{pending})",
                           code="approval_pending", approval_id=pending)
        await audit_log.append(conn, actor=maker, action=f"approval.request.{action}", subject=subject,
                               details={"approval_id": row["id"], "params": params})
    return _from_row(row)


async def fetch(conn: asyncpg.Connection | asyncpg.Pool, approval_id: int) -> Approval:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM approvals WHERE id = $1", approval_id)
    if row is None:
        raise NotFound(f"no approval #{approval_id}", code="approval_not_found")
    return _from_row(row)


async def list_recent(conn: asyncpg.Connection | asyncpg.Pool, status: str | None = None,
                      limit: int = 100) -> list[Approval]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM approvals WHERE $1::text IS NULL OR status = $1 ORDER BY id DESC LIMIT $2",
        status, limit)
    return [_from_row(r) for r in rows]


async def _lock_pending(conn: asyncpg.Connection, approval_id: int, checker: str) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM approvals WHERE id = $1 FOR UPDATE", approval_id)
    if row is None:
        raise NotFound(f"no approval #{approval_id}", code="approval_not_found")
    if row["status"] != "pending":
        raise WrongState(f"approval #{approval_id} is already {row['status']}", code="approval_decided",
                         approval_status=row["status"])
    if row["requested_by"] == checker:
        raise Forbidden("the operator who requested an action cannot approve it", code="same_operator")
    return row


async def approve(conn: asyncpg.Connection, approval_id: int, checker: str) -> Approval:
    """Approve as the checker and enqueue the action's job, in one transaction; the job runs it."""
    async with conn.transaction():
        row = await _lock_pending(conn, approval_id, checker)
        spec = ACTIONS.get(row["action"])
        if spec is None:
            raise InvalidInput(f"no executor for {row['action']!r} in this process", code="unknown_action")
        if spec.precheck is not None:  # refuse now what the job would refuse
            await spec.precheck(conn, row["subject"], dict(row["params"]))
        job = await jobs.enqueue(conn, row["action"], {"approval_id": approval_id, "subject": row["subject"]},
                                 checker)
        await audit_log.append(conn, actor=checker, action=f"approval.approve.{row['action']}",
                               subject=row["subject"],
                               details={"approval_id": approval_id, "maker": row["requested_by"], "job_id": job.id})
        updated = await conn.fetchrow(
            f"""UPDATE approvals SET status = 'approved', decided_by = $2, decided_at = now(), job_id = $3
                WHERE id = $1 RETURNING {_COLUMNS}""", approval_id, checker, job.id)
    return _from_row(updated)


def job_kinds(settings: Settings, actions: dict[str, Action]) -> dict[str, JobKind]:
    """The jobs that run approved actions, one kind per action."""
    return {name: JobKind(run=_executor(settings, spec), failed=_failed) for name, spec in actions.items()}


def _executor(settings: Settings, spec: Action) -> Callable[[JobContext], Awaitable[dict[str, Any]]]:
    async def run(job: JobContext) -> dict[str, Any]:
        conn, approval_id = job.conn, int(job.job.args["approval_id"])
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM approvals WHERE id = $1 FOR UPDATE", approval_id)
        if row is None or row["status"] != "approved" or row["job_id"] != job.job.id:
            raise WrongState(f"approval #{approval_id} is not waiting for job #{job.job.id}",
                             code="approval_decided")
        ctx = ApprovalContext(conn, settings, approval_id, row["subject"], dict(row["params"]),
                              row["requested_by"], row["decided_by"], job.progress)
        result = await spec.execute(ctx)
        await audit_log.append(conn, actor=row["decided_by"], action=f"approval.execute.{row['action']}",
                               subject=row["subject"],
                               details={"approval_id": approval_id, "job_id": job.job.id, "result": result})
        await conn.execute("UPDATE approvals SET status = 'executed', result = $2 WHERE id = $1",
                           approval_id, result)
        return result
    return run


async def _failed(conn: asyncpg.Connection, job: Job, error: dict[str, Any]) -> None:
    await conn.execute("UPDATE approvals SET status = 'failed', result = $2 WHERE id = $1 AND status = 'approved'",
                       int(job.args["approval_id"]), {"error": error})


async def requeued(conn: asyncpg.Connection, job: Job) -> None:
    """A failed approval's job queued again: the approval waits for it once more."""
    if "approval_id" in job.args:
        await conn.execute("UPDATE approvals SET status = 'approved', result = NULL WHERE id = $1 AND job_id = $2",
                           int(job.args["approval_id"]), job.id)


async def reject(conn: asyncpg.Connection, approval_id: int, checker: str, reason: str) -> Approval:
    async with conn.transaction():
        row = await _lock_pending(conn, approval_id, checker)
        await audit_log.append(conn, actor=checker, action=f"approval.reject.{row['action']}",
                               subject=row["subject"], details={"approval_id": approval_id, "reason": reason})
        updated = await conn.fetchrow(
            f"""UPDATE approvals SET status = 'rejected', decided_by = $2, decided_at = now(),
                   result = $3 WHERE id = $1 RETURNING {_COLUMNS}""",
            approval_id, checker, {"reason": reason})
    return _from_row(updated)
