"""The draw end to end over HTTP: ceremony, commitment, proofs, beacon, maker-checker, results,
bundle, registrant list, the offline verifier and the winners' notices."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from kernel.sample import sample_campaign
from kernel.signing import SigningKey
from lottery import notifications, verify
from lottery.merkle import verify_inclusion
from lottery.rehearsal import DRAND_VECTOR_ROUND, DRAND_VECTOR_SIGNATURE
from lottery.statements import (
    ceremony_commit_statement,
    ceremony_reveal_statement,
    commitment_statement,
    ed25519_ok,
)
from tests.conftest import Stack
from tests.foundation.helpers import auth, citizen_token, new_campaign_id
from tests.jobs_helpers import approve_and_run


def _participants(n: int) -> tuple[dict[str, SigningKey], list[dict[str, str]]]:
    keys = {f"p{i}": SigningKey.generate() for i in range(1, n + 1)}
    return keys, [{"id": pid, "name": f"Notary {pid}", "public_key_hex": k.public_bytes.hex()} for pid, k in keys.items()]


async def _create(http: httpx.AsyncClient, token: str, winners: int, **spec_changes: Any) -> str:
    campaign_id = new_campaign_id("draw")
    spec = sample_campaign(campaign_id, winners)
    spec.update(spec_changes)
    r = await http.post("/v1/admin/campaigns", json=spec, headers=auth(token))
    assert r.status_code == 201, r.text
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/open", headers=auth(token))
    assert r.status_code == 200, r.text
    return campaign_id


async def _register(http: httpx.AsyncClient, stack: Stack, campaign_id: str, first: int, count: int) -> dict[int, dict[str, Any]]:
    receipts: dict[int, dict[str, Any]] = {}
    for n in range(first, first + count):
        r = await http.post(f"/v1/campaigns/{campaign_id}/registrations", json={},
                            headers=auth(citizen_token(stack.settings, n)))
        assert r.status_code in (200, 201), r.text
        receipts[n] = r.json()
    return receipts


async def _commit_participant(http: httpx.AsyncClient, campaign_id: str, pid: str, key: SigningKey,
                              secret: bytes) -> httpx.Response:
    commitment_hex = hashlib.sha256(secret).hexdigest()
    signature = key.sign(ceremony_commit_statement(campaign_id, pid, commitment_hex))
    return await http.post(f"/v1/campaigns/{campaign_id}/ceremony/{pid}/commitment",
                           json={"commitment_hex": commitment_hex, "signature_hex": signature.hex()})


async def _reveal(http: httpx.AsyncClient, campaign_id: str, pid: str, key: SigningKey, secret: bytes,
                  root_hex: str, size: int) -> httpx.Response:
    signature = key.sign(ceremony_reveal_statement(campaign_id, pid, secret.hex(), root_hex, size))
    return await http.post(f"/v1/campaigns/{campaign_id}/ceremony/{pid}/reveal",
                           json={"secret_hex": secret.hex(), "signature_hex": signature.hex()})


async def _maker_checker(http: httpx.AsyncClient, stack: Stack, path: str, maker: str,
                         checker: str) -> dict[str, Any]:
    r = await http.post(path, headers=auth(maker))
    assert r.status_code == 202, r.text
    approval = r.json()
    assert approval["status"] == "pending"
    r = await http.post(f"/v1/admin/approvals/{approval['id']}/approve", headers=auth(maker))
    assert r.status_code == 403 and r.json()["code"] == "same_operator"
    done = await approve_and_run(http, stack.settings, approval["id"], checker)
    assert done["status"] == "executed", done
    return done


async def test_draw_end_to_end(http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, tmp_path: Path,
                               operator_token: str, second_operator_token: str) -> None:
    keys, participants = _participants(2)
    secrets_ = {pid: hashlib.sha256(f"secret {pid}".encode()).digest() for pid in keys}
    campaign_id = await _create(http, operator_token, 12, participants=participants)
    for pid, key in keys.items():
        r = await _commit_participant(http, campaign_id, pid, key, secrets_[pid])
        assert r.status_code == 200, r.text
    other = SigningKey.generate()
    r = await _commit_participant(http, campaign_id, "p1", other, secrets_["p1"])
    assert r.status_code == 400 and r.json()["code"] == "bad_signature"
    r = await _commit_participant(http, campaign_id, "p1", keys["p1"], b"another secret value!")
    assert r.status_code == 409 and r.json()["code"] == "commitment_exists"

    receipts = await _register(http, stack, campaign_id, 9000, 40)
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/commitment", headers=auth(operator_token))
    assert r.status_code == 409 and r.json()["code"] == "wrong_campaign_state"
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(operator_token))
    assert r.status_code == 200
    r = await _commit_participant(http, campaign_id, "p2", keys["p2"], secrets_["p2"])
    assert r.status_code == 409 and r.json()["code"] == "commitment_too_late"
    late_keys, _ = _participants(1)

    done = await _maker_checker(http, stack, f"/v1/admin/campaigns/{campaign_id}/commitment", operator_token,
                                second_operator_token)
    assert done["result"]["tree_size"] == 40
    public = bytes.fromhex(next(iter((await http.get("/v1/keys")).json().values())))
    c = (await http.get(f"/v1/campaigns/{campaign_id}/commitment")).json()
    statement = commitment_statement(campaign_id, c["tree_size"], c["root_hex"], c["committed_at"], c["key_id"])
    assert statement.decode() == c["statement"]
    assert ed25519_ok(public, bytes.fromhex(c["signature_hex"]), statement)

    some = receipts[9003]
    proof = (await http.get(f"/v1/campaigns/{campaign_id}/tickets/{some['ticket']}/proof")).json()
    assert proof["leaf_hex"] == some["leaf_hex"]
    assert verify_inclusion(bytes.fromhex(proof["leaf_hex"]), proof["leaf_index"], proof["tree_size"],
                            [bytes.fromhex(h) for h in proof["audit_path"]], bytes.fromhex(c["root_hex"]))
    r = await http.get(f"/v1/campaigns/{campaign_id}/tickets/999999999/proof")
    assert r.status_code == 404 and r.json()["code"] == "ticket_not_committed"

    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/draw", headers=auth(operator_token))
    assert r.status_code == 409 and r.json()["code"] == "ceremony_incomplete"
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/beacon/fetch",
                        headers=auth(operator_token))
    assert r.status_code == 409 and r.json()["code"] == "ceremony_incomplete"

    root_hex, size = c["root_hex"], c["tree_size"]
    r = await _reveal(http, campaign_id, "p1", keys["p1"], b"\x00" * 32, root_hex, size)
    assert r.status_code == 400 and r.json()["code"] == "reveal_mismatch"
    r = await _reveal(http, campaign_id, "p1", late_keys["p1"], secrets_["p1"], root_hex, size)
    assert r.status_code == 400 and r.json()["code"] == "bad_signature"
    r = await _reveal(http, campaign_id, "p1", keys["p1"], secrets_["p1"], "00" * 32, size)
    assert r.status_code == 400 and r.json()["code"] == "bad_signature"  # signed over another root
    for pid, key in keys.items():
        r = await _reveal(http, campaign_id, pid, key, secrets_[pid], root_hex, size)
        assert r.status_code == 200, r.text
    assert (await http.get(f"/v1/campaigns/{campaign_id}/ceremony")).json()["ready"] is True

    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/beacon/fetch",
                        headers=auth(operator_token))
    assert r.status_code == 200, r.text
    assert "SANDBOX" in r.json()["warning"]
    r = await _reveal(http, campaign_id, "p1", keys["p1"], secrets_["p1"], root_hex, size)
    assert r.status_code == 409 and r.json()["code"] == "reveal_too_late"

    done = await _maker_checker(http, stack, f"/v1/admin/campaigns/{campaign_id}/draw", operator_token,
                                second_operator_token)
    assert done["result"]["winners"] == 12 and done["result"]["sandbox"] is True
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/draw", headers=auth(operator_token))
    assert r.status_code == 409 and r.json()["code"] == "already_drawn"

    bundle_path, list_path = tmp_path / "bundle.json", tmp_path / "registrants.csv"
    r = await http.get(f"/v1/campaigns/{campaign_id}/bundle")
    bundle_path.write_bytes(r.content)
    r = await http.get(f"/v1/campaigns/{campaign_id}/registrants", params={"format": "csv"})
    list_path.write_bytes(r.content)
    ndjson = (await http.get(f"/v1/campaigns/{campaign_id}/registrants")).text.splitlines()
    assert len(ndjson) == 40 and "resident" not in ndjson[0] and set(json.loads(ndjson[0])) == {"ticket", "pseudonym", "stratum"}
    lines: list[str] = []
    assert verify.run([str(bundle_path), "--registrants", str(list_path), "--service-key", public.hex()],
                      say=lines.append) == 0, lines
    assert lines[-1] == "PASS" and any("SANDBOX" in line for line in lines)
    (tmp_path / "ndjson").write_text("\n".join(ndjson) + "\n")
    assert verify.run([str(bundle_path), "--registrants", str(tmp_path / "ndjson")], say=lines.append) == 0

    bundle = json.loads(bundle_path.read_bytes())["bundle"]
    winners = {w[0] for w in bundle["draw"]["winners"]}
    by_ticket = {rec["ticket"]: n for n, rec in receipts.items()}
    a_winner = next(t for t in by_ticket if t in winners)
    a_loser = next(t for t in by_ticket if t not in winners)
    for ticket in (a_winner, a_loser):
        proof_path, receipt_path = tmp_path / f"proof-{ticket}.json", tmp_path / f"receipt-{ticket}.json"
        proof_path.write_bytes((await http.get(f"/v1/campaigns/{campaign_id}/tickets/{ticket}/proof")).content)
        receipt_path.write_text(json.dumps(receipts[by_ticket[ticket]]))
        lines = []
        assert verify.run([str(bundle_path), "--proof", str(proof_path), "--receipt", str(receipt_path)],
                          say=lines.append) == 0, lines
        result = (await http.get(f"/v1/campaigns/{campaign_id}/result",
                                 headers=auth(citizen_token(stack.settings, by_ticket[ticket])))).json()
        assert result["ticket"] == ticket and result["won"] is (ticket == a_winner)
        assert result["stratum_totals"]["registrants"] >= 1 and result["winners"] == 12
        assert result["score_hex"] == hashlib.sha256(b"stimulus/score/v1" + bytes.fromhex(result["seed_hex"])
                                                     + ticket.to_bytes(8, "big")).hexdigest()
        if ticket == a_loser:
            assert result["score_hex"] > result["stratum_totals"]["cutoff_score_hex"]

    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    try:
        while await notifications.deliver_batch(pool, limit=5):
            pass
    finally:
        await pool.close()
    sms = await db.fetch("""SELECT s.body FROM sandbox_sms s JOIN notification_outbox o ON o.id = s.outbox_id
                            WHERE o.campaign_id = $1""", campaign_id)
    assert len(sms) == 12 and all("http" not in row["body"] and "yuan" in row["body"] for row in sms)
    actions = [row["action"] for row in await db.fetch(
        "SELECT action FROM audit_log WHERE subject = $1 ORDER BY seq", campaign_id)]
    for expected in ("approval.request.draw.commit", "approval.approve.draw.commit", "campaign.committed",
                     "ceremony.reveal", "draw.beacon", "approval.request.draw.run", "approval.approve.draw.run",
                     "campaign.drawn", "approval.execute.draw.run"):
        assert expected in actions, expected


async def test_missing_reveal_proceeds_after_deadline_and_bundle_says_so(
        http: httpx.AsyncClient, stack: Stack, tmp_path: Path, operator_token: str,
        second_operator_token: str) -> None:
    keys, participants = _participants(2)
    now = datetime.now(UTC)
    closes = now + timedelta(seconds=4)
    campaign_id = await _create(
        http, operator_token, 6, participants=participants,
        registration_opens_at=(now - timedelta(seconds=5)).isoformat(), registration_closes_at=closes.isoformat(),
        draw_rules={"missing_reveal": "proceed-without", "reveal_deadline": (closes + timedelta(seconds=3)).isoformat()})
    for pid, key in keys.items():
        assert (await _commit_participant(http, campaign_id, pid, key, pid.encode() * 16)).status_code == 200
    await _register(http, stack, campaign_id, 9100, 15)
    await asyncio.sleep(max(0.0, (closes - datetime.now(UTC)).total_seconds()))
    r = await _commit_participant(http, campaign_id, "p1", SigningKey.generate(), b"x" * 32)
    assert r.status_code in (400, 409)
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(operator_token))
    assert r.status_code == 200, r.text
    c = (await _maker_checker(http, stack, f"/v1/admin/campaigns/{campaign_id}/commitment", operator_token,
                              second_operator_token))["result"]
    r = await _reveal(http, campaign_id, "p1", keys["p1"], b"p1" * 16, c["root_hex"], c["tree_size"])
    assert r.status_code == 200, r.text
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/draw", headers=auth(operator_token))
    assert r.status_code == 409 and r.json()["code"] == "ceremony_incomplete"
    await asyncio.sleep(max(0.0, (closes + timedelta(seconds=3.2) - datetime.now(UTC)).total_seconds()))
    r = await _reveal(http, campaign_id, "p2", keys["p2"], b"p2" * 16, c["root_hex"], c["tree_size"])
    assert r.status_code == 409 and r.json()["code"] == "reveal_too_late"
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/beacon/fetch",
                        headers=auth(operator_token))
    assert r.status_code == 200, r.text
    await _maker_checker(http, stack, f"/v1/admin/campaigns/{campaign_id}/draw", operator_token, second_operator_token)
    raw = (await http.get(f"/v1/campaigns/{campaign_id}/bundle")).content
    bundle = json.loads(raw)["bundle"]
    assert bundle["fallbacks_taken"] == ["participant p2 did not reveal: drawn without their secret (rule proceed-without)"]
    assert [e["status"] for e in bundle["ceremony"]] == ["revealed", "missing"]
    (tmp_path / "b.json").write_bytes(raw)
    (tmp_path / "r.csv").write_bytes((await http.get(f"/v1/campaigns/{campaign_id}/registrants",
                                                     params={"format": "csv"})).content)
    lines: list[str] = []
    assert verify.run([str(tmp_path / "b.json"), "--registrants", str(tmp_path / "r.csv")], say=lines.append) == 0, lines


async def test_drand_beacon_is_verified_and_must_postdate_the_commitment(
        http: httpx.AsyncClient, stack: Stack, operator_token: str, second_operator_token: str) -> None:
    campaign_id = await _create(http, operator_token, 6,
                                beacon={"kind": "drand-quicknet", "round": DRAND_VECTOR_ROUND})
    await _register(http, stack, campaign_id, 9200, 8)
    assert (await http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(operator_token))).status_code == 200
    await _maker_checker(http, stack, f"/v1/admin/campaigns/{campaign_id}/commitment", operator_token, second_operator_token)
    bad = DRAND_VECTOR_SIGNATURE[:-2] + ("00" if DRAND_VECTOR_SIGNATURE[-2:] != "00" else "01")
    cases = [({"kind": "sandbox"}, "wrong_beacon_kind"),
             ({"kind": "drand-quicknet", "round": DRAND_VECTOR_ROUND + 1, "signature_hex": DRAND_VECTOR_SIGNATURE},
              "wrong_beacon_round"),
             ({"kind": "drand-quicknet", "round": DRAND_VECTOR_ROUND, "signature_hex": bad}, "beacon_invalid"),
             # A real, valid round, but published in 2023: long before this list was committed.
             ({"kind": "drand-quicknet", "round": DRAND_VECTOR_ROUND, "signature_hex": DRAND_VECTOR_SIGNATURE},
              "beacon_before_commitment")]
    for body, code in cases:
        r = await http.post(f"/v1/admin/campaigns/{campaign_id}/beacon", json=body, headers=auth(operator_token))
        assert r.status_code == 400 and r.json()["code"] == code, (body, r.text)
    r = await http.get(f"/v1/campaigns/{campaign_id}/beacon")
    assert r.status_code == 404


async def test_approvals_are_one_pending_per_action_and_can_be_rejected(
        http: httpx.AsyncClient, stack: Stack, operator_token: str, second_operator_token: str) -> None:
    campaign_id = await _create(http, operator_token, 6)
    assert (await http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(operator_token))).status_code == 200
    first = (await http.post(f"/v1/admin/campaigns/{campaign_id}/commitment", headers=auth(operator_token))).json()
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/commitment", headers=auth(second_operator_token))
    assert r.status_code == 409 and r.json()["code"] == "approval_pending"
    r = await http.post(f"/v1/admin/approvals/{first['id']}/reject", json={"reason": "wrong day"},
                        headers=auth(second_operator_token))
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    r = await http.post(f"/v1/admin/approvals/{first['id']}/approve", headers=auth(second_operator_token))
    assert r.status_code == 409 and r.json()["code"] == "approval_decided"
    state = (await http.get(f"/v1/campaigns/{campaign_id}")).json()["state"]
    assert state == "closed"
