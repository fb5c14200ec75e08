"""The beacon fetched from drand relays over real HTTP: the sandbox relay, and the same relay made to
answer garbage, another round, a bad signature, an error or too late, beside one that is down."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import httpx
import pytest

from kernel.db import create_pool
from kernel.embedded import free_port
from kernel.errors import InvalidInput, Unavailable
from lottery import beacon, beacon_worker, drand, drand_relays, verify
from lottery.beacon import BeaconSubmission
from sandbox.drand_chain import sign_round
from tests.conftest import Stack, settings_with
from tests.draw.test_draw_flow import _create, _maker_checker, _register
from tests.foundation.helpers import auth

TIMEOUT_MS = 1000  # the `slow` fault holds its answer for 3 s


def bad_relays(base: str) -> list[str]:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    return [f"{base}/fault/garbage", f"{base}/fault/other-round", f"{base}/fault/bad-signature", down,
            f"{base}/fault/slow", f"{base}/fault/error"]


async def test_fetch_falls_over_to_the_first_relay_that_verifies(drand_relay_url: str) -> None:
    relays = [*bad_relays(drand_relay_url), drand_relay_url]
    round_number = drand.SANDBOX.first_round_after(drand.SANDBOX.round_time(1000))
    found = await drand_relays.fetch_round(relays, drand.SANDBOX, round_number, TIMEOUT_MS / 1000)
    assert found.relay == drand_relay_url and found.round == round_number
    assert drand.verify_round(round_number, found.signature, drand.SANDBOX.public_key_hex)
    reasons = {r.relay.rsplit("/", 1)[-1]: r.reason for r in found.refusals}
    assert [r.relay for r in found.refusals] == relays[:-1]
    assert reasons["garbage"] == "the answer is not a drand beacon"
    assert reasons["other-round"] == f"answered round {round_number + 1}"
    assert reasons["bad-signature"] == "the signature does not verify against the chain's public key"
    assert reasons["slow"] == "no answer within 1 s"
    assert reasons["error"] == "HTTP 500"
    assert reasons[relays[3].rsplit("/", 1)[-1]].startswith("ConnectError")


async def test_quicknet_rounds_are_checked_against_the_pinned_key(drand_relay_url: str) -> None:
    # Recorded real quicknet rounds, served as a public relay would; the sandbox chain's key never verifies them.
    found = await drand_relays.fetch_round([f"{drand_relay_url}/fault/other-round", drand_relay_url],
                                           drand.QUICKNET, 123, TIMEOUT_MS / 1000)
    assert found.relay == drand_relay_url
    assert drand.randomness(found.signature).hex() == "fb8f7bc29bf24db51871ec8c79f3a1e4bd0557bc0dfcee9ed1d924e69d1c60dc"
    with pytest.raises(drand_relays.NoRelayAnswered, match="does not verify"):
        # The quicknet round asked for under the sandbox chain's name and key: the relay has no such
        # round of the sandbox chain's, or signs it with the wrong key.
        lying = drand.Chain(drand.QUICKNET.chain_hash, drand.SANDBOX.public_key_hex, drand.QUICKNET.genesis_time,
                            3, drand.QUICKNET.genesis_seed_hex, "quicknet")
        await drand_relays.fetch_round([drand_relay_url], lying, 123, TIMEOUT_MS / 1000)


async def test_every_relay_bad_is_a_clear_error(drand_relay_url: str) -> None:
    relays = bad_relays(drand_relay_url)
    with pytest.raises(drand_relays.NoRelayAnswered) as caught:
        await drand_relays.fetch_round(relays, drand.SANDBOX, 5000, TIMEOUT_MS / 1000)
    assert [r.relay for r in caught.value.refusals] == relays
    assert str(caught.value).startswith("no relay gave a valid round 5000: ")
    with pytest.raises(drand_relays.NoRelayAnswered, match="no relay is configured"):
        await drand_relays.fetch_round([], drand.SANDBOX, 5000)


async def _committed_campaign(http: httpx.AsyncClient, stack: Stack, maker: str, checker: str, first: int) -> str:
    campaign_id = await _create(http, maker, 6)
    await _register(http, stack, campaign_id, first, 10)
    assert (await http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(maker))).status_code == 200
    await _maker_checker(http, stack, f"/v1/admin/campaigns/{campaign_id}/commitment", maker, checker)
    return campaign_id


async def test_fetch_records_the_relay_that_answered(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, drand_relay_url: str, tmp_path: Path,
        operator_token: str, second_operator_token: str) -> None:
    campaign_id = await _committed_campaign(http, stack, operator_token, second_operator_token, 9400)
    relays = [*bad_relays(drand_relay_url)[:3], drand_relay_url]
    settings = settings_with(stack, drand_relays=tuple(relays), drand_timeout_ms=TIMEOUT_MS)
    fetched = await beacon.fetch_and_record(db, settings, campaign_id, "operator:test")
    assert fetched["relay"] == drand_relay_url and len(fetched["refusals"]) == 3
    row = await db.fetchrow("SELECT relay, record, round FROM beacons WHERE campaign_id = $1", campaign_id)
    assert row["relay"] == drand_relay_url
    assert "relay" not in row["record"] and row["record"]["path"] == "first-round-after-reveals"
    committed_at = await db.fetchval("SELECT committed_at FROM commitments WHERE campaign_id = $1", campaign_id)
    assert row["round"] == drand.SANDBOX.first_round_after(committed_at)
    audit = await db.fetchval("""SELECT details FROM audit_log WHERE subject = $1 AND action = 'draw.beacon'""",
                              campaign_id)
    assert audit["relay"] == drand_relay_url and [r["relay"] for r in audit["refusals"]] == relays[:3]
    # Fetching again changes nothing and says where the recorded round came from.
    again = await beacon.fetch_and_record(db, settings, campaign_id, "operator:test")
    assert again["signature_hex"] == fetched["signature_hex"] and again["relay"] == drand_relay_url

    await _maker_checker(http, stack, f"/v1/admin/campaigns/{campaign_id}/draw", operator_token,
                         second_operator_token)
    raw = (await http.get(f"/v1/campaigns/{campaign_id}/bundle")).content
    assert drand_relay_url not in raw.decode()
    bundle = json.loads(raw)["bundle"]
    assert bundle["sandbox"] is True and bundle["beacon"]["chain_hash"] == drand.SANDBOX.chain_hash
    (tmp_path / "b.json").write_bytes(raw)
    (tmp_path / "r.csv").write_bytes((await http.get(f"/v1/campaigns/{campaign_id}/registrants",
                                                     params={"format": "csv"})).content)
    lines: list[str] = []
    assert verify.run([str(tmp_path / "b.json"), "--registrants", str(tmp_path / "r.csv")], say=lines.append) == 0
    assert any(line.startswith("WARN beacon: SANDBOX chain round") for line in lines), lines


async def test_no_relay_reachable_then_submit_by_hand(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, drand_relay_url: str,
        operator_token: str, second_operator_token: str) -> None:
    campaign_id = await _committed_campaign(http, stack, operator_token, second_operator_token, 9500)
    settings = settings_with(stack, drand_relays=tuple(bad_relays(drand_relay_url)), drand_timeout_ms=TIMEOUT_MS)
    with pytest.raises(Unavailable) as caught:
        await beacon.fetch_and_record(db, settings, campaign_id, "operator:test")
    assert caught.value.code == "beacon_unavailable" and "beacon submit" in caught.value.detail
    assert await db.fetchval("SELECT count(*) FROM beacons WHERE campaign_id = $1", campaign_id) == 0
    failed = await db.fetchval("""SELECT details FROM audit_log WHERE subject = $1
                                  AND action = 'draw.beacon_fetch_failed'""", campaign_id)
    assert len(failed["refusals"]) == 6

    # The operator gets the round some other way and submits it; the same checks apply.
    committed_at = await db.fetchval("SELECT committed_at FROM commitments WHERE campaign_id = $1", campaign_id)
    round_number = drand.SANDBOX.first_round_after(committed_at)
    earlier = sign_round(round_number - 1).hex()
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/beacon", headers=auth(operator_token),
                        json={"kind": "sandbox", "round": round_number - 1, "signature_hex": earlier})
    assert r.status_code == 400 and r.json()["code"] == "wrong_beacon_round", r.text
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/beacon", headers=auth(operator_token),
                        json={"kind": "sandbox", "round": round_number, "signature_hex": earlier})
    assert r.status_code == 400 and r.json()["code"] == "beacon_invalid", r.text
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/beacon", headers=auth(operator_token),
                        json={"kind": "sandbox", "round": round_number, "signature_hex": sign_round(round_number).hex()})
    assert r.status_code == 200, r.text
    assert await db.fetchval("SELECT relay FROM beacons WHERE campaign_id = $1", campaign_id) is None


async def test_fetch_over_the_api_and_the_worker(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, drand_relay_url: str,
        operator_token: str, second_operator_token: str) -> None:
    campaign_id = await _committed_campaign(http, stack, operator_token, second_operator_token, 9600)
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/beacon/fetch", headers=auth(operator_token))
    assert r.status_code == 200, r.text
    assert r.json()["relay"] == drand_relay_url and "SANDBOX" in r.json()["warning"]

    # The worker takes the same path for a campaign nobody fetched for.
    other = await _committed_campaign(http, stack, operator_token, second_operator_token, 9700)
    assert stack.database_url
    pool = await create_pool(stack.database_url, 1, 2)
    try:
        settings = settings_with(stack, drand_relays=(drand_relay_url,))
        assert await beacon_worker.fetch_due(pool, settings) >= 1
    finally:
        await pool.close()
    row = await db.fetchrow("SELECT relay, recorded_by FROM beacons WHERE campaign_id = $1", other)
    assert row["relay"] == drand_relay_url and row["recorded_by"] == beacon_worker.ACTOR


async def test_sandbox_chain_is_refused_outside_development(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, drand_relay_url: str,
        operator_token: str, second_operator_token: str) -> None:
    campaign_id = await _committed_campaign(http, stack, operator_token, second_operator_token, 9800)
    production = settings_with(stack, environment="production", drand_relays=(drand_relay_url,))
    with pytest.raises(InvalidInput) as caught:
        await beacon.fetch_and_record(db, production, campaign_id, "operator:test")
    assert caught.value.code == "sandbox_beacon_refused"
    committed_at = await db.fetchval("SELECT committed_at FROM commitments WHERE campaign_id = $1", campaign_id)
    round_number = drand.SANDBOX.first_round_after(committed_at)
    signature = sign_round(round_number).hex()
    with pytest.raises(InvalidInput) as caught:
        await beacon.record(db, production, campaign_id,
                            BeaconSubmission(kind="sandbox", round=round_number, signature_hex=signature),
                            "operator:test")
    assert caught.value.code == "sandbox_beacon_refused"
