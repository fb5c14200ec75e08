"""The registration tallies (lottery/migrations/0103) against the table they count, on real PostgreSQL:
concurrent group-commit batches, withdrawals and deletes leave them equal to count(*); the
migration backfills what was there; the audit finds a drift; the public pages read them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from importlib import resources

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.errors import NotFound, WrongState
from lottery import registration, registration_counts
from lottery.ledger_checks import ledger_checks
from lottery.registration import NewRegistration, RegistrationWriter
from tests.conftest import Stack
from tests.foundation.helpers import auth, citizen_token, open_campaign

PEOPLE = 12
CAMPAIGNS = 2

_COUNTED = """SELECT count(*) FILTER (WHERE withdrawn_at IS NULL) AS live,
                     count(*) FILTER (WHERE withdrawn_at IS NOT NULL) AS withdrawn
              FROM registrations WHERE campaign_id = $1"""


def _person(n: int) -> bytes:
    return hashlib.sha256(f"tally-person-{n}".encode()).digest()


def _new(campaign_id: str, person: int) -> NewRegistration:
    return NewRegistration(campaign_id, _person(person), f"p{person}", "all",
                           hashlib.sha256(b"same payload").digest(), None, None)


async def _counted(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> tuple[int, int]:
    row = await conn.fetchrow(_COUNTED, campaign_id)
    assert row is not None
    return int(row["live"]), int(row["withdrawn"])


async def _tallied(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> tuple[int, int]:
    totals = await registration_counts.counts(conn, campaign_id)
    return totals.registrations, totals.withdrawn


@pytest.fixture(scope="module")
async def campaign_ids(api_url: str, operator_token: str) -> list[str]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        return [await open_campaign(http, operator_token) for _ in range(CAMPAIGNS)]


@pytest.fixture(scope="module")
async def pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    # Several backends, so the writer's concurrent batches land on different tally shards.
    async with asyncpg.create_pool(stack.database_url, min_size=6, max_size=6) as created:
        yield created


async def _register(writer: RegistrationWriter, campaign_id: str, person: int) -> None:
    # WrongState: the person's live row, which the insert gave way to, was withdrawn or deleted
    # before the writer could read it back; the registration was not stored.
    with contextlib.suppress(WrongState):
        await writer.register(_new(campaign_id, person))


async def _withdraw(pool: asyncpg.Pool, campaign_id: str, person: int) -> None:
    with contextlib.suppress(NotFound):  # not registered (yet, or any more)
        await registration.withdraw(pool, campaign_id, _person(person))


async def _delete(pool: asyncpg.Pool, campaign_id: str, person: int) -> None:
    # No product path deletes registrations; the trigger that would count it is checked all the same.
    await pool.execute("DELETE FROM registrations WHERE campaign_id = $1 AND id_hmac = $2", campaign_id, _person(person))


ACTION = st.tuples(st.sampled_from(["register", "register", "register", "withdraw", "delete"]),
                   st.integers(0, CAMPAIGNS - 1), st.integers(0, PEOPLE - 1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.lists(ACTION, min_size=1, max_size=40), min_size=1, max_size=4))
async def test_concurrent_registrations_withdrawals_and_deletes_leave_tallies_equal_to_count(
        pool: asyncpg.Pool, campaign_ids: list[str], rounds: list[list[tuple[str, int, int]]]) -> None:
    writer = RegistrationWriter(pool, max_batch=16, max_inflight=3)
    writer.start()
    try:
        for actions in rounds:  # each round's actions race each other; batches mix both campaigns
            work = []
            for kind, campaign, person in actions:
                campaign_id = campaign_ids[campaign]
                if kind == "register":
                    work.append(_register(writer, campaign_id, person))
                elif kind == "withdraw":
                    work.append(_withdraw(pool, campaign_id, person))
                else:
                    work.append(_delete(pool, campaign_id, person))
            await asyncio.gather(*work)
    finally:
        await writer.stop()
    for campaign_id in campaign_ids:
        assert await _tallied(pool, campaign_id) == await _counted(pool, campaign_id)
        async with pool.acquire() as conn:
            assert await ledger_checks(conn, campaign_id) == []


async def test_the_migration_backfills_existing_registrations(
        db: asyncpg.Connection, campaign_ids: list[str]) -> None:
    """Re-run 0103 on a database that already holds registrations (its tallies dropped first),
    all in one transaction that is rolled back."""
    sql = (resources.files("lottery") / "migrations" / "0103_registration_tallies.sql").read_text()
    campaign_id = campaign_ids[0]
    transaction = db.transaction()
    await transaction.start()
    try:
        await db.execute(
            """INSERT INTO registrations (campaign_id, id_hmac, pseudonym, stratum, payload_hash, withdrawn_at)
               SELECT $1, sha256(('backfill-' || n)::bytea), 'p' || n, 'all', '\\x00',
                      CASE WHEN n % 4 = 0 THEN now() END
               FROM generate_series(1, 200) AS n""", campaign_id)
        expected = await _counted(db, campaign_id)
        await db.execute("""DROP FUNCTION registration_tallies_after_insert, registration_tallies_after_update,
                                          registration_tallies_after_delete, registration_tallies_after_truncate
                            CASCADE;
                            DROP TABLE registration_tallies""")
        await db.execute(sql)
        assert await _tallied(db, campaign_id) == expected
        assert expected[1] >= 50
        await db.execute("UPDATE registrations SET withdrawn_at = now() WHERE campaign_id = $1 AND withdrawn_at IS NULL",
                         campaign_id)
        assert await _tallied(db, campaign_id) == (0, sum(expected))
    finally:
        await transaction.rollback()


async def test_the_audit_finds_a_tally_that_drifted(db: asyncpg.Connection, campaign_ids: list[str]) -> None:
    campaign_id = campaign_ids[1]
    assert await ledger_checks(db, campaign_id) == []
    transaction = db.transaction()
    await transaction.start()
    try:
        await db.execute("UPDATE registration_tallies SET live = live + 1 WHERE campaign_id = $1 AND shard = 0",
                         campaign_id)
        await db.execute("""INSERT INTO registration_tallies (campaign_id, shard, live, withdrawn)
                            VALUES ($1, 0, 1, 0) ON CONFLICT DO NOTHING""", campaign_id)
        breaks = await ledger_checks(db, None)
        mine = [b for b in breaks if f"campaign {campaign_id}:" in b.detail]
        assert [b.check for b in mine] == ["registration_tallies_match_registrations"]
        live, withdrawn = await _counted(db, campaign_id)
        assert f"tallies hold {live + 1} live" in mine[0].detail
        assert f"the table {live} live and {withdrawn} withdrawn" in mine[0].detail
    finally:
        await transaction.rollback()


async def test_the_public_pages_show_the_tally(
        http: httpx.AsyncClient, stack: Stack, operator_token: str) -> None:
    campaign_id = await open_campaign(http, operator_token)
    for n in range(3):
        response = await http.post(f"/v1/campaigns/{campaign_id}/registrations",
                                   headers=auth(citizen_token(stack.settings, 9_000 + n)))
        assert response.status_code == 201, response.text
    withdrawn = await http.delete(f"/v1/campaigns/{campaign_id}/registrations/me",
                                  headers=auth(citizen_token(stack.settings, 9_000)))
    assert withdrawn.status_code == 200, withdrawn.text
    await asyncio.sleep(registration_counts.PUBLIC_COUNT_TTL_S)
    page = await http.get(f"/v1/campaigns/{campaign_id}")
    assert page.status_code == 200 and page.json()["registrations"] == 2
    listed = (await http.get("/v1/campaigns")).json()
    assert [c["registrations"] for c in listed if c["id"] == campaign_id] == [2]
    admin = await http.get(f"/v1/admin/campaigns/{campaign_id}", headers=auth(operator_token))
    assert admin.json()["counts"] | {"ineligible_by_code": {}} == {
        "registrations": 2, "withdrawn": 1, "ineligible_by_code": {}}
