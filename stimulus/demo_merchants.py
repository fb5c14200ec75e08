"""The demo's merchants: onboarding, citizens spending their packets, the tills' signed notices
with a few seeded breaks, then the banks' settlement files and reconciliation.

A payment happens at the citizen's bank (the sandbox bank's spend call stands in for the wallet
app) and the merchant's till then sends its notice to us; the seeded breaks are the ways those two
records disagree in real life, and reconciliation must find each of them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import httpx

from kernel.db import _init_connection
from kernel.sample import SAMPLE_DISTRICTS
from merchants.client import MerchantClient
from merchants.settlement import ImportResult
from merchants.settlement_fetch import fetch_day
from stimulus.demo_draw import DemoContext, call, console, progress
from stimulus.loadgen import UNAVAILABLE_PAUSE_S, UNAVAILABLE_RETRIES
from wallet_adapter.bank_protocol import (
    RefundRequest,
    SpendRequest,
    idempotency_key_for,
    settlement_date_of,
)
from wallet_adapter.banks import BankRegistry, issuance_client_options

# Groceries, restaurants, department stores, variety stores, pharmacies accept the packets;
# electronics shops are registered too but the campaign does not accept them.
ACCEPTED_CATEGORIES = ("5411", "5812", "5311", "5331", "5912")
REFUSED_CATEGORY = "5732"
SPEND_CONCURRENCY = 32
SPENDING_SHARE = 0.8          # packets their owners spend at all
REFUND_SHARE = 0.02           # payments the shop refunds half of, back onto the packet
SEEDED = {"missing_at_bank": 3, "missing_at_merchant": 3, "amount_mismatch": 3, "duplicate": 2}


@dataclass
class Merchant:
    id: str
    category: str
    seed_hex: str


@dataclass
class Spending:
    payments: int = 0
    paid_fen: int = 0
    basket_fen: int = 0
    notices: int = 0
    refunds: int = 0
    refunded_fen: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    seeded: dict[str, int] = field(default_factory=dict)
    # Payments whose till never sent its notice: (merchant, packet reference, spend id, fen, when).
    unsent: list[tuple[Merchant, str, str, int, datetime]] = field(default_factory=list)


def merchant_count(citizens: int) -> int:
    return max(12, min(3000, citizens // 40))


def onboard(ctx: DemoContext, client: httpx.Client) -> list[Merchant]:
    """Register merchants from a CSV file, as a city imports its merchant list."""
    count = merchant_count(ctx.citizens)
    rng = random.Random(7)
    categories = [*ACCEPTED_CATEGORIES, REFUSED_CATEGORY]
    rows = ["id,name,category,district,settlement_account"]
    for n in range(count):
        rows.append(f"{ctx.campaign_id}-m{n:05d},Shop {n},{categories[n % len(categories)]},"
                    f"{rng.choice(SAMPLE_DISTRICTS)},62220000{n:08d}")
    with console.status(f"importing {count:,} merchants from CSV (keys issued once)"):
        response = client.post("/v1/admin/merchants/import", content="\n".join(rows).encode(),
                               headers={"Authorization": f"Bearer {ctx.operator_token}",
                                        "Content-Type": "text/csv"})
        if response.status_code != 201:
            raise RuntimeError(f"merchant import: {response.status_code} {response.text[:300]}")
        keys = {k["merchant_id"]: k["private_key_seed_hex"] for k in response.json()["keys"]}
        call(client, "PUT", f"/v1/admin/campaigns/{ctx.campaign_id}/acceptance", ctx.operator_token,
             {"categories": list(ACCEPTED_CATEGORIES), "districts": []})
    merchants = [Merchant(mid, categories[int(mid[-5:]) % len(categories)], seed) for mid, seed in keys.items()]
    ctx.summary["merchants"] = (f"{count:,} imported; the campaign accepts {len(ACCEPTED_CATEGORIES)} categories "
                                f"(not electronics, {REFUSED_CATEGORY})")
    return merchants


def spend(ctx: DemoContext, client: httpx.Client) -> None:
    merchants = onboard(ctx, client)
    result = asyncio.run(_spend_all(ctx, merchants))
    ctx.spending = result
    multiplier = result.basket_fen / result.paid_fen if result.paid_fen else 0.0
    ctx.summary["spending"] = (f"{result.payments:,} payments and {result.refunds:,} refunds "
                               f"({result.refunded_fen / 100:,.2f} yuan back), {result.paid_fen / 100:,.2f} yuan of packets in "
                               f"{result.basket_fen / 100:,.2f} yuan of baskets (x{multiplier:.2f})")
    refused = ", ".join(f"{code} {n}" for code, n in sorted(result.refused.items())) or "none"
    ctx.summary["merchant notices"] = f"{result.notices:,} accepted (pending reconciliation); refused: {refused}"
    ctx.summary["seeded breaks"] = ", ".join(f"{k} {v}" for k, v in result.seeded.items())


async def _issued_packets(ctx: DemoContext) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(ctx.settings.database_url)
    try:
        return list(await conn.fetch(
            "SELECT id, wallet_bank, amount_fen FROM packets WHERE campaign_id = $1 AND state = 'issued' ORDER BY id",
            ctx.campaign_id))
    finally:
        await conn.close()


async def _spend_all(ctx: DemoContext, merchants: list[Merchant]) -> Spending:
    rng = random.Random(11)
    packets = await _issued_packets(ctx)
    accepted = [m for m in merchants if m.category != REFUSED_CATEGORY]
    refused_shop = next(m for m in merchants if m.category == REFUSED_CATEGORY)
    # (packet, merchant, amount, what happens: normal or a seeded break)
    plan: list[tuple[asyncpg.Record, Merchant, int, str]] = []
    for packet in packets:
        if rng.random() >= SPENDING_SHARE:
            continue
        left = int(packet["amount_fen"])
        for _ in range(rng.choice((1, 1, 2))):
            amount = min(left, rng.choice((1_500, 2_800, 4_990, 6_600, 10_000, 12_000)))
            if amount <= 0:
                break
            plan.append((packet, rng.choice(accepted), amount, "normal"))
            left -= amount
    # Seeded breaks go to packets spent once, spread over the plan; a duplicate is a small
    # payment so that notifying it twice still fits the packet's balance.
    spent_once = [i for i, item in enumerate(plan)
                  if sum(1 for other in plan[max(0, i - 2):i + 3] if other[0]["id"] == item[0]["id"]) == 1]
    kinds = [kind for kind, n in SEEDED.items() for _ in range(n)]
    # Distinct payments, evenly spread; a small demo seeds as many as it has payments for.
    positions = sorted({spent_once[(i + 1) * len(spent_once) // (len(kinds) + 1)] for i in range(len(kinds))}
                       if spent_once else set())
    seeded: dict[str, int] = {}
    for index, kind in zip(positions, kinds, strict=False):
        packet, merchant, amount, _ = plan[index]
        if kind == "duplicate":
            amount = min(amount, int(packet["amount_fen"]) // 2)
        plan[index] = (packet, merchant, amount, kind)
        seeded[kind] = seeded.get(kind, 0) + 1
    result = Spending(seeded=seeded)
    banks = await BankRegistry.open(ctx.settings, issuance_client_options(concurrency=SPEND_CONCURRENCY))
    semaphore = asyncio.Semaphore(SPEND_CONCURRENCY)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=ctx.base_url, timeout=60,
                                 limits=httpx.Limits(max_connections=SPEND_CONCURRENCY)) as http:
        tills = {m.id: MerchantClient(ctx.base_url, m.id, m.seed_hex, http=http) for m in [*accepted, refused_shop]}

        async def one(n: int, packet: asyncpg.Record, merchant: Merchant, amount: int, kind: str) -> None:
            key = idempotency_key_for(ctx.campaign_id, str(packet["id"]))
            spend_id = f"{ctx.campaign_id}-s{n}"
            till = tills[merchant.id]
            async with semaphore:
                occurred: datetime | None = None
                if kind != "missing_at_bank":
                    paid = await banks.client(packet["wallet_bank"]).spend(key, SpendRequest(
                        spend_id=spend_id, amount_fen=amount, merchant_id=merchant.id,
                        merchant_category=merchant.category))
                    occurred = paid.settled_at
                    result.payments += 1
                    result.paid_fen += amount
                if kind == "missing_at_merchant":
                    assert occurred is not None
                    result.unsent.append((merchant, key, spend_id, amount, occurred))
                    return
                # The till keys in less than the wallet paid (a typo), so the balance rule still lets it in.
                noted = amount - 100 if kind == "amount_mismatch" else amount
                basket = noted * rng.choice((1, 2, 2, 3, 4)) + rng.choice((0, 350, 1_280))
                result.basket_fen += basket if kind == "normal" else 0
                txns = [f"t{n}", f"t{n}-again"] if kind == "duplicate" else [f"t{n}"]
                for txn in txns:
                    reply = await _retried(partial(till.redeem, txn, key, noted,
                                                   occurred or datetime.now().astimezone(),
                                                   bank_reference=spend_id, basket_fen=basket))
                    _count(result, reply)
                if kind == "normal" and rng.random() < REFUND_SHARE:
                    # The customer brings half of it back: the bank refunds the packet, the till says so.
                    back = await banks.client(packet["wallet_bank"]).refund(key, RefundRequest(
                        refund_id=f"{spend_id}-r", spend_id=spend_id, amount_fen=max(1, amount // 2),
                        merchant_id=merchant.id))
                    _count(result, await _retried(partial(till.reverse, f"t{n}", f"t{n}-r", back.amount_fen,
                                                          back.settled_at, bank_reference=back.refund_id)))
                    result.refunds += 1
                    result.refunded_fen += back.amount_fen
            bar.update(task, advance=1,
                       rate=f"{(result.payments + 1) / max(1e-6, time.perf_counter() - started):,.0f}/s")

        with progress() as bar:
            task = bar.add_task("citizens spend, tills notify", total=len(plan), rate="")
            try:
                await asyncio.gather(*[one(n, *item) for n, item in enumerate(plan)])
                # A till at a shop the campaign does not accept: refused, nothing stored.
                packet = plan[0][0]
                reply = await tills[refused_shop.id].redeem(
                    "t-refused", idempotency_key_for(ctx.campaign_id, str(packet["id"])), 100,
                    datetime.now().astimezone())
                _count(result, reply)
            finally:
                await banks.aclose()
    return result


async def _retried(send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """A till sends a notice again while the API answers 503, as the loadgen's clients do; each try
    is signed afresh, and the notice's own id keeps a stored one from counting twice."""
    for _ in range(UNAVAILABLE_RETRIES):
        reply = await send()
        if reply.status_code != 503:
            return reply
        await asyncio.sleep(UNAVAILABLE_PAUSE_S)
    return await send()


