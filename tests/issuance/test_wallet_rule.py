"""One wallet rule for registration and claim, and a bulk issuance that never skips a packet
silently: a wallet kept from before the rule (or from a bank that has since left) leaves its
packet `allocated` with the reason, counted in the result and the progress, and still claimable."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tests.conftest import Stack
from tests.foundation.helpers import auth, citizen_token, open_campaign
from tests.issuance.helpers import claim, create_winners, maker_checker

BAD_WALLETS = [("HSBC", "W-1", "unknown_bank"), ("ICBC", "x' OR 1=1 10", "invalid_wallet"),
               ("icbc", "W-1", "invalid_wallet"), ("ICBC", "", "invalid_wallet"), ("ICBC", "w" * 65, "invalid_wallet")]


@pytest.mark.parametrize("bank,wallet_id,code", BAD_WALLETS)
async def test_registration_refuses_a_wallet_the_claim_would_refuse(
        http: httpx.AsyncClient, stack: Stack, operator_token: str, db: asyncpg.Connection,
        bank: str, wallet_id: str, code: str) -> None:
    campaign_id = await open_campaign(http, operator_token)
    token = citizen_token(stack.settings, 9_100_000 + len(wallet_id))
    response = await http.post(f"/v1/campaigns/{campaign_id}/registrations", headers=auth(token),
                               json={"wallet": {"bank_code": bank, "wallet_id": wallet_id}})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert await db.fetchval("SELECT count(*) FROM registrations WHERE campaign_id = $1", campaign_id) == 0


async def test_bulk_issuance_keeps_and_names_packets_whose_wallet_breaks_the_rule(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, operator_token: str,
        second_operator_token: str) -> None:
    w = await create_winners(http, stack.settings, operator_token, second_operator_token, winners=6,
                             registrants=8, with_wallets=True)
    tickets = sorted(w.tokens)
    # Wallets registered before the rule, or at a bank that has since left STIMULUS_BANKS.
    unknown, invalid = tickets[:2], tickets[2:3]
    await db.execute("UPDATE packets SET registered_bank = 'HSBC' WHERE campaign_id = $1 AND ticket = ANY($2)",
                     w.campaign_id, unknown)
    await db.execute("UPDATE packets SET registered_wallet = $3 WHERE campaign_id = $1 AND ticket = ANY($2)",
                     w.campaign_id, invalid, "x' OR 1=1 10")
    done = await maker_checker(http, f"/v1/admin/campaigns/{w.campaign_id}/issuance",
                               operator_token, second_operator_token, stack.settings)
    result = done["result"]
    assert result["queued"] == 3
    assert result["not_sent"] == {"unknown_bank": 2, "invalid_wallet": 1}
    assert result["not_sent_tickets"] == sorted(unknown + invalid)
    rows = {r["ticket"]: (r["state"], r["failure_code"]) for r in await db.fetch(
        "SELECT ticket, state, failure_code FROM packets WHERE campaign_id = $1", w.campaign_id)}
    assert {t: rows[t] for t in unknown + invalid} == {
        **dict.fromkeys(unknown, ("allocated", "unknown_bank")), **dict.fromkeys(invalid, ("allocated", "invalid_wallet"))}
    assert all(rows[t][0] == "issuing" for t in tickets[3:])
    progress = (await http.get(f"/v1/admin/campaigns/{w.campaign_id}/issuance",
                               headers=auth(operator_token))).json()
    assert progress["not_sent"] == {"unknown_bank": 2, "invalid_wallet": 1}
    # The winner may still claim with a wallet the rule accepts; the reason goes with the claim.
    reply = await claim(http, w.campaign_id, w.tokens[unknown[0]], "CCB", "W-fixed")
    assert reply.status_code == 202, reply.text
    assert await db.fetchrow("SELECT state, failure_code FROM packets WHERE campaign_id = $1 AND ticket = $2",
                             w.campaign_id, unknown[0]) == ("issuing", None)
