"""The merchant registry through the admin API and the CLI: one merchant with its key shown once,
CSV imports (all of the file or none of it), suspension in the audit log, listing."""

from __future__ import annotations

import csv
import io
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx
from hypothesis import given
from hypothesis import strategies as st

from kernel.signing import SigningKey
from merchants import csv_import
from merchants.client import MerchantClient
from tests.conftest import Stack
from tests.foundation.helpers import auth

HEADER = "id,name,category,district,settlement_account\n"


def _prefix() -> str:
    return f"imp-{uuid.uuid4().hex[:8]}"


def _csv(prefix: str, count: int) -> str:
    districts = ("430102", "430103", "430104")
    return HEADER + "".join(f"{prefix}-{n},\"Shop {n}, Ltd\",{5411 + n % 3},{districts[n % 3]},ACCT-{n}\n"
                            for n in range(count))


async def test_a_merchant_gets_a_key_shown_once(http: httpx.AsyncClient, api_url: str, operator_token: str,
                                                auditor_token: str, db: asyncpg.Connection) -> None:
    merchant_id = f"one-{uuid.uuid4().hex[:8]}"
    spec = {"id": merchant_id, "name": "Noodle House", "category": "5812", "district": "430104",
            "settlement_account": "ACCT-77"}
    created = await http.post("/v1/admin/merchants", json=spec, headers=auth(operator_token))
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    public = SigningKey.from_seed(bytes.fromhex(key["private_key_seed_hex"])).public_bytes
    row = await db.fetchrow("SELECT * FROM merchants WHERE id = $1", merchant_id)
    assert row is not None and bytes(row["public_key"]) == public and row["key_id"] == key["key_id"]
    assert key["private_key_seed_hex"] not in str(dict(row))
    shown = await http.get(f"/v1/admin/merchants/{merchant_id}", headers=auth(auditor_token))
    assert shown.status_code == 200 and "private_key_seed_hex" not in shown.text
    assert shown.json()["public_key_hex"] == public.hex()
    async with MerchantClient(api_url, merchant_id, key["private_key_seed_hex"]) as client:
        assert (await client.me()).status_code == 200
    again = await http.post("/v1/admin/merchants", json=spec, headers=auth(operator_token))
    assert again.status_code == 409 and again.json()["code"] == "merchant_exists"
    for change, code in (({"category": "54"}, "invalid_merchant"), ({"id": "has space"}, "invalid_merchant"),
                         ({"district": ""}, "invalid_merchant")):
        bad = await http.post("/v1/admin/merchants", json={**spec, "id": f"x{uuid.uuid4().hex[:6]}", **change},
                              headers=auth(operator_token))
        assert bad.status_code == 400 and bad.json()["code"] == code, bad.text
    refused = await http.post("/v1/admin/merchants", json={**spec, "id": "aud-1"}, headers=auth(auditor_token))
    assert refused.status_code == 403 and refused.json()["code"] == "role_required"


async def test_a_csv_file_of_thousands_is_imported_in_one_go(
        http: httpx.AsyncClient, api_url: str, operator_token: str, db: asyncpg.Connection) -> None:
    prefix = _prefix()
    response = await http.post("/v1/admin/merchants/import", content=_csv(prefix, 3000).encode(),
                               headers={**auth(operator_token), "Content-Type": "text/csv"})
    assert response.status_code == 201, response.text[:500]
    result = response.json()
    assert result["imported"] == 3000 and len(result["keys"]) == 3000
    assert await db.fetchval("SELECT count(*) FROM merchants WHERE id LIKE $1", prefix + "-%") == 3000
    name = await db.fetchval("SELECT name FROM merchants WHERE id = $1", f"{prefix}-7")
    assert name == "Shop 7, Ltd"
    audit = await db.fetchrow("SELECT details FROM audit_log WHERE action = 'merchant.import' AND subject = $1",
                              f"sha256:{result['file_sha256']}")
    assert audit is not None and audit["details"]["merchants"] == 3000
    last = result["keys"][-1]
    async with MerchantClient(api_url, last["merchant_id"], last["private_key_seed_hex"]) as client:
        assert (await client.me()).status_code == 200
    page = await http.get("/v1/admin/merchants", params={"after": prefix, "limit": 2, "category": "5412"},
                          headers=auth(operator_token))
    listed = page.json()
    assert [m["id"] for m in listed["merchants"]] == [f"{prefix}-1", f"{prefix}-10"]
    assert listed["next_after"] == f"{prefix}-10"


async def test_a_bad_line_refuses_the_whole_file(http: httpx.AsyncClient, operator_token: str,
                                                 db: asyncpg.Connection) -> None:
    prefix = _prefix()
    lines = _csv(prefix, 50).splitlines(keepends=True)
    lines[11] = f"{prefix}-10,Bad MCC,54x1,430102,ACCT-1\n"  # line 12 of the file
    lines[31] = f"{prefix}-oops,Too few fields,5411\n"         # line 32
    lines[41] = lines[5]                                       # line 42 repeats line 6
    response = await http.post("/v1/admin/merchants/import", content="".join(lines).encode(),
                               headers={**auth(operator_token), "Content-Type": "text/csv"})
    assert response.status_code == 422 and response.json()["code"] == "csv_invalid", response.text
    errors = response.json()["errors"]
    assert [e["line"] for e in errors] == [12, 32, 42]
    assert "category" in errors[0]["error"] and "3 fields" in errors[1]["error"] and "line 6" in errors[2]["error"]
    assert await db.fetchval("SELECT count(*) FROM merchants WHERE id LIKE $1", prefix + "-%") == 0
    header = await http.post("/v1/admin/merchants/import", content=b"id,name\nx,y\n",
                             headers={**auth(operator_token), "Content-Type": "text/csv"})
    assert header.status_code == 422 and header.json()["errors"] == [{"line": 1, "error": "bad header"}]


