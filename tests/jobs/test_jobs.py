"""Approved actions run as durable jobs: the approval answers at once, a jobs worker runs the
action, reports progress, and a worker killed mid-draw leaves it to another, which finishes it
with exactly one draw and one set of packets."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from kernel.embedded import free_port
from kernel.sample import sample_campaign
from lottery import verify
from tests.conftest import Stack
from tests.foundation.helpers import auth, new_campaign_id
from tests.issuance.helpers import Process, start_process
from tests.jobs_helpers import approve_and_run, run_jobs

BIG = 150_000  # registrants: a draw over them takes seconds here, long enough to be killed midway
BIG_WINNERS = 15_000


async def _ok(response: Any, status: int = 200) -> Any:
    reply: httpx.Response = await response
    assert reply.status_code == status, reply.text
    return reply.json()


async def _committed(http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, maker: str, checker: str,
                     registrants: int, winners: int) -> str:
    """A campaign with its list committed and its beacon recorded, ready to draw. The registrants
    are written straight into the table: registering 150,000 over HTTP is another test's job."""
    campaign_id = new_campaign_id("job")
    await _ok(http.post("/v1/admin/campaigns", json=sample_campaign(campaign_id, winners), headers=auth(maker)), 201)
    await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/open", headers=auth(maker)))
    strata = [s["stratum"] for s in sample_campaign(campaign_id, winners)["strata"]]
    await db.execute(
        """INSERT INTO registrations (campaign_id, id_hmac, pseudonym, stratum, payload_hash, wallet_bank, wallet_id)
           SELECT $1, sha256(($1 || ':' || g)::bytea), 'p' || g, ($2::text[])[1 + g % array_length($2::text[], 1)],
                  sha256(g::text::bytea), 'ICBC', 'W-' || g
           FROM generate_series(1, $3) AS g""", campaign_id, strata, registrants)
    await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(maker)))
    requested = await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/commitment", headers=auth(maker)), 202)
    assert (await approve_and_run(http, stack.settings, requested["id"], checker))["status"] == "executed"
    await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/beacon/fetch", headers=auth(maker)))
    return campaign_id


def _worker_env(stack: Stack, lease_s: float) -> dict[str, str]:
    settings = stack.settings
    assert settings.database_url and settings.redis_url
    return {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
            "STIMULUS_STATE_DIR": str(settings.state_dir), "STIMULUS_ENV": "development",
            "STIMULUS_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "STIMULUS_JOB_LEASE_S": str(lease_s),
            "STIMULUS_DRAW_PARALLEL_FROM": "30"}


