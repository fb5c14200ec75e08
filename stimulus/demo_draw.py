"""The demo's first half: a campaign, its registrations, the ceremony, the draw and its audit.

Everything goes through the public and operator HTTP API, as a city would drive it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kernel.sample import sample_campaign
from kernel.settings import Settings
from kernel.signing import SigningKey
from lottery import verify
from lottery.statements import ceremony_commit_statement, ceremony_reveal_statement
from stimulus.loadgen import Reply, post_each

if TYPE_CHECKING:  # demo_merchants builds on this module
    from stimulus.demo_merchants import Spending

console = Console()
REGISTRATION_CONCURRENCY = 48
BANKS = ("ICBC", "CCB", "BOC")
PARTICIPANTS = {"notary": "Changsha No. 1 Notary Office", "audit": "Municipal Audit Bureau",
                "operator": "Operator bank risk office"}


@dataclass
class Timeline:
    """The demo's compressed calendar: days of a real campaign become seconds."""

    claim_deadline: datetime
    spending_deadline: datetime


@dataclass
class DemoContext:
    settings: Settings
    base_url: str
    bank_url: str
    operator_token: str
    checker_token: str
    campaign_id: str
    citizens: int
    summary: dict[str, Any] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    ticket_of: dict[int, int] = field(default_factory=dict)        # citizen index -> ticket
    winners: dict[int, tuple[str, int]] = field(default_factory=dict)  # ticket -> (stratum, amount_fen)
    participants: dict[str, SigningKey] = field(default_factory=dict)
    secrets: dict[str, bytes] = field(default_factory=dict)
    timeline: Timeline | None = None
    published: Path | None = None
    report_page: Path | None = None     # the campaign report, printable, as of reconciliation
    spending: Spending | None = None    # what the merchants' spending round did (stimulus.demo_merchants)
    reconciliation_ok: bool = True      # false when reconciliation left an unexplained break

    def registered_wallet(self, index: int) -> dict[str, str] | None:
        """A third of the citizens name their wallet at registration (for bulk issuance)."""
        return {"bank_code": BANKS[index % len(BANKS)], "wallet_id": f"w-{index}"} if index % 3 == 0 else None


