"""The demo's money: claims and bulk issuance, the claim deadline, expiry, and the books' audit."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import asyncpg
import httpx

from kernel.db import create_pool
from kernel.errors import WrongState
from kernel.settings import Settings
from stimulus.demo_draw import BANKS, DemoContext, approved, call, console, progress, seconds_until
from stimulus.ledger_audit import audit
from stimulus.loadgen import Reply, post_each

CLAIM_CONCURRENCY = 32
# One winner in twenty never claims: their packets go back to the budget at the claim deadline.
UNCLAIMED_EVERY = 20


def claimants(ctx: DemoContext) -> list[int]:
    """Winners without a wallet from registration who claim (all but one in twenty)."""
    winning = [i for i, ticket in ctx.ticket_of.items() if ticket in ctx.winners]
    return [i for n, i in enumerate(winning) if ctx.registered_wallet(i) is None and n % UNCLAIMED_EVERY != 7]


async def _claims(ctx: DemoContext, who: list[int]) -> dict[int, int]:
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("winners claim (bind a wallet)", total=len(who), rate="")

        def done(reply: Reply) -> None:
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
            bar.update(task, advance=1, rate=f"{sum(statuses.values()) / max(1e-6, time.perf_counter() - started):,.0f}/s")

        bodies = [json.dumps({"wallet": {"bank_code": BANKS[i % len(BANKS)], "wallet_id": f"w-{i}"}}).encode()
                  for i in who]
        await post_each(ctx.base_url, f"/v1/campaigns/{ctx.campaign_id}/claim", [ctx.tokens[i] for i in who],
                        bodies, concurrency=CLAIM_CONCURRENCY, on_reply=done)
    return statuses


def issue(ctx: DemoContext, client: httpx.Client) -> None:
    """Bulk issuance to the wallets given at registration (maker-checker), then the claims."""
    cid = ctx.campaign_id
    with console.status("bulk issuance to wallets named at registration (maker-checker)"):
        bulk = approved(client, ctx, f"/v1/admin/campaigns/{cid}/issuance")["result"]
    who = claimants(ctx)
    statuses = asyncio.run(_claims(ctx, who))
    refused = {status: n for status, n in statuses.items() if status != 202}
    if refused:
        console.print(f"[yellow]claims refused: {refused} (a slow machine reached the claim deadline)")
    ctx.summary["issuance"] = (f"{bulk['queued']:,} bulk (wallets from registration), "
                               f"{statuses.get(202, 0):,} claims, {len(ctx.winners) - bulk['queued'] - len(who):,}"
                               " winners never claim")
    wait_issuance(ctx, client)


def wait_issuance(ctx: DemoContext, client: httpx.Client) -> dict[str, Any]:
    path = f"/v1/admin/campaigns/{ctx.campaign_id}/issuance"
    with progress() as bar:
        task = bar.add_task("issuing red packets at 3 banks", total=None, rate="")
        while True:
            state = call(client, "GET", path, ctx.operator_token)
            target = state["packets"] - state["unclaimed"]
            bar.update(task, total=target, completed=state["issued"] + state["failed"],
                       rate=f"{state['rate_per_s']:,.0f}/s, {state['failed']} failed, "
                            f"{state['dead_letters']} parked")
            if state["pending"] == 0 and state["issued"] + state["failed"] >= target:
                break
            time.sleep(0.5)
    per_bank = ", ".join(f"{b['bank_code']} {b['issued']:,}" for b in state["banks"])
    ctx.summary["issued"] = f"{state['issued']:,} packets, {state['issued_fen'] / 100:,.0f} yuan ({per_bank})"
    return dict(state)


def wait_claim_deadline(ctx: DemoContext, client: httpx.Client) -> None:
    """At the claim deadline the dispatcher cancels unclaimed packets back to the budget."""
    assert ctx.timeline is not None
    _countdown("claim deadline", ctx.timeline.claim_deadline)
    path = f"/v1/admin/campaigns/{ctx.campaign_id}/issuance"
    with console.status("unclaimed packets go back to the budget"):
        deadline = time.monotonic() + 60
        while True:
            state = call(client, "GET", path, ctx.operator_token)
            if state["by_state"].get("allocated", 0) == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    ctx.summary["cancelled at the claim deadline"] = f"{state['by_state'].get('cancelled', 0):,} packets"


def _countdown(what: str, moment: Any) -> None:
    total = max(0.0, seconds_until(moment))
    if total <= 0:
        return
    with progress() as bar:
        task = bar.add_task(f"waiting for the {what}", total=round(total), rate="(days, in the demo's clock)")
        while (left := seconds_until(moment)) > 0:
            bar.update(task, completed=round(total - left))
            time.sleep(min(0.5, left))
        bar.update(task, completed=round(total))


def expire(ctx: DemoContext, settings: Settings) -> None:
    """At the spending deadline: reclaim what nobody spent, until nothing is left."""
    assert ctx.timeline is not None
    _countdown("spending deadline", ctx.timeline.spending_deadline)
    report = asyncio.run(_expire(settings, ctx.campaign_id))
    ctx.summary["expiry"] = (f"{report['reclaimed']:,} packets reclaimed, "
                             f"{report['reclaimed_fen'] / 100:,.2f} yuan back to the budget")


async def _expire(settings: Settings, campaign_id: str) -> dict[str, Any]:
    from wallet_adapter import expiry
    from wallet_adapter.banks import BankRegistry, issuance_client_options

    assert settings.database_url
    pool = await create_pool(settings.database_url, 1, 8, pooler=settings.db_pooler)
    banks = await BankRegistry.open(settings, issuance_client_options(concurrency=32))
    try:
        with console.status("reclaiming unspent balances from the banks"):
            # The dispatcher's deadline job may be expiring the campaign already: either run finishes it.
            for _ in range(60):
                try:
                    report = await expiry.expire(pool, banks, campaign_id, "operator:demo")
                except WrongState:  # another run holds the campaign's expiry
                    await asyncio.sleep(1)
                    continue
                if not report.left:
                    break
                await asyncio.sleep(1)
            else:
                raise RuntimeError(f"expiry of {campaign_id} did not finish")
        row = await pool.fetchrow(
            """SELECT count(*) FILTER (WHERE state = 'reclaimed') AS reclaimed,
                      COALESCE(sum(reclaimed_fen), 0)::bigint AS reclaimed_fen
               FROM packets WHERE campaign_id = $1""", campaign_id)
    finally:
        await banks.aclose()
        await pool.close()
    return {"reclaimed": int(row["reclaimed"]), "reclaimed_fen": int(row["reclaimed_fen"])}


def audit_books(ctx: DemoContext, settings: Settings) -> bool:
    """The ledger's invariants, and each bank's books against our ledger to the fen."""
    breaks, balances, books = asyncio.run(_audit(settings, ctx.campaign_id))
    for item in breaks:
        console.print(f"[red]ledger break[/red] {item.check}: {item.detail}")
    credited = sum(b.credited_fen for b in books)
    reclaimed = sum(b.reclaimed_fen for b in books)
    doubles = sum(b.double_credits for b in books)
    # What the banks credited and did not take back is what our issued + redeemed accounts hold.
    ours = balances.get("issued", 0) + balances.get("redeemed", 0)
    agree = credited - reclaimed == ours
    ctx.summary["ledger audit"] = "clean" if not breaks else f"{len(breaks)} breaks"
    ctx.summary["banks' books vs ledger"] = (
        f"credited {credited / 100:,.2f} - reclaimed {reclaimed / 100:,.2f} yuan "
        f"{'=' if agree else '!='} issued + redeemed {ours / 100:,.2f} yuan; {doubles} double credits")
    ctx.summary["ledger balances (fen)"] = ", ".join(f"{k} {v:,}" for k, v in sorted(balances.items()))
    console.print("[bold]stimulus audit ledger[/bold]: " + ("[green]clean" if not breaks else "[red]BREAKS"))
    return not breaks and doubles == 0 and agree


async def _audit(settings: Settings, campaign_id: str) -> tuple[list[Any], dict[str, int], list[Any]]:
    from kernel import ledger
    from wallet_adapter.banks import BankRegistry

    conn = await asyncpg.connect(settings.database_url)
    try:
        breaks = await audit(conn, campaign_id)
        balances = await ledger.balances(conn, campaign_id)
    finally:
        await conn.close()
    banks = await BankRegistry.open(settings)
    try:
        books = [await client.books(campaign_id) for client in banks]
    finally:
        await banks.aclose()
    return breaks, balances, books


def with_bank(settings: Settings, bank_url: str) -> Settings:
    return replace(settings, bank_url=bank_url)
