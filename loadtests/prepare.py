"""Set-up before the measured run, through the real API: campaigns, registrants, a finished draw.

Everything the simulated users need is made here and written to the run's plan: identity tokens
(signed in worker processes, one file per population, `number<TAB>token` per line), campaign
ids, the committed root the citizens' app trusts, the winners. Registrations for campaigns that
must already be drawn go through the lean client of `stimulus.loadgen`, which costs the machine
less than locust would, and are not part of any measurement.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from kernel.db import _init_connection
from kernel.sample import sample_campaign
from kernel.settings import Settings
from kernel.signing import SigningKey
from lottery.statements import ceremony_commit_statement, ceremony_reveal_statement
from sandbox.idp_keys import mint_citizen_tokens
from stimulus.loadgen import post_each
from wallet_adapter.bank_protocol import idempotency_key_for

# Synthetic citizens are unique below ~120M; each population takes its own range, far from the
# small numbers tests use, so identity rate-limit buckets never meet.
CITIZEN_BASE = {"registration": 10_000_000, "results": 30_000_000, "claims": 60_000_000,
                "redemptions": 90_000_000}
BANKS = ("ICBC", "CCB", "BOC")
SETUP_CONCURRENCY = 48
# Registrations the API answered 503 (its database deadline passed on a busy machine) are sent
# again, as the app does: the retry stores the registration or answers the one already stored.
SETUP_RETRY_ROUNDS = 5
SETUP_RETRY_PAUSE_S = 1.0
MERCHANT_CATEGORIES = ("5411", "5812", "5311", "5912")
MERCHANT_DISTRICTS = ("430102", "430103", "430104", "430105", "430111", "430112")
ISSUED_WAIT_MIN_S = 120.0
ISSUED_FLOOR_PER_S = 50.0
TOKEN_TTL_S = 12 * 3600
ADMIN_TIMEOUT_S = 900.0
JOB_WAIT_S = ADMIN_TIMEOUT_S  # the draw of a large campaign, run by the jobs worker


class SetupError(Exception):
    """Set-up through the API failed; the message carries the answer that stopped it."""


@dataclass
class DrawnCampaign:
    campaign_id: str
    root_hex: str
    tree_size: int
    numbers: list[int]                     # registered citizens, in token order
    tokens: list[str]
    ticket_of: dict[int, int]              # citizen number -> ticket
    winners: set[int] = field(default_factory=set)   # winning tickets

    def winner_numbers(self) -> list[int]:
        return [n for n in self.numbers if self.ticket_of[n] in self.winners]


class Preparer:
    def __init__(self, base_url: str, settings: Settings, maker_token: str, checker_token: str,
                 run_dir: Path, say: Callable[[str], None]) -> None:
        self.base_url = base_url
        self.settings = settings
        self.maker, self.checker = maker_token, checker_token
        self.run_dir = run_dir
        self.say = say
        self.client = httpx.Client(base_url=base_url, timeout=ADMIN_TIMEOUT_S)
        self.suffix = f"{time.strftime('%m%d%H%M%S')}{secrets.token_hex(2)}"

    def close(self) -> None:
        self.client.close()

    def campaign_id(self, section: str) -> str:
        return f"load-{self.suffix}-{section[:3]}"

    # -- the admin API ----------------------------------------------------------------------

    def call(self, method: str, path: str, token: str | None = None, body: Any = None,
             expect: tuple[int, ...] = (200, 201, 202)) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.client.request(method, path, json=body, headers=headers)
        if response.status_code not in expect:
            raise SetupError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
        return response.json()

    def approved(self, path: str) -> dict[str, Any]:
        """Maker-checker: one operator requests, the other approves, and the action runs."""
        request = self.call("POST", path, self.maker)
        approval = self.call("POST", f"/v1/admin/approvals/{request['id']}/approve", self.checker)
        # The jobs worker runs the approved action; follow its job until it ends.
        deadline = time.monotonic() + JOB_WAIT_S
        while True:
            job = self.call("GET", f"/v1/admin/jobs/{approval['job_id']}", self.checker)
            if job["state"] in ("succeeded", "failed"):
                break
            if time.monotonic() > deadline:
                raise SetupError(f"{path}: job {approval['job_id']} still {job['state']} after {JOB_WAIT_S} s:"
                                 " is a jobs worker (`stimulus worker jobs`) running?")
            time.sleep(0.2)
        done: dict[str, Any] = self.call("GET", f"/v1/admin/approvals/{request['id']}", self.checker)
        if done.get("status") != "executed":
            raise SetupError(f"{path}: approval ended {done.get('status')}: {done}")
        return done

    def schema_paths(self) -> dict[str, set[str]]:
        paths = self.client.get("/schema/openapi.json").raise_for_status().json().get("paths", {})
        return {path: {m.lower() for m in ops} for path, ops in paths.items()}

    # -- populations --------------------------------------------------------------------------

    def tokens(self, numbers: list[int]) -> list[str]:
        if not numbers:
            return []
        first, count = numbers[0], len(numbers)
        assert numbers == list(range(first, first + count)), "token batches are contiguous"
        s = self.settings
        return mint_citizen_tokens(s.sandbox_idp_dir, s.idp_issuer, s.idp_audience, first, count,
                                   ttl_s=TOKEN_TTL_S)

    def write_tokens(self, name: str, numbers: list[int], tokens: list[str]) -> Path:
        path = self.run_dir / f"tokens-{name}.tsv"
        with path.open("w") as out:
            out.writelines(f"{n}\t{t}\n" for n, t in zip(numbers, tokens, strict=True))
        return path

    def open_campaign(self, campaign_id: str, winners: int) -> tuple[SigningKey, bytes]:
        """A sample campaign, open now for six hours, with one ceremony participant committed."""
        key, secret = SigningKey.generate(), secrets.token_bytes(32)
        spec = sample_campaign(campaign_id, max(6, winners), registration_s=6 * 3600, participants=[
            {"id": "notary", "name": "Notary office", "public_key_hex": key.public_bytes.hex()}])
        self.call("POST", "/v1/admin/campaigns", self.maker, spec)
        self.call("POST", f"/v1/admin/campaigns/{campaign_id}/open", self.maker)
        commitment = hashlib.sha256(secret).hexdigest()
        self.call("POST", f"/v1/campaigns/{campaign_id}/ceremony/notary/commitment", None, {
            "commitment_hex": commitment,
            "signature_hex": key.sign(ceremony_commit_statement(campaign_id, "notary", commitment)).hex()})
        return key, secret

    def register(self, campaign_id: str, numbers: list[int], tokens: list[str]) -> dict[int, int]:
        path = f"/v1/campaigns/{campaign_id}/registrations"
        replies = asyncio.run(post_each(self.base_url, path, tokens, concurrency=SETUP_CONCURRENCY))
        for _ in range(SETUP_RETRY_ROUNDS):
            again = [i for i, reply in enumerate(replies) if reply.status == 503]
            if not again:
                break
            time.sleep(SETUP_RETRY_PAUSE_S)
            retried = asyncio.run(post_each(self.base_url, path, [tokens[i] for i in again],
                                            concurrency=SETUP_CONCURRENCY))
            for i, reply in zip(again, retried, strict=True):
                replies[i] = reply
        tickets: dict[int, int] = {}
        for number, reply in zip(numbers, replies, strict=True):
            if reply.status not in (200, 201):
                hint = (" (the per-address limit: start the stack with STIMULUS_RATE_LIMIT_EXEMPT=127.0.0.1)"
                        if reply.status == 429 else "")
                raise SetupError(f"registering citizen {number}: HTTP {reply.status} {reply.body[:200]!r}{hint}")
            tickets[number] = int(json.loads(reply.body)["ticket"])
        return tickets

    def draw(self, campaign_id: str, key: SigningKey, secret: bytes,
             record_beacon: Callable[[str], None] | None = None) -> tuple[dict[str, Any], set[int]]:
        """Close, commit (a job), reveal, record the beacon, draw (a job). `record_beacon` records
        it some other way than the API's fetch (which asks the relays the API is configured with)."""
        cid = campaign_id
        self.call("POST", f"/v1/admin/campaigns/{cid}/close", self.maker)
        committed: dict[str, Any] = self.approved(f"/v1/admin/campaigns/{cid}/commitment")["result"]
        reveal = ceremony_reveal_statement(cid, "notary", secret.hex(), committed["root_hex"],
                                           committed["tree_size"])
        self.call("POST", f"/v1/campaigns/{cid}/ceremony/notary/reveal", None,
                  {"secret_hex": secret.hex(), "signature_hex": key.sign(reveal).hex()})
        if record_beacon is None:
            self.call("POST", f"/v1/admin/campaigns/{cid}/beacon/fetch", self.maker)
        else:
            record_beacon(cid)
        self.approved(f"/v1/admin/campaigns/{cid}/draw")
        bundle = self.client.get(f"/v1/campaigns/{cid}/bundle").raise_for_status().json()["bundle"]
        return committed, {int(w[0]) for w in bundle["draw"]["winners"]}

    def drawn_campaign(self, section: str, registrants: int, winners: int) -> DrawnCampaign:
        cid = self.campaign_id(section)
        base = CITIZEN_BASE[section]
        numbers = list(range(base, base + registrants))
        started = time.perf_counter()
        tokens = self.tokens(numbers)
        self.say(f"{cid}: {registrants:,} identity tokens signed in {time.perf_counter() - started:.1f} s")
        key, secret = self.open_campaign(cid, winners)
        started = time.perf_counter()
        tickets = self.register(cid, numbers, tokens)
        elapsed = time.perf_counter() - started
        self.say(f"{cid}: {registrants:,} registered in {elapsed:.1f} s ({registrants / elapsed:,.0f}/s)")
        started = time.perf_counter()
        committed, won = self.draw(cid, key, secret)
        self.say(f"{cid}: committed {committed['tree_size']:,} leaves, drew {len(won):,} winners "
                 f"in {time.perf_counter() - started:.1f} s")
        return DrawnCampaign(cid, committed["root_hex"], int(committed["tree_size"]), numbers, tokens,
                             tickets, won)

    # -- plan sections ------------------------------------------------------------------------

    def registration_section(self, citizens: int) -> dict[str, Any]:
        cid = self.campaign_id("registration")
        base = CITIZEN_BASE["registration"]
        numbers = list(range(base, base + citizens))
        started = time.perf_counter()
        path = self.write_tokens("registration", numbers, self.tokens(numbers))
        self.say(f"{cid}: {citizens:,} identity tokens signed in {time.perf_counter() - started:.1f} s")
        self.open_campaign(cid, max(6, citizens // 20))
        return {"campaign_id": cid, "tokens_file": path.name, "count": citizens}

    def results_section(self, drawn: DrawnCampaign) -> dict[str, Any]:
        path = self.write_tokens("results", drawn.numbers, drawn.tokens)
        return {"campaign_id": drawn.campaign_id, "tokens_file": path.name, "count": len(drawn.numbers),
                "root_hex": drawn.root_hex, "tree_size": drawn.tree_size, "winners": len(drawn.winners)}

    def claims_section(self, drawn: DrawnCampaign, skip: int = 0) -> dict[str, Any]:
        """Winners who claim during the run (the first `skip` claimed during set-up)."""
        token_of = dict(zip(drawn.numbers, drawn.tokens, strict=True))
        numbers = drawn.winner_numbers()[skip:]
        path = self.write_tokens("claims", numbers, [token_of[n] for n in numbers])
        return {"campaign_id": drawn.campaign_id, "tokens_file": path.name, "count": len(numbers),
                "root_hex": drawn.root_hex, "tree_size": drawn.tree_size, "winners": len(drawn.winners),
                "banks": list(BANKS)}

    @staticmethod
    def audit_section(drawn: DrawnCampaign) -> dict[str, Any]:
        return {"campaign_id": drawn.campaign_id, "tree_size": drawn.tree_size}

    # -- merchants' tills --------------------------------------------------------------------

    def _db(self, fn: Callable[[asyncpg.Connection], Any]) -> Any:
        async def go() -> Any:
            assert self.settings.database_url
            conn = await asyncpg.connect(self.settings.database_url)
            await _init_connection(conn)
            try:
                return await fn(conn)
            finally:
                await conn.close()
        return asyncio.run(go())

    def issue_to_winners(self, drawn: DrawnCampaign, count: int) -> list[tuple[str, int]]:
        """`count` winners claim through the API; returns (payment reference, amount) of each
        packet once the issuance pipeline has credited it."""
        token_of = dict(zip(drawn.numbers, drawn.tokens, strict=True))
        numbers = drawn.winner_numbers()[:count]
        bodies = [json.dumps({"wallet": {"bank_code": BANKS[n % len(BANKS)], "wallet_id": f"w-{n}"}}).encode()
                  for n in numbers]
        replies = asyncio.run(post_each(self.base_url, f"/v1/campaigns/{drawn.campaign_id}/claim",
                                        [token_of[n] for n in numbers], bodies, concurrency=SETUP_CONCURRENCY))
        refused = [r for r in replies if r.status != 202]
        if refused:
            raise SetupError(f"claims refused: HTTP {refused[0].status} {refused[0].body[:200]!r}")
        started = time.perf_counter()
        deadline = time.monotonic() + max(ISSUED_WAIT_MIN_S, count / ISSUED_FLOOR_PER_S)
        query = "SELECT id, amount_fen FROM packets WHERE campaign_id = $1 AND state = 'issued' ORDER BY id"
        while True:
            rows = self._db(lambda conn: conn.fetch(query, drawn.campaign_id))
            if len(rows) >= len(numbers):
                break
            if time.monotonic() > deadline:
                raise SetupError(f"{drawn.campaign_id}: {len(rows):,} of {len(numbers):,} packets issued in time "
                                 "(is the issuance pipeline running?)")
            time.sleep(1.0)
        self.say(f"{drawn.campaign_id}: {len(rows):,} packets claimed and issued in "
                 f"{time.perf_counter() - started:.1f} s")
        return [(idempotency_key_for(drawn.campaign_id, str(r["id"])), int(r["amount_fen"])) for r in rows]

    def register_merchants(self, campaign_id: str, count: int) -> list[dict[str, str]]:
        """Merchants imported from CSV, as a city does; their keys are shown this once."""
        rows = ["id,name,category,district,settlement_account"]
        rows += [f"{campaign_id}-m{n:04d},Load shop {n},{MERCHANT_CATEGORIES[n % len(MERCHANT_CATEGORIES)]},"
                 f"{MERCHANT_DISTRICTS[n % len(MERCHANT_DISTRICTS)]},62220000{n:08d}" for n in range(count)]
        response = self.client.post("/v1/admin/merchants/import", content=("\n".join(rows) + "\n").encode(),
                                    headers={"Authorization": f"Bearer {self.maker}", "Content-Type": "text/csv"})
        if response.status_code != 201:
            raise SetupError(f"merchant import: HTTP {response.status_code} {response.text[:300]}")
        self.call("PUT", f"/v1/admin/campaigns/{campaign_id}/acceptance", self.maker,
                  {"categories": list(MERCHANT_CATEGORIES), "districts": []})
        return [{"merchant_id": k["merchant_id"], "seed_hex": k["private_key_seed_hex"]}
                for k in response.json()["keys"]]

    def redemptions_section(self, drawn: DrawnCampaign, merchants: int, claimed: int) -> dict[str, Any]:
        packets = self.issue_to_winners(drawn, claimed)
        path = self.run_dir / "packets-redemptions.tsv"
        with path.open("w") as out:
            out.writelines(f"{reference}\t{amount}\n" for reference, amount in packets)
        return {"campaign_id": drawn.campaign_id, "packets_file": path.name, "count": len(packets),
                "merchants": self.register_merchants(drawn.campaign_id, merchants)}
