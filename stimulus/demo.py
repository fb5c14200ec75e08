"""`stimulus demo`: a campaign on the embedded stack, driven through the real HTTP API.

Each long step shows a progress bar. The demo uses its own state directory (./.stimulus/demo),
so it can be re-run and does not disturb `stimulus up`'s data.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lottery import verify
from lottery.statements import ceremony_commit_statement, ceremony_reveal_statement
from stimulus.loadgen import Reply, make_tokens, post_each
from stimulus.sample import sample_campaign
from stimulus.settings import Settings, load_settings
from stimulus.signing import SigningKey
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
    checker_token: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    receipts: list[dict[str, Any]] = field(default_factory=list)
    participants: dict[str, SigningKey] = field(default_factory=dict)
    secrets: dict[str, bytes] = field(default_factory=dict)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator_token}"}


def progress() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console)


async def register_citizens(ctx: DemoContext) -> None:
    settings = ctx.settings
    with console.status(f"signing {ctx.citizens:,} identity tokens (sandbox identity provider)"):
        tokens = make_tokens(settings.idp_key, settings.idp_issuer, settings.idp_audience, 0, ctx.citizens)
    created = 0
    started = time.perf_counter()
    receipts: list[bytes] = []
    with progress() as bar:
        task = bar.add_task("registering citizens", total=ctx.citizens, rate="")

        def done(reply: Reply) -> None:
            nonlocal created
            if reply.status not in (200, 201):
                raise RuntimeError(f"registration failed: {reply.status} {reply.body[:200]!r}")
            created += reply.status == 201
            if len(receipts) < 5:
                receipts.append(reply.body)
            bar.update(task, advance=1, rate=f"{created / max(1e-6, time.perf_counter() - started):,.0f}/s")

        await post_each(ctx.base_url, f"/v1/campaigns/{ctx.campaign_id}/registrations", tokens,
                        concurrency=REGISTRATION_CONCURRENCY, on_reply=done)
    ctx.summary["registrations"] = f"{created:,}"
    ctx.summary["registration rate"] = f"{created / (time.perf_counter() - started):,.0f}/s"
    ctx.receipts = [json.loads(r) for r in receipts]


PARTICIPANTS = {"notary": "Changsha No. 1 Notary Office", "audit": "Municipal Audit Bureau",
                "operator": "Operator bank risk office"}


def _call(client: httpx.Client, method: str, path: str, token: str | None = None,
          json_body: Any = None, expect: tuple[int, ...] = (200, 201, 202)) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.request(method, path, json=json_body, headers=headers)
    if response.status_code not in expect:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else response


def create_campaign(ctx: DemoContext, client: httpx.Client) -> None:
    winners = max(6, ctx.citizens // 20)
    ctx.participants = {pid: SigningKey.generate() for pid in PARTICIPANTS}
    ctx.secrets = {pid: secrets.token_bytes(32) for pid in PARTICIPANTS}
    spec = sample_campaign(ctx.campaign_id, winners, participants=[
        {"id": pid, "name": name, "public_key_hex": ctx.participants[pid].public_bytes.hex()}
        for pid, name in PARTICIPANTS.items()])
    _call(client, "POST", "/v1/admin/campaigns", ctx.operator_token, spec)
    _call(client, "POST", f"/v1/admin/campaigns/{ctx.campaign_id}/open", ctx.operator_token)
    for pid, key in ctx.participants.items():
        commitment = hashlib.sha256(ctx.secrets[pid]).hexdigest()
        signature = key.sign(ceremony_commit_statement(ctx.campaign_id, pid, commitment)).hex()
        _call(client, "POST", f"/v1/campaigns/{ctx.campaign_id}/ceremony/{pid}/commitment", None,
              {"commitment_hex": commitment, "signature_hex": signature})
    ctx.summary["campaign"] = ctx.campaign_id
    ctx.summary["winners planned"] = f"{winners:,} in {len(spec['strata'])} districts"
    ctx.summary["ceremony"] = f"{len(PARTICIPANTS)} participants committed before close"


def _approved(client: httpx.Client, ctx: DemoContext, path: str) -> dict[str, Any]:
    """Maker-checker: one operator requests, a second approves (and the action runs)."""
    request = _call(client, "POST", path, ctx.operator_token)
    done: dict[str, Any] = _call(client, "POST", f"/v1/admin/approvals/{request['id']}/approve", ctx.checker_token)
    return done


def draw(ctx: DemoContext, client: httpx.Client) -> None:
    cid = ctx.campaign_id
    with console.status("closing registration and committing the list (maker-checker)"):
        _call(client, "POST", f"/v1/admin/campaigns/{cid}/close", ctx.operator_token)
        committed = _approved(client, ctx, f"/v1/admin/campaigns/{cid}/commitment")["result"]
    ctx.summary["commitment"] = f"{committed['tree_size']:,} leaves, root {committed['root_hex'][:16]}..."
    with console.status("participants reveal, sandbox beacon"):
        for pid, key in ctx.participants.items():
            secret_hex = ctx.secrets[pid].hex()
            signature = key.sign(ceremony_reveal_statement(cid, pid, secret_hex, committed["root_hex"],
                                                           committed["tree_size"])).hex()
            _call(client, "POST", f"/v1/campaigns/{cid}/ceremony/{pid}/reveal", None,
                  {"secret_hex": secret_hex, "signature_hex": signature})
        _call(client, "POST", f"/v1/admin/campaigns/{cid}/beacon", ctx.operator_token, {"kind": "sandbox"})
    with console.status("drawing (maker-checker)"):
        drawn = _approved(client, ctx, f"/v1/admin/campaigns/{cid}/draw")["result"]
    ctx.summary["draw"] = f"{drawn['winners']:,} winners, seed {drawn['seed_hex'][:16]}... (SANDBOX beacon)"


def verify_offline(ctx: DemoContext, client: httpx.Client) -> None:
    """Download what the public sees and re-derive the whole draw, as an auditor would."""
    cid = ctx.campaign_id
    out = ctx.settings.state_dir / "published"
    out.mkdir(parents=True, exist_ok=True)
    bundle, registrants = out / f"{cid}-bundle.json", out / f"{cid}-registrants.csv"
    with console.status("downloading the proof bundle and the registrant list"):
        response = client.get(f"/v1/campaigns/{cid}/bundle")
        response.raise_for_status()
        bundle.write_bytes(response.content)
        with client.stream("GET", f"/v1/campaigns/{cid}/registrants", params={"format": "csv"}) as response, \
                registrants.open("wb") as handle:
            for chunk in response.iter_bytes():
                handle.write(chunk)
    key = next(iter(_call(client, "GET", "/v1/keys").values()))
    lines: list[str] = []
    with console.status("stimulus-verify: re-deriving root, seed, winners and cutoffs offline"):
        code = verify.run([str(bundle), "--registrants", str(registrants), "--service-key", key], say=lines.append)
    console.print(f"[bold]stimulus-verify[/bold] {bundle.name}: " + ("[green]PASS" if code == 0 else "[red]FAIL"))
    if code != 0:
        raise RuntimeError("the verifier failed:\n" + "\n".join(lines))
    ctx.summary["stimulus-verify"] = "PASS"
    ctx.summary["published"] = str(out)


def _operator_token(settings: Settings, name: str) -> str:
    import asyncpg

    from stimulus import auth

    async def make() -> str:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await auth.create_token(conn, name, "operator")
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
            ctx = DemoContext(settings, base, _operator_token(settings, "demo-maker"), f"demo-{int(time.time())}",
                              citizens, checker_token=_operator_token(settings, "demo-checker"))
            with httpx.Client(base_url=base, timeout=600) as client:
                create_campaign(ctx, client)
                asyncio.run(register_citizens(ctx))
                draw(ctx, client)
                verify_offline(ctx, client)
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
