"""After a run, the system's own truth: what it acknowledged is what it holds, and the money adds up.

HTTP answers only say what the server claimed. These checks ask PostgreSQL and the operator
banks: every acknowledged registration is a committed row (and no row went unacknowledged);
every packet issued is one credit at a bank and no packet was credited twice; the ledger's
postings balance and the audit log's chain is intact.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from kernel import audit_log, ledger
from kernel.db import _init_connection

SANDBOX_BANK_API_KEY = "sandbox-api-key"
ISSUANCE_POLL_S = 2.0


@dataclass(frozen=True)
class Truth:
    name: str
    expected: str
    actual: str
    ok: bool


def _eq(name: str, expected: int, actual: int) -> Truth:
    return Truth(name, f"{expected:,}", f"{actual:,}", expected == actual)


async def registrations(conn: asyncpg.Connection, campaign_id: str, acks: dict[str, int]) -> list[Truth]:
    rows, ticket_sum = await conn.fetchrow(
        """SELECT count(*), COALESCE(sum(ticket), 0)::bigint FROM registrations
           WHERE campaign_id = $1 AND withdrawn_at IS NULL""", campaign_id)
    created = acks.get("registrations_created", 0)
    return [
        _eq("registrations acknowledged (201) == rows committed", created, int(rows)),
        _eq("sum of acknowledged tickets == sum of committed tickets",
            acks.get("registrations_created_ticket_sum", 0), int(ticket_sum)),
        _eq("repeated registrations (200) in a run of first-time citizens", 0,
            acks.get("registrations_repeated", 0)),
    ]


async def redemptions(conn: asyncpg.Connection, campaign_id: str, acks: dict[str, int]) -> list[Truth]:
    """Every notice a till was told was stored (202) is one row, with the amount it was told."""
    rows, fen, payments, reversals = await conn.fetchrow(
        """SELECT count(*), COALESCE(sum(amount_fen), 0)::bigint, count(*) FILTER (WHERE kind = 'payment'),
                  count(*) FILTER (WHERE kind = 'reversal')
           FROM redemption_notices WHERE campaign_id = $1""", campaign_id)
    return [
        _eq("payment notices acknowledged (202) == payment rows", acks.get("redemptions_accepted", 0), int(payments)),
        _eq("reversals acknowledged (202) == reversal rows", acks.get("reversals_accepted", 0), int(reversals)),
        _eq("fen acknowledged == fen stored", acks.get("redemptions_accepted_fen", 0)
            + acks.get("reversals_accepted_fen", 0), int(fen)),
        _eq("notices stored", acks.get("redemptions_accepted", 0) + acks.get("reversals_accepted", 0), int(rows)),
    ]


async def results(conn: asyncpg.Connection, campaign_id: str, won: list[int], lost: list[int]) -> list[Truth]:
    """Every answer to "did I win?" agrees with the draw the database holds."""
    winners = {int(r[0]) for r in await conn.fetch(
        "SELECT ticket FROM draw_winners WHERE campaign_id = $1", campaign_id)}
    wrong_won = sum(1 for t in won if t not in winners)
    wrong_lost = sum(1 for t in lost if t in winners)
    return [
        Truth("answers 'you won' are drawn winners", "0 wrong", f"{wrong_won:,} wrong of {len(won):,} tickets",
              wrong_won == 0),
        Truth("answers 'you did not win' are not drawn winners", "0 wrong",
              f"{wrong_lost:,} wrong of {len(lost):,} tickets", wrong_lost == 0),
    ]


async def ledger_and_log(conn: asyncpg.Connection, campaign_ids: list[str]) -> list[Truth]:
    """`stimulus audit ledger --campaign` for each campaign of the run, and the audit log's chain."""
    found: list[Truth] = []
    try:
        from stimulus.ledger_audit import audit
    except ModuleNotFoundError:
        breaks = await ledger.check_postings_balanced(conn)
        found.append(Truth("ledger postings sum to zero", "0 breaks", _breaks(breaks), not breaks))
    else:
        for cid in campaign_ids:
            breaks = await audit(conn, cid)
            found.append(Truth(f"stimulus audit ledger --campaign {cid}", "0 breaks", _breaks(breaks), not breaks))
    chain = await audit_log.verify_chain(conn)
    found.append(Truth("audit log hash chain intact", "intact",
                       f"{chain.rows:,} entries, " + ("intact" if chain.ok else f"broken at {chain.first_break}"),
                       chain.ok))
    return found