def _count(result: Spending, reply: httpx.Response) -> None:
    if reply.status_code in (200, 202):
        result.notices += 1
        return
    code = str(reply.json().get("code", reply.status_code))
    result.refused[code] = result.refused.get(code, 0) + 1


# -- settlement and reconciliation -------------------------------------------------------------

# The demo's clocks are one machine's: a few seconds is window enough, and merchants have had
# all the time they will get once the spending is over.
RECONCILE_WINDOW_S = 3.0
RUN_RETRY_S = 60.0


def _reconcile_run(ctx: DemoContext, client: httpx.Client) -> dict[str, Any]:
    """A run through the admin API; the stack's own reconcile worker may hold the lock a moment."""
    deadline = time.monotonic() + RUN_RETRY_S
    while True:
        reply = client.post("/v1/admin/reconciliation/runs", json={"window_s": RECONCILE_WINDOW_S, "grace_s": 0},
                            headers={"Authorization": f"Bearer {ctx.operator_token}"})
        if reply.status_code == 201:
            result: dict[str, Any] = reply.json()
            return result
        if reply.status_code != 409 or time.monotonic() > deadline:
            raise RuntimeError(f"reconciliation run: {reply.status_code} {reply.text[:300]}")
        time.sleep(0.5)


async def _fetch_files(ctx: DemoContext) -> list[ImportResult]:
    """Yesterday's and today's files from every bank, as `stimulus worker reconcile` fetches them."""
    today = settlement_date_of(datetime.now(UTC))
    banks = await BankRegistry.open(ctx.settings, issuance_client_options())
    conn = await asyncpg.connect(ctx.settings.database_url)
    await _init_connection(conn)
    try:
        return [await fetch_day(conn, bank, day, "demo") for bank in banks
                for day in (today - timedelta(days=1), today)]
    finally:
        await conn.close()
        await banks.aclose()