async def _wait_job(http: httpx.AsyncClient, token: str, job_id: int, until: Any, timeout_s: float,
                    worker: Process | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = await _ok(http.get(f"/v1/admin/jobs/{job_id}", headers=auth(token)))
        if until(job):
            return job
        assert time.monotonic() < deadline, (job, worker.tail() if worker else "")
        await asyncio.sleep(0.05)


async def test_approving_answers_at_once_and_the_job_reports_its_progress(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, operator_token: str,
        second_operator_token: str, tmp_path: Path) -> None:
    campaign_id = await _committed(http, stack, db, operator_token, second_operator_token, 60_000, 6_000)
    requested = await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/draw", headers=auth(operator_token)), 202)
    started = time.monotonic()
    approval = await _ok(http.post(f"/v1/admin/approvals/{requested['id']}/approve",
                                   headers=auth(second_operator_token)), 202)
    assert time.monotonic() - started < 2.0
    assert approval["status"] == "approved"
    job_id = approval["job_id"]
    job = await _ok(http.get(f"/v1/admin/jobs/{job_id}", headers=auth(second_operator_token)))
    assert job["state"] == "queued" and job["kind"] == "draw.run" and job["args"]["subject"] == campaign_id
    listed = await _ok(http.get("/v1/admin/jobs", params={"state": "queued"}, headers=auth(operator_token)))
    assert job_id in [j["id"] for j in listed]
    assert await db.fetchval("SELECT count(*) FROM draws WHERE campaign_id = $1", campaign_id) == 0

    port = free_port()
    worker = start_process("jobs", ["worker", "jobs"], {**_worker_env(stack, 10), "STIMULUS_WORKER_HTTP_PORT": str(port)},
                           tmp_path)
    try:
        seen: list[tuple[str, int]] = []

        def ended(j: dict[str, Any]) -> bool:
            if not seen or seen[-1] != (j["state"], j["progress_done"]):
                seen.append((j["state"], j["progress_done"]))
            return j["state"] in ("succeeded", "failed")
        job = await _wait_job(http, operator_token, job_id, ended, 120, worker)
        # The worker's own listener: alive, ready, and its own metrics with the job it just ran.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as probe:
            assert (await probe.get("/health")).status_code == 200
            assert (await probe.get("/ready")).status_code == 200
            metrics = (await probe.get("/metrics")).text
        assert 'stimulus_jobs_ended_total{kind="draw.run",outcome="succeeded"} 1.0' in metrics, metrics[-2000:]
        assert "stimulus_http_requests_total{" not in metrics  # the API's series are not this process's
    finally:
        worker.stop()
    assert job["state"] == "succeeded", job
    assert job["progress_done"] == job["progress_total"] == 5 and job["result"]["winners"] == 6_000
    running = [done for state, done in seen if state == "running"]
    assert len(set(running)) >= 2, seen  # the progress moved while it ran
    done = await _ok(http.get(f"/v1/admin/approvals/{requested['id']}", headers=auth(operator_token)))
    assert done["status"] == "executed" and done["result"]["packets_allocated"] == 6_000


async def test_a_jobs_worker_killed_mid_draw_leaves_one_draw_and_one_set_of_packets(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, operator_token: str,
        second_operator_token: str, tmp_path: Path) -> None:
    campaign_id = await _committed(http, stack, db, operator_token, second_operator_token, BIG, BIG_WINNERS)
    requested = await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/draw", headers=auth(operator_token)), 202)
    approval = await _ok(http.post(f"/v1/admin/approvals/{requested['id']}/approve",
                                   headers=auth(second_operator_token)), 202)
    job_id = approval["job_id"]
    env = _worker_env(stack, lease_s=3)
    first = start_process("jobs-1", ["worker", "jobs"], env, tmp_path)
    try:
        job = await _wait_job(http, operator_token, job_id,
                              lambda j: j["state"] == "running" and j["progress_done"] >= 2, 60, first)
    finally:
        first.kill()
    killed = await _ok(http.get(f"/v1/admin/jobs/{job_id}", headers=auth(operator_token)))
    assert killed["state"] == "running" and killed["attempts"] == 1, killed  # killed before it could finish
    assert await db.fetchval("SELECT count(*) FROM draws WHERE campaign_id = $1", campaign_id) == 0

    second = start_process("jobs-2", ["worker", "jobs"], env, tmp_path)
    try:
        job = await _wait_job(http, operator_token, job_id, lambda j: j["state"] in ("succeeded", "failed"),
                              180, second)
    finally:
        second.kill()
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    assert job["lease_holder"] != killed["lease_holder"]
    assert await db.fetchval("SELECT count(*) FROM draws WHERE campaign_id = $1", campaign_id) == 1
    assert await db.fetchval("SELECT count(*) FROM draw_winners WHERE campaign_id = $1", campaign_id) == BIG_WINNERS
    packets = await db.fetchrow("SELECT count(*) AS n, count(DISTINCT ticket) AS tickets FROM packets "
                                "WHERE campaign_id = $1", campaign_id)
    assert packets["n"] == packets["tickets"] == BIG_WINNERS
    assert await db.fetchval("SELECT count(*) FROM notification_outbox WHERE campaign_id = $1",
                             campaign_id) == BIG_WINNERS
    drawn_entries = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE subject = $1 AND action = 'campaign.drawn'", campaign_id)
    assert drawn_entries == 1

    bundle_path, list_path = tmp_path / "bundle.json", tmp_path / "registrants.csv"
    bundle_path.write_bytes((await http.get(f"/v1/campaigns/{campaign_id}/bundle")).content)
    list_path.write_bytes((await http.get(f"/v1/campaigns/{campaign_id}/registrants",
                                          params={"format": "csv"}, timeout=120)).content)
    lines: list[str] = []
    assert verify.run([str(bundle_path), "--registrants", str(list_path)], say=lines.append) == 0, lines
    assert lines[-1] == "PASS"


async def test_a_failed_job_reports_its_error_and_an_operator_can_queue_it_again(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, operator_token: str,
        second_operator_token: str, auditor_token: str) -> None:
    campaign_id = await _committed(http, stack, db, operator_token, second_operator_token, 200, 20)
    requested = await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/draw", headers=auth(operator_token)), 202)
    approval = await _ok(http.post(f"/v1/admin/approvals/{requested['id']}/approve",
                                   headers=auth(second_operator_token)), 202)
    # Between the approval and the job, the beacon the draw needs goes away.
    beacon = await db.fetchrow("SELECT * FROM beacons WHERE campaign_id = $1", campaign_id)
    await db.execute("DELETE FROM beacons WHERE campaign_id = $1", campaign_id)
    await run_jobs(stack.settings)

    job = await _ok(http.get(f"/v1/admin/jobs/{approval['job_id']}", headers=auth(auditor_token)))
    assert job["state"] == "failed" and job["error"]["code"] == "beacon_not_recorded", job
    failed = await _ok(http.get(f"/v1/admin/approvals/{requested['id']}", headers=auth(operator_token)))
    assert failed["status"] == "failed" and failed["result"]["error"]["code"] == "beacon_not_recorded"
    assert await db.fetchval("SELECT count(*) FROM packets WHERE campaign_id = $1", campaign_id) == 0
    refused = await http.post(f"/v1/admin/jobs/{job['id']}/retry", headers=auth(auditor_token))
    assert refused.status_code == 403

    columns = list(beacon.keys())
    await db.execute(f"INSERT INTO beacons ({', '.join(columns)}) VALUES "
                     f"({', '.join(f'${i + 1}' for i in range(len(columns)))})", *beacon.values())
    retried = await _ok(http.post(f"/v1/admin/jobs/{job['id']}/retry", headers=auth(operator_token)), 202)
    assert retried["state"] == "queued" and retried["attempts"] == 0
    again = await _ok(http.get(f"/v1/admin/approvals/{requested['id']}", headers=auth(operator_token)))
    assert again["status"] == "approved"
    await run_jobs(stack.settings)
    job = await _ok(http.get(f"/v1/admin/jobs/{job['id']}", headers=auth(operator_token)))
    assert job["state"] == "succeeded" and job["error"] is None, job
    done = await _ok(http.get(f"/v1/admin/approvals/{requested['id']}", headers=auth(operator_token)))
    assert done["status"] == "executed" and done["result"]["winners"] == 20
    assert await db.fetchval("SELECT count(*) FROM packets WHERE campaign_id = $1", campaign_id) == 20
    again_refused = await http.post(f"/v1/admin/jobs/{job['id']}/retry", headers=auth(operator_token))
    assert again_refused.status_code == 409 and again_refused.json()["code"] == "job_not_failed"
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE subject = $1 AND action = 'job.retry.draw.run'",
                             str(job["id"])) == 1
