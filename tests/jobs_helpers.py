"""Running queued jobs in the test process, with the same runner `stimulus worker jobs` uses."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx

from kernel.jobs import Job
from kernel.settings import Settings
from stimulus import jobs_worker
from tests.foundation.helpers import auth


async def run_jobs(settings: Settings) -> list[Job]:
    """Run every due job to its end; returns them."""
    pool = await jobs_worker.open_pool(settings)
    try:
        return await jobs_worker.runner(settings, pool, lease_s=30).run_until_idle()
    finally:
        await pool.close()


def run_jobs_sync(settings: Settings) -> list[Job]:
    """The same from synchronous code, on a thread of its own (the caller may own an event loop)."""
    done: list[Job] = []
    failure: list[BaseException] = []

    def go() -> None:
        try:
            done.extend(asyncio.run(run_jobs(settings)))
        except BaseException as exc:  # handed to the caller
            failure.append(exc)
    thread = threading.Thread(target=go)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return done


async def approve_and_run(http: httpx.AsyncClient, settings: Settings, approval_id: int,
                          checker: str) -> dict[str, Any]:
    """Approve (202, a job queued), run the job, and return the approval as it ended."""
    response = await http.post(f"/v1/admin/approvals/{approval_id}/approve", headers=auth(checker))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "approved" and response.json()["job_id"] is not None
    await run_jobs(settings)
    approval: dict[str, Any] = (await http.get(f"/v1/admin/approvals/{approval_id}", headers=auth(checker))).json()
    return approval
