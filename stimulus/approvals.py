"""Maker-checker: actions that need a second operator before they run.

An operator requests an action (it is recorded and does nothing yet); a different operator
approves it, and the action runs in the approval's transaction, so "approved" and "done" are one
commit. Both steps are written to the audit log. Domain packages register their actions by name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from stimulus import audit_log
from stimulus.errors import Conflict, Forbidden, InvalidInput, NotFound, WrongState
from stimulus.settings import Settings


@dataclass(frozen=True)
class ApprovalContext:
    conn: asyncpg.Connection  # inside the approval's transaction
    settings: Settings
    approval_id: int
    subject: str
    params: dict[str, Any]
    maker: str
    checker: str


Executor = Callable[[ApprovalContext], Awaitable[dict[str, Any]]]
Precheck = Callable[[asyncpg.Connection, str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Action:
    execute: Executor
    precheck: Precheck | None = None  # refuses a request that could never be approved


ACTIONS: dict[str, Action] = {}


def register(name: str, execute: Executor, precheck: Precheck | None = None) -> None:
    ACTIONS[name] = Action(execute, precheck)


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


_COLUMNS = "id, action, subject, params, status, requested_by, requested_at, decided_by, decided_at, result"


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


async def approve(conn: asyncpg.Connection, settings: Settings, approval_id: int, checker: str) -> Approval:
    """Run the action as the checker; it commits with the approval or not at all."""
    async with conn.transaction():
        row = await _lock_pending(conn, approval_id, checker)
        spec = ACTIONS.get(row["action"])
        if spec is None:
            raise InvalidInput(f"no executor for {row['action']!r} in this process", code="unknown_action")
        ctx = ApprovalContext(conn, settings, approval_id, row["subject"], dict(row["params"]),
                              row["requested_by"], checker)
        result = await spec.execute(ctx)
        await audit_log.append(conn, actor=checker, action=f"approval.approve.{row['action']}",
                               subject=row["subject"],
                               details={"approval_id": approval_id, "maker": row["requested_by"], "result": result})
        updated = await conn.fetchrow(
            f"""UPDATE approvals SET status = 'executed', decided_by = $2, decided_at = now(), result = $3
                WHERE id = $1 RETURNING {_COLUMNS}""", approval_id, checker, result)
    return _from_row(updated)


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
