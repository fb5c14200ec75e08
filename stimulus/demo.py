"""`stimulus demo`: a whole campaign on the embedded stack, driven through the real HTTP API.

The stack is the one `stimulus up` runs (PostgreSQL, Redis, the sandbox banks with a few faults
switched on, the API and every worker), in its own state directory (./.stimulus/demo) so the
demo can be re-run without touching `stimulus up`'s data. The campaign's calendar is compressed:
the claim and spending deadlines fall minutes, not days, after registration opens.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import asyncpg
import httpx
from rich.table import Table

from kernel import auth
from kernel.embedded import free_port
from kernel.settings import Settings, load_settings
from stimulus import demo_merchants
from stimulus.demo_draw import (
    DemoContext,
    console,
    create_campaign,
    draw,
    register_citizens,
    verify_offline,
)
from stimulus.demo_money import audit_books, expire, issue, wait_claim_deadline, with_bank
from stimulus.supervisor import Supervisor

DEFAULT_CITIZENS = 100_000
# The banks misbehave a little, as real ones do: the issuance must still credit exactly once.
DEMO_BANK_KNOBS = {"latency_ms": 8, "error_rate": 0.01, "commit_timeout_rate": 0.002, "hang_ms": 6000}


def deadlines_for(citizens: int) -> tuple[int, int]:
    """Seconds from creation to the claim deadline, and from there to the spending deadline.

    Sized for registration at ~500/s on two cores shared with other work (a quiet machine
    registers 2,000/s; at ~1,000/s the window closed on 20,000 citizens under load), plus the
    draw, the claims and the issuance; claims that still arrive late are refused and reported,
    as a real campaign would. The demo waits for the claim deadline, so a wider window makes
    every run longer: at 100,000 citizens this keeps the whole demo under five minutes."""
    return 25 + citizens // 500, 30


def _token(settings: Settings, name: str) -> str:
    async def make() -> str:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await auth.create_token(conn, name, "operator")
        finally:
            await conn.close()

    return asyncio.run(make())


def run_demo(citizens: int = DEFAULT_CITIZENS, serve: bool = False, state_dir: Path | None = None) -> int:
    saved = dict(os.environ)
    try:
        return _run(citizens, serve, state_dir)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run(citizens: int, serve: bool, state_dir: Path | None) -> int:
    state_dir = state_dir or Path(os.environ.get("STIMULUS_STATE_DIR", "./.stimulus")).resolve() / "demo"
    for part in ("postgres", "redis", "bank", "published", "sandbox-idp"):
        shutil.rmtree(state_dir / part, ignore_errors=True)
    # Children (API, workers, bank) inherit these through the environment.
    os.environ.update({"STIMULUS_STATE_DIR": str(state_dir), "STIMULUS_ENV": "development",
                       "STIMULUS_RATE_LIMIT_ADDRESS_PER_MIN": "0", "STIMULUS_LOG_LEVEL": "WARNING",
                       "STIMULUS_BANK_PORT": str(free_port()), "STIMULUS_IDP_PORT": str(free_port())})
    os.environ.pop("STIMULUS_BANK_URL", None)
    settings = load_settings()
    started = time.perf_counter()
    console.rule("[bold]stimulus demo: a whole campaign")
    supervisor = Supervisor(settings, api_port=free_port(), api_workers=2)
    ok = False
    try:
        with console.status("starting PostgreSQL, Redis, the sandbox banks, the API and the workers"):
            supervisor.start()
        assert supervisor.stack is not None and supervisor.bank_url is not None
        settings = with_bank(supervisor.stack.settings, supervisor.bank_url)
        base = f"http://{settings.host}:{supervisor.api_port}"
        httpx.post(f"{supervisor.bank_url}/admin/knobs", json=DEMO_BANK_KNOBS, timeout=10,
                   headers={"Authorization": f"Bearer {settings.bank_api_key.reveal().decode()}"}
                   ).raise_for_status()
        ctx = DemoContext(settings, base, supervisor.bank_url, _token(settings, "demo-maker"),
                          _token(settings, "demo-checker"), f"demo-{int(time.time())}", citizens)
        claim_s, spending_s = deadlines_for(citizens)
        with httpx.Client(base_url=base, timeout=600) as client:
            create_campaign(ctx, client, claim_s, spending_s)
            asyncio.run(register_citizens(ctx))
            draw(ctx, client)
            verify_offline(ctx, client)
            issue(ctx, client)
            demo_merchants.spend(ctx, client)
            demo_merchants.reconcile(ctx, client)
            wait_claim_deadline(ctx, client)
            expire(ctx, settings)
            demo_merchants.save_report(ctx, client)
        ok = audit_books(ctx, settings) and ctx.reconciliation_ok
        _print_summary(ctx, time.perf_counter() - started, ok)
        if serve:
            console.print("[bold]serving; Ctrl-C to stop[/bold]")
            try:
                while True:
                    supervisor.watch()
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        with console.status("stopping"):
            supervisor.stop()
    return 0 if ok else 1


def _print_summary(ctx: DemoContext, elapsed_s: float, ok: bool) -> None:
    table = Table(title="demo summary", show_header=False)
    for key, value in ctx.summary.items():
        table.add_row(key, str(value))
    table.add_row("elapsed", f"{elapsed_s:.0f} s")
    table.add_row("result", "[green]OK" if ok else "[red]FAILED")
    console.print(table)
    base, cid = ctx.base_url, ctx.campaign_id
    console.print(f"public page  {base}/campaigns/{cid}")
    console.print(f"dashboard    {base}/admin/dashboard?campaign={cid}  (operator token: `stimulus admin create-token`)")
    console.print(f"report       {base}/v1/admin/campaigns/{cid}/report.html (operator token)"
                  + (f"; saved as {ctx.report_page}" if ctx.report_page else ""))
    metrics = f"http://{ctx.settings.metrics_host}:{ctx.settings.metrics_port}/metrics"
    console.print(f"API          {base}/v1/campaigns/{cid}   OpenAPI UI {base}/schema   metrics {metrics}")
    if ctx.published is not None:
        console.print(f"published    {ctx.published} (bundle and registrant list; stimulus-verify them again)")
    console.print("(these stop with the demo; `stimulus demo --serve` keeps them running)")
