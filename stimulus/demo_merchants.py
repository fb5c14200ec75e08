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
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import httpx

from merchants.client import MerchantClient
from stimulus.demo_draw import DemoContext, call, console, progress
from stimulus.sandbox_idp import SANDBOX_DISTRICTS
from wallet_adapter.bank_protocol import SpendRequest, idempotency_key_for
from wallet_adapter.banks import BankRegistry, issuance_client_options

# Groceries, restaurants, department stores, variety stores, pharmacies accept the packets;
# electronics shops are registered too but the campaign does not accept them.
ACCEPTED_CATEGORIES = ("5411", "5812", "5311", "5331", "5912")
REFUSED_CATEGORY = "5732"
SPEND_CONCURRENCY = 32
SPENDING_SHARE = 0.8          # packets their owners spend at all
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
    refused: dict[str, int] = field(default_factory=dict)
    seeded: dict[str, int] = field(default_factory=dict)


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
                    f"{rng.choice(SANDBOX_DISTRICTS)},62220000{n:08d}")
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
    ctx.extras["spending"] = result
    multiplier = result.basket_fen / result.paid_fen if result.paid_fen else 0.0
    ctx.summary["spending"] = (f"{result.payments:,} payments, {result.paid_fen / 100:,.2f} yuan of packets in "
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
    for i, kind in enumerate(kinds):
        index = spent_once[(i + 1) * len(spent_once) // (len(kinds) + 1)]
        packet, merchant, amount, _ = plan[index]
        if kind == "duplicate":
            amount = min(amount, int(packet["amount_fen"]) // 2)
        plan[index] = (packet, merchant, amount, kind)
    result = Spending(seeded=dict(SEEDED))
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
                    return
                noted = amount + 100 if kind == "amount_mismatch" else amount
                basket = noted * rng.choice((1, 2, 2, 3, 4)) + rng.choice((0, 350, 1_280))
                result.basket_fen += basket if kind == "normal" else 0
                txns = [f"t{n}", f"t{n}-again"] if kind == "duplicate" else [f"t{n}"]
                for txn in txns:
                    reply = await till.redeem(txn, key, noted, occurred or datetime.now().astimezone(),
                                              bank_reference=spend_id, basket_fen=basket)
                    _count(result, reply)
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


def _count(result: Spending, reply: httpx.Response) -> None:
    if reply.status_code in (200, 202):
        result.notices += 1
        return
    code = str(reply.json().get("code", reply.status_code))
    result.refused[code] = result.refused.get(code, 0) + 1
