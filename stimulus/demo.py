"""`stimulus demo`: a campaign on the embedded stack, driven through the real HTTP API.

Each long step shows a progress bar. The demo uses its own state directory (./.stimulus/demo),
so it can be re-run and does not disturb `stimulus up`'s data.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from stimulus.sample import sample_campaign
from stimulus.sandbox_idp import synthetic_citizen, token_for
from stimulus.settings import Settings, load_settings
from stimulus.stack import migrate_sync, running_api, start_stack

console = Console()
REGISTRATION_CONCURRENCY = 48


@dataclass
class DemoContext:
    settings: Settings
    base_url: str
    operator_token: str
    campaign_id: str
    citizens: int
    summary: dict[str, Any] = field(default_factory=dict)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator_token}"}


def progress() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console)


async def register_citizens(ctx: DemoContext) -> None:
    settings = ctx.settings
    url = f"/v1/campaigns/{ctx.campaign_id}/registrations"
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(ctx.citizens):
        queue.put_nowait(n)
    created = 0
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=REGISTRATION_CONCURRENCY)
    with progress() as bar:
        task = bar.add_task("registering citizens", total=ctx.citizens, rate="")
        async with httpx.AsyncClient(base_url=ctx.base_url, timeout=30, limits=limits) as client:

            async def worker() -> None:
                nonlocal created
                while not queue.empty():
                    n = queue.get_nowait()
                    token = token_for(settings.idp_key, synthetic_citizen(n), issuer=settings.idp_issuer,
                                      audience=settings.idp_audience)
                    response = await client.post(url, headers={"Authorization": f"Bearer {token}"})
                    if response.status_code not in (200, 201):
                        raise RuntimeError(f"registration failed: {response.status_code} {response.text}")
                    created += response.status_code == 201
                    rate = created / max(1e-6, time.perf_counter() - started)
                    bar.update(task, advance=1, rate=f"{rate:,.0f}/s")

            await asyncio.gather(*[worker() for _ in range(REGISTRATION_CONCURRENCY)])
    ctx.summary["registrations"] = created
    ctx.summary["registration rate"] = f"{created / (time.perf_counter() - started):,.0f}/s"


def create_campaign(ctx: DemoContext) -> None:
    winners = max(6, ctx.citizens // 20)
    spec = sample_campaign(ctx.campaign_id, winners)
    with httpx.Client(base_url=ctx.base_url, timeout=30) as client:
        client.post("/v1/admin/campaigns", json=spec, headers=ctx.admin_headers()).raise_for_status()
        client.post(f"/v1/admin/campaigns/{ctx.campaign_id}/open",
                    headers=ctx.admin_headers()).raise_for_status()
    ctx.summary["campaign"] = ctx.campaign_id
    ctx.summary["winners planned"] = winners


def _operator_token(settings: Settings) -> str:
    import asyncpg

    from stimulus import auth

    async def make() -> str:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await auth.create_token(conn, "demo-operator", "operator")
        finally:
            await conn.close()

    return asyncio.run(make())


def run_demo(citizens: int = 3000, serve: bool = False, state_dir: Path | None = None) -> int:
    state_dir = state_dir or Path(os.environ.get("STIMULUS_STATE_DIR", "./.stimulus")).resolve() / "demo"
    shutil.rmtree(state_dir / "postgres", ignore_errors=True)
    shutil.rmtree(state_dir / "redis", ignore_errors=True)
    env = {**os.environ, "STIMULUS_STATE_DIR": str(state_dir), "STIMULUS_SANDBOX": "1",
           "STIMULUS_RATE_LIMIT_ADDRESS_PER_MIN": "0", "STIMULUS_LOG_LEVEL": "WARNING"}
    settings = load_settings(env)
    started = time.perf_counter()
    console.rule("[bold]stimulus demo")
    with console.status("starting PostgreSQL and Redis"):
        stack = start_stack(settings, need_redis=True)
        migrate_sync(stack.settings)
    settings = stack.settings
    try:
        with running_api(settings, workers=2, extra_env={k: v for k, v in env.items()
                                                          if k.startswith("STIMULUS_")}) as base:
            ctx = DemoContext(settings, base, _operator_token(settings), f"demo-{int(time.time())}",
                              citizens)
            create_campaign(ctx)
            asyncio.run(register_citizens(ctx))
            _print_summary(ctx, time.perf_counter() - started)
            if serve:
                console.print("[bold]serving; Ctrl-C to stop[/bold]")
                try:
                    while True:
                        time.sleep(1)
                except KeyboardInterrupt:
                    pass
    finally:
        stack.stop()
    return 0


def _print_summary(ctx: DemoContext, elapsed_s: float) -> None:
    table = Table(title="demo summary", show_header=False)
    for key, value in ctx.summary.items():
        table.add_row(key, str(value))
    table.add_row("elapsed", f"{elapsed_s:.1f} s")
    console.print(table)
    base = ctx.base_url
    console.print(f"API          {base}/v1/campaigns/{ctx.campaign_id}")
    console.print(f"OpenAPI UI   {base}/schema")
    console.print(f"metrics      {base}/metrics")
    console.print("(these stop with the demo; `stimulus demo --serve` or `stimulus up` keeps them running)")