def _breaks(breaks: list[ledger.LedgerBreak]) -> str:
    return f"{len(breaks)} breaks" + (f": {breaks[0].check}: {breaks[0].detail}"[:160] if breaks else "")


async def claimed_packets(conn: asyncpg.Connection, campaign_id: str) -> dict[str, tuple[int, int]]:
    """Claimed packets by state: (count, fen)."""
    rows = await conn.fetch(
        """SELECT state, count(*) AS n, COALESCE(sum(amount_fen), 0)::bigint AS fen FROM packets
           WHERE campaign_id = $1 AND claimed_at IS NOT NULL GROUP BY state""", campaign_id)
    return {r["state"]: (int(r["n"]), int(r["fen"])) for r in rows}


def claims(database_url: str, bank_url: str | None, banks: list[str], campaign_id: str,
           acks: dict[str, int], wait_s: float, every_winner: int | None = None,
           claimed_in_set_up: int = 0, bank_api_key: str = SANDBOX_BANK_API_KEY) -> list[Truth]:
    """Every acknowledged claim is a claimed packet; every claimed packet ends issued, once, at a
    bank that holds exactly that credit. `claimed_in_set_up` packets were claimed before the run
    (for the merchants' tills to spend)."""
    def snapshot() -> dict[str, tuple[int, int]]:
        result: dict[str, tuple[int, int]] = run_db(database_url, lambda c: claimed_packets(c, campaign_id))
        return result

    accepted = acks.get("claims_accepted", 0)
    claimed = sum(n for n, _ in snapshot().values())
    found = [_eq("claims acknowledged (202) == packets claimed" + (
        f" (+ {claimed_in_set_up:,} claimed in set-up)" if claimed_in_set_up else ""),
        accepted + claimed_in_set_up, claimed)]
    if every_winner is not None:
        found.append(_eq("every winner's claim acknowledged", every_winner, accepted))
    started = time.monotonic()
    wait_until(lambda: "issuing" not in snapshot(), wait_s)
    states = snapshot()
    issued, issued_fen = states.get("issued", (0, 0))
    found.append(Truth(f"claimed packets issued (waited {time.monotonic() - started:.0f} s)",
                       f"{claimed:,} issued", ", ".join(f"{n:,} {s}" for s, (n, _) in sorted(states.items()))
                       or "none", issued == claimed))
    if bank_url is None:
        found.append(Truth("packets issued == bank credits", "the bank's books", "no bank URL known", False))
        return found
    books = bank_books(bank_url, banks, campaign_id, bank_api_key)
    found += [
        _eq("packets issued == bank credits", issued, books["credits"]),
        _eq("fen issued == fen credited by the banks", issued_fen, books["credited_fen"]),
        _eq("packets credited twice (bank books)", 0, books["double_credits"]),
    ]
    return found


def bank_books(bank_url: str, banks: list[str], campaign_id: str,
               api_key: str = SANDBOX_BANK_API_KEY) -> dict[str, int]:
    """The operator banks' own totals for a campaign, summed over the banks."""
    totals = {"credits": 0, "credited_fen": 0, "double_credits": 0}
    with httpx.Client(base_url=bank_url, timeout=30, headers={"Authorization": f"Bearer {api_key}"}) as client:
        for code in banks:
            books = client.get(f"/banks/{code}/v1/books", params={"campaign_id": campaign_id})
            books.raise_for_status()
            body: dict[str, Any] = books.json()
            for key in totals:
                totals[key] += int(body.get(key, 0))
    return totals


def wait_until(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(ISSUANCE_POLL_S)
    return bool(predicate())


def run_db(database_url: str, fn: Any) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(database_url)
        # The codecs the application uses: the audit log's hashes cover its jsonb as decoded.
        await _init_connection(conn)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(go())