async def _late_notice(ctx: DemoContext, unsent: tuple[Merchant, str, str, int, datetime]) -> int:
    merchant, key, spend_id, amount, occurred = unsent
    till = MerchantClient(ctx.base_url, merchant.id, merchant.seed_hex)
    try:
        reply = await till.redeem(f"late-{spend_id}", key, amount, occurred, bank_reference=spend_id)
    finally:
        await till.aclose()
    return reply.status_code


def _open_breaks(ctx: DemoContext, client: httpx.Client) -> dict[str, int]:
    counts: dict[str, int] = {}
    after = 0
    while True:
        page = call(client, "GET", f"/v1/admin/reconciliation/breaks?campaign={ctx.campaign_id}&after={after}"
                    "&limit=1000", ctx.operator_token)
        for item in page:
            counts[item["class"]] = counts.get(item["class"], 0) + 1
        if len(page) < 1000:
            return counts
        after = page[-1]["id"]


def reconcile(ctx: DemoContext, client: httpx.Client) -> None:
    """The banks' settlement files, two reconciliation runs with a till catching up in between,
    and the breaks found against the breaks seeded."""
    spending = ctx.spending
    assert spending is not None, "the spending round runs before reconciliation"
    with console.status("settlement: waiting out the matching window, fetching the banks' files"):
        time.sleep(RECONCILE_WINDOW_S)
        files = asyncio.run(_fetch_files(ctx))
    # The stack's own reconcile worker may have fetched earlier versions of today's files: their
    # lines come back as repeated, not stored twice.
    lines = sum(f.lines + f.repeated for f in files)
    ctx.summary["settlement files"] = (f"{len(files)} fetched from {len({f.bank_code for f in files})} banks, "
                                       f"{lines:,} lines, {sum(f.rejected for f in files)} rejected")
    with console.status("reconciling notices with settlement lines"):
        first = _reconcile_run(ctx, client)
        late = 0
        if spending.unsent:
            late_status = asyncio.run(_late_notice(ctx, spending.unsent[0]))
            if late_status != 202:
                raise RuntimeError(f"the late notice was refused: HTTP {late_status}")
            late = 1
            second = _reconcile_run(ctx, client)
        else:
            second = first
    found = _open_breaks(ctx, client)
    expected = dict(spending.seeded)
    if late:
        expected["missing_at_merchant"] -= 1
        expected["late"] = 1
    expected = {k: v for k, v in expected.items() if v}
    report = call(client, "GET", f"/v1/admin/campaigns/{ctx.campaign_id}/report", ctx.operator_token)
    notices = report["notices"]
    matched = notices.get("payment:matched", 0)
    payments = sum(n for key, n in notices.items() if key.startswith("payment:"))
    refunds = sum(n for key, n in notices.items() if key.startswith("reversal:"))
    ok = found == expected
    ctx.reconciliation_ok = ok
    ctx.summary["reconciliation"] = (
        f"{matched:,} of {payments:,} payment notices and {notices.get('reversal:matched', 0):,} of {refunds:,} "
        f"refunds matched, {report['money']['redeemed_fen'] / 100:,.2f} yuan "
        f"redeemed; open breaks {', '.join(f'{k} {v}' for k, v in sorted(found.items()))} "
        f"({'all seeded breaks found, no false ones' if ok else 'EXPECTED ' + str(expected)}); "
        f"last run: {second['outcome']}")


def save_report(ctx: DemoContext, client: httpx.Client) -> None:
    """The campaign report's printable page, kept with the published bundle."""
    page = client.get(f"/v1/admin/campaigns/{ctx.campaign_id}/report.html",
                      headers={"Authorization": f"Bearer {ctx.operator_token}"})
    page.raise_for_status()
    ctx.report_page = ctx.settings.state_dir / "published" / f"report-{ctx.campaign_id}.html"
    ctx.report_page.parent.mkdir(parents=True, exist_ok=True)
    ctx.report_page.write_text(page.text, encoding="utf-8")