async def test_an_already_registered_id_refuses_the_file(http: httpx.AsyncClient, operator_token: str,
                                                         db: asyncpg.Connection) -> None:
    prefix = _prefix()
    first = await http.post("/v1/admin/merchants/import", content=_csv(prefix, 3).encode(),
                            headers={**auth(operator_token), "Content-Type": "text/csv"})
    assert first.status_code == 201
    overlapping = _csv(prefix, 6).replace(f"{prefix}-0,", f"{prefix}-new,")
    second = await http.post("/v1/admin/merchants/import", content=overlapping.encode(),
                             headers={**auth(operator_token), "Content-Type": "text/csv"})
    assert second.status_code == 422 and second.json()["code"] == "csv_invalid"
    assert [e["line"] for e in second.json()["errors"]] == [3, 4]
    assert await db.fetchval("SELECT count(*) FROM merchants WHERE id LIKE $1", prefix + "-%") == 3


def _cli(stack: Stack, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STIMULUS_ENV": "development", "DATABASE_URL": stack.database_url, "REDIS_URL": stack.redis_url,
           "STIMULUS_STATE_DIR": str(stack.settings.state_dir), "STIMULUS_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "stimulus.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


async def test_the_cli_imports_writes_keys_once_and_suspends(
        stack: Stack, operator_token: str, tmp_path: Path, db: asyncpg.Connection, api_url: str) -> None:
    prefix = _prefix()
    source, keys = tmp_path / "merchants.csv", tmp_path / "keys.csv"
    source.write_text(_csv(prefix, 40))
    done = _cli(stack, "merchant", "import", str(source), "--keys-out", str(keys), token=operator_token)
    assert done.returncode == 0, done.stderr
    assert "imported 40 merchants" in done.stdout
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    rows = keys.read_text().splitlines()
    assert rows[0] == "merchant_id,key_id,private_key_seed_hex" and len(rows) == 41
    merchant_id, _, seed_hex = rows[1].split(",")
    async with MerchantClient(api_url, merchant_id, seed_hex) as client:
        assert (await client.me()).status_code == 200
    # Keys are written once: an existing file is never overwritten, and nothing is imported.
    source.write_text(_csv(_prefix(), 2))
    refused = _cli(stack, "merchant", "import", str(source), "--keys-out", str(keys), token=operator_token)
    assert refused.returncode != 0 and "exists" in refused.stderr
    assert keys.read_text().splitlines()[1] == rows[1]
    # A bad file: its lines reported, no key file left behind.
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "x-1,Shop,5411,430102,ACCT-1\nx-2,Shop,ABCD,430102,ACCT-2\n")
    failed = _cli(stack, "merchant", "import", str(bad), "--keys-out", str(tmp_path / "k2.csv"), token=operator_token)
    assert failed.returncode != 0 and "line 3:" in failed.stderr, failed.stderr
    assert not (tmp_path / "k2.csv").exists()

    suspended = _cli(stack, "merchant", "suspend", merchant_id, "--reason", "test", token=operator_token)
    assert suspended.returncode == 0 and f"{merchant_id}: suspended" in suspended.stdout, suspended.stderr
    async with MerchantClient(api_url, merchant_id, seed_hex) as client:
        assert (await client.me()).json()["code"] == "merchant_suspended"
    listed = _cli(stack, "merchant", "list", "--status", "suspended", "--after", prefix, token=operator_token)
    assert listed.stdout.split("\t")[0] == merchant_id
    audit = await db.fetchrow("SELECT actor, details FROM audit_log WHERE action = 'merchant.suspend' AND subject = $1",
                              merchant_id)
    assert audit is not None and audit["actor"] == "operator:alice" and audit["details"]["reason"] == "test"


async def test_the_cli_sets_a_campaigns_acceptance(stack: Stack, operator_token: str, http: httpx.AsyncClient,
                                                   db: asyncpg.Connection) -> None:
    from tests.foundation.helpers import open_campaign

    campaign_id = await open_campaign(http, operator_token)
    done = _cli(stack, "campaign", "accept", campaign_id, "--category", "5812", "--category", "5411",
                "--district", "430102", token=operator_token)
    assert done.returncode == 0, done.stderr
    shown = await http.get(f"/v1/admin/campaigns/{campaign_id}/acceptance", headers=auth(operator_token))
    assert shown.json() == {"categories": ["5411", "5812"], "districts": ["430102"]}
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'campaign.acceptance' AND subject = $1",
                             campaign_id) == 1
    usage = _cli(stack, "campaign", "accept", campaign_id, token=operator_token)
    assert usage.returncode == 2


_names = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=40).filter(
    lambda s: s.strip() != "" and s.isprintable())


@given(st.lists(st.tuples(_names, st.from_regex(r"[0-9]{4}", fullmatch=True),
                          st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True)), min_size=1, max_size=30))
def test_any_well_formed_file_parses_back_to_its_merchants(rows: list[tuple[str, str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_import.HEADER)
    for n, (name, category, district) in enumerate(rows):
        writer.writerow([f"m{n}", name, category, district, f"A-{n}"])
    parsed = csv_import.parse(buffer.getvalue().encode())
    assert [(spec.name, spec.category, spec.district) for _, spec in parsed] == rows
    assert [line for line, _ in parsed] == list(range(2, len(rows) + 2))
