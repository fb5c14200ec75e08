"""Fixtures for the merchant tests, on the session stack and API (tests/conftest.py) and the
session sandbox bank (the wallet tests' fixture):

* `issued` - a campaign drawn and bulk-issued through the real API and issuance pipeline, once
  per session; `packet()` hands each test packets nobody else has spent from;
* `make_merchant(...)` / `merchant` - merchants registered through the admin API, each with a
  signing `MerchantClient`.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from kernel.settings import Settings
from merchants.client import MerchantClient
from tests.conftest import Stack
from tests.foundation.helpers import auth
from tests.issuance.helpers import (
    bank_settings,
    create_winners,
    maker_checker,
    pipeline,
    wait_for_states,
)
from tests.wallet.conftest import RunningBank
from tests.wallet.conftest import bank as bank  # the wallet tests' fixture, reused
from wallet_adapter.bank_protocol import idempotency_key_for

DEFAULT_CATEGORY = "5411"
DEFAULT_DISTRICT = "430102"
_merchants = itertools.count(1)


@dataclass(frozen=True)
class Packet:
    id: int
    campaign_id: str
    amount_fen: int
    bank_code: str
    wallet_id: str

    @property
    def payment_reference(self) -> str:
        return idempotency_key_for(self.campaign_id, str(self.id))


@dataclass
class IssuedCampaign:
    campaign_id: str
    packets: list[Packet]
    _next: int = field(default=0)

    def packet(self) -> Packet:
        if self._next >= len(self.packets):
            raise RuntimeError("the session campaign has no unspent packet left: raise ISSUED_WINNERS")
        self._next += 1
        return self.packets[self._next - 1]


async def issue_campaign(http: httpx.AsyncClient, settings: Settings, maker: str, checker: str,
                         db: asyncpg.Connection, prefix: str, *, winners: int, **spec: Any) -> IssuedCampaign:
    """A campaign drawn through the API with wallets given at registration, bulk-issued by the
    real dispatcher and worker against the sandbox bank until every packet is issued."""
    drawn = await create_winners(http, settings, maker, checker, winners=winners, registrants=winners + 2,
                                 with_wallets=True, **spec)
    await maker_checker(http, f"/v1/admin/campaigns/{drawn.campaign_id}/issuance", maker, checker, settings)
    async with pipeline(settings, prefix=prefix):
        await wait_for_states(db, drawn.campaign_id, ["issued"], winners, 60)
    rows = await db.fetch("SELECT id, amount_fen, wallet_bank, wallet_id FROM packets WHERE campaign_id = $1 "
                          "ORDER BY id", drawn.campaign_id)
    return IssuedCampaign(drawn.campaign_id, [Packet(r["id"], drawn.campaign_id, r["amount_fen"], r["wallet_bank"],
                                                     r["wallet_id"]) for r in rows])


ISSUED_WINNERS = 40


@pytest.fixture(scope="session")
def merchant_settings(stack: Stack, bank: RunningBank) -> Settings:
    return bank_settings(stack.settings, bank)


CampaignFactory = Callable[..., Awaitable[IssuedCampaign]]


@pytest.fixture(scope="session")
def new_issued_campaign(api_url: str, stack: Stack, merchant_settings: Settings, operator_token: str,
                        second_operator_token: str) -> CampaignFactory:
    """Makes a campaign of its own, issued to every winner, for tests that need exact figures."""
    from kernel.db import _init_connection

    async def make(winners: int = 6) -> IssuedCampaign:
        conn = await asyncpg.connect(stack.database_url)
        await _init_connection(conn)
        try:
            async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
                return await issue_campaign(http, merchant_settings, operator_token, second_operator_token, conn,
                                            f"test:{uuid.uuid4().hex[:10]}", winners=winners)
        finally:
            await conn.close()
    return make


@pytest.fixture(scope="session")
async def issued(new_issued_campaign: CampaignFactory) -> IssuedCampaign:
    return await new_issued_campaign(ISSUED_WINNERS)


@dataclass(frozen=True)
class RegisteredMerchant:
    id: str
    client: MerchantClient
    seed_hex: str
    category: str
    district: str


MerchantFactory = Callable[..., Awaitable[RegisteredMerchant]]


def new_merchant_id() -> str:
    return f"m-{datetime.now(UTC):%H%M%S}-{next(_merchants)}-{uuid.uuid4().hex[:4]}"


@pytest.fixture
async def make_merchant(api_url: str, operator_token: str) -> AsyncIterator[MerchantFactory]:
    made: list[MerchantClient] = []
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as admin_http:

        async def factory(category: str = DEFAULT_CATEGORY, district: str = DEFAULT_DISTRICT,
                          merchant_id: str | None = None) -> RegisteredMerchant:
            merchant_id = merchant_id or new_merchant_id()
            response = await admin_http.post("/v1/admin/merchants", headers=auth(operator_token), json={
                "id": merchant_id, "name": f"Shop {merchant_id}", "category": category, "district": district,
                "settlement_account": f"ACCT-{merchant_id[-8:].replace('.', '-')}"})
            assert response.status_code == 201, response.text
            seed_hex = response.json()["key"]["private_key_seed_hex"]
            client = MerchantClient(api_url, merchant_id, seed_hex)
            made.append(client)
            return RegisteredMerchant(merchant_id, client, seed_hex, category, district)

        try:
            yield factory
        finally:
            for client in made:
                await client.aclose()


@pytest.fixture
async def merchant(make_merchant: MerchantFactory) -> RegisteredMerchant:
    return await make_merchant()