def progress() -> Progress:
    return Progress(TextColumn("{task.description:<30}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console)


def call(client: httpx.Client, method: str, path: str, token: str | None = None,
         json_body: Any = None, expect: tuple[int, ...] = (200, 201, 202)) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.request(method, path, json=json_body, headers=headers)
    if response.status_code not in expect:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else response


def approved(client: httpx.Client, ctx: DemoContext, path: str) -> dict[str, Any]:
    """Maker-checker: one operator requests, a second approves, and the jobs worker runs it."""
    request = call(client, "POST", path, ctx.operator_token)
    approval = call(client, "POST", f"/v1/admin/approvals/{request['id']}/approve", ctx.checker_token)
    job = follow_job(client, ctx, int(approval["job_id"]))
    if job["state"] != "succeeded":
        raise RuntimeError(f"job #{job['id']} ({job['kind']}) failed: {job['error']}")
    done: dict[str, Any] = call(client, "GET", f"/v1/admin/approvals/{request['id']}", ctx.checker_token)
    return done


def follow_job(client: httpx.Client, ctx: DemoContext, job_id: int) -> dict[str, Any]:
    """The job's progress bar, until it succeeds or fails."""
    with Progress(TextColumn("{task.description:<30}"), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(f"job #{job_id}", total=None)
        while True:
            job: dict[str, Any] = call(client, "GET", f"/v1/admin/jobs/{job_id}", ctx.checker_token)
            bar.update(task, description=f"{job['kind']}: {job['progress_step'] or job['state']}",
                       completed=job["progress_done"], total=job["progress_total"])
            if job["state"] in ("succeeded", "failed"):
                return job
            time.sleep(0.2)


def winner_count(citizens: int) -> int:
    return max(6, citizens // 20)


def create_campaign(ctx: DemoContext, client: httpx.Client, claim_s: int, spending_s: int) -> None:
    winners = winner_count(ctx.citizens)
    ctx.participants = {pid: SigningKey.generate() for pid in PARTICIPANTS}
    ctx.secrets = {pid: secrets.token_bytes(32) for pid in PARTICIPANTS}
    # Registration is declared to close just before the claim deadline; the operator closes it
    # earlier, as soon as the synthetic citizens are in.
    spec = sample_campaign(ctx.campaign_id, winners, registration_s=claim_s - 5, claim_s=5,
                           spending_s=spending_s, participants=[
                               {"id": pid, "name": name, "public_key_hex": ctx.participants[pid].public_bytes.hex()}
                               for pid, name in PARTICIPANTS.items()])
    created = call(client, "POST", "/v1/admin/campaigns", ctx.operator_token, spec)
    ctx.timeline = Timeline(datetime.fromisoformat(created["claim_deadline"]),
                            datetime.fromisoformat(created["spending_deadline"]))
    call(client, "POST", f"/v1/admin/campaigns/{ctx.campaign_id}/open", ctx.operator_token)
    for pid, key in ctx.participants.items():
        commitment = hashlib.sha256(ctx.secrets[pid]).hexdigest()
        signature = key.sign(ceremony_commit_statement(ctx.campaign_id, pid, commitment)).hex()
        call(client, "POST", f"/v1/campaigns/{ctx.campaign_id}/ceremony/{pid}/commitment", None,
             {"commitment_hex": commitment, "signature_hex": signature})
    ctx.summary["campaign"] = ctx.campaign_id
    ctx.summary["winners planned"] = f"{winners:,} in {len(spec['strata'])} districts, 2 tiers"
    ctx.summary["ceremony"] = f"{len(PARTICIPANTS)} participants committed before close"


async def register_citizens(ctx: DemoContext) -> None:
    from sandbox.idp_keys import mint_citizen_tokens  # development tooling, not the product

    settings = ctx.settings
    assert settings.sandbox, "the demo runs in development"
    with console.status(f"signing {ctx.citizens:,} identity tokens (sandbox identity provider)"):
        ctx.tokens = mint_citizen_tokens(settings.sandbox_idp_dir, settings.idp_issuer,
                                         settings.idp_audience, 0, ctx.citizens)
    bodies = [json.dumps({"wallet": wallet}).encode() if (wallet := ctx.registered_wallet(i)) else b"{}"
              for i in range(ctx.citizens)]
    created = 0
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("registering citizens", total=ctx.citizens, rate="")

        def done(reply: Reply) -> None:
            nonlocal created
            if reply.status not in (200, 201):
                raise RuntimeError(f"registration failed: {reply.status} {reply.body[:200]!r}")
            created += reply.status == 201
            bar.update(task, advance=1, rate=f"{created / max(1e-6, time.perf_counter() - started):,.0f}/s")

        replies = await post_each(ctx.base_url, f"/v1/campaigns/{ctx.campaign_id}/registrations", ctx.tokens,
                                  bodies, concurrency=REGISTRATION_CONCURRENCY, on_reply=done)
    decoder = msgspec.json.Decoder(dict[str, Any])
    ctx.ticket_of = {i: int(decoder.decode(reply.body)["ticket"]) for i, reply in enumerate(replies)}
    elapsed = time.perf_counter() - started
    ctx.summary["registrations"] = f"{created:,} in {elapsed:.0f} s ({created / elapsed:,.0f}/s), signed receipts"


def draw(ctx: DemoContext, client: httpx.Client) -> None:
    cid = ctx.campaign_id
    with console.status("closing registration and committing the list (maker-checker)"):
        call(client, "POST", f"/v1/admin/campaigns/{cid}/close", ctx.operator_token)
        committed = approved(client, ctx, f"/v1/admin/campaigns/{cid}/commitment")["result"]
    ctx.summary["commitment"] = f"{committed['tree_size']:,} leaves, root {committed['root_hex'][:16]}..."
    with console.status("participants reveal; the beacon is fetched from the drand relay over HTTP"):
        for pid, key in ctx.participants.items():
            secret_hex = ctx.secrets[pid].hex()
            signature = key.sign(ceremony_reveal_statement(cid, pid, secret_hex, committed["root_hex"],
                                                           committed["tree_size"])).hex()
            call(client, "POST", f"/v1/campaigns/{cid}/ceremony/{pid}/reveal", None,
                 {"secret_hex": secret_hex, "signature_hex": signature})
        fetched = call(client, "POST", f"/v1/admin/campaigns/{cid}/beacon/fetch", ctx.operator_token)
    # The beacons worker may have fetched it first; either way the answer names the relay.
    ctx.summary["beacon"] = f"sandbox drand chain round {fetched['round']}, BLS-verified, from {fetched['relay']}"
    with console.status("drawing (maker-checker)"):
        drawn = approved(client, ctx, f"/v1/admin/campaigns/{cid}/draw")["result"]
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
    key = next(iter(call(client, "GET", "/v1/keys").values()))
    lines: list[str] = []
    with console.status("stimulus-verify: re-deriving root, seed, winners and cutoffs offline"):
        code = verify.run([str(bundle), "--registrants", str(registrants), "--service-key", key], say=lines.append)
    console.print(f"[bold]stimulus-verify[/bold] {bundle.name}: " + ("[green]PASS" if code == 0 else "[red]FAIL"))
    if code != 0:
        raise RuntimeError("the verifier failed:\n" + "\n".join(lines))
    envelope = json.loads(bundle.read_bytes())
    ctx.winners = {int(ticket): (stratum, int(amount))
                   for ticket, stratum, _tier, amount, _rank in envelope["bundle"]["draw"]["winners"]}
    ctx.summary["stimulus-verify"] = "PASS (root, seed, every stratum's winners and cutoffs, signatures)"
    ctx.published = out


def seconds_until(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds()
