"""The offline verifier against a tampered draw: every change must end in FAIL, naming the problem.

Each test builds a signed draw with lottery.rehearsal (the production evidence chain, in memory),
changes one thing, and runs `stimulus-verify` as a citizen would. "Re-signed" means the service
key signs the altered bundle again, so only the content is wrong: the service itself cheating.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery import bundle as bundle_module
from lottery import drand, registrant_list, rehearsal, verify
from lottery.leaf import encode_leaf
from lottery.merkle import MerkleTree
from lottery.selection import winner_leaf
from lottery.statements import ceremony_reveal_statement, key_id_of, receipt_statement, timestamp
from sandbox.drand_chain import sign_round

Result = tuple[int, list[str]]


def make(tmp: Path, count: int = 100, rows: list[tuple[int, str, str]] | None = None,
         **scenario: Any) -> rehearsal.Rehearsal:
    scenario.setdefault("sandbox_signer", sign_round)
    return rehearsal.rehearse(rehearsal.Scenario(**scenario), rows=rows, count=count, list_path=tmp / "list.csv")


def run(tmp: Path, bundle_bytes: bytes, *args: str) -> Result:
    path = tmp / "bundle.json"
    path.write_bytes(bundle_bytes)
    lines: list[str] = []
    code = verify.run([str(path), *args], say=lines.append)
    return code, lines


def run_list(tmp: Path, bundle_bytes: bytes, *args: str, list_path: Path | None = None) -> Result:
    return run(tmp, bundle_bytes, "--registrants", str(list_path or tmp / "list.csv"), *args)


def assert_fails(result: Result, *needles: str) -> str:
    code, lines = result
    assert code == 1, lines
    assert lines[-1].startswith("FAIL "), lines
    assert not any(line == "PASS" for line in lines)
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def assert_passes(result: Result) -> None:
    code, lines = result
    assert code == 0 and lines[-1] == "PASS", lines


def resign(r: rehearsal.Rehearsal, bundle: dict[str, Any]) -> bytes:
    return bundle_module.envelope(bundle, r.service_key.sign, r.service_public)


def edited(r: rehearsal.Rehearsal, edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    bundle = copy.deepcopy(r.bundle)
    edit(bundle)
    return bundle


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def write_csv(path: Path, rows: list[tuple[int, str, str]]) -> Path:
    path.write_text(registrant_list.CSV_HEADER + "\n" + "".join(registrant_list.csv_line(*row) for row in rows),
                    encoding="utf-8")
    return path


def winners_root_hex(winners: list[list[Any]]) -> str:
    return MerkleTree.from_leaves(winner_leaf(w[0], w[1], w[2], w[3]) for w in sorted(winners)).root.hex()


# --- the untouched draws pass -------------------------------------------------------------------

@pytest.mark.parametrize("scenario", [
    {}, {"missing_reveals": 1}, {"algorithm": "rfc3797"}, {"spillover": "none"}, {"participants": 3},
], ids=["default", "missing-reveal", "rfc3797", "no-spillover", "three-participants"])
def test_untouched_sandbox_draw_passes(tmp_path: Path, scenario: dict[str, Any]) -> None:
    r = make(tmp_path, **scenario)
    assert_passes(run_list(tmp_path, r.bundle_bytes))
    assert_passes(run_list(tmp_path, r.bundle_bytes, "--service-key", r.service_public.hex()))


def test_untouched_list_as_ndjson_passes(tmp_path: Path) -> None:
    r = make(tmp_path)
    ndjson = tmp_path / "list.ndjson"
    ndjson.write_text("".join(registrant_list.ndjson_line(*row) for row in r.rows), encoding="utf-8")
    assert_passes(run_list(tmp_path, r.bundle_bytes, list_path=ndjson))
    lines = ndjson.read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace('"stratum":"', '"stratum":"x')
    ndjson.write_text("".join(lines))
    assert_fails(run_list(tmp_path, r.bundle_bytes, list_path=ndjson), "unknown stratum")


# --- winners ---------------------------------------------------------------------------------------

def swap_a_winner(bundle: dict[str, Any], rows: list[tuple[int, str, str]], fix_root: bool) -> None:
    draw = bundle["draw"]
    winners = {w[0] for w in draw["winners"]}
    victim = draw["winners"][0]
    intruder = next(t for t, _, s in rows if s == victim[1] and t not in winners)
    victim[0] = intruder
    draw["winners"].sort()
    if fix_root:
        draw["winners_root_hex"] = winners_root_hex(draw["winners"])


@pytest.mark.parametrize("fix_root", [False, True], ids=["stale-root", "root-recomputed"])
@pytest.mark.parametrize("algorithm", ["sha256-score-v1", "rfc3797"])
def test_winner_swapped_and_resigned(tmp_path: Path, algorithm: str, fix_root: bool) -> None:
    r = make(tmp_path, algorithm=algorithm)
    bundle = edited(r, lambda b: swap_a_winner(b, r.rows, fix_root))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "draw.winners[")


def test_winner_swapped_without_resigning(tmp_path: Path) -> None:
    r = make(tmp_path)
    document = json.loads(r.bundle_bytes)
    swap_a_winner(document["bundle"], r.rows, fix_root=True)
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert_fails(run_list(tmp_path, data), "bundle signature does not verify")


def test_winner_tier_or_round_changed(tmp_path: Path) -> None:
    r = make(tmp_path, tiers=[{"tier": "gold", "amount_fen": 50000, "count": 5},
                              {"tier": "standard", "amount_fen": 20000, "count": 25}])
    gold = next(i for i, w in enumerate(r.bundle["draw"]["winners"]) if w[2] == "gold")

    def promote(b: dict[str, Any]) -> None:
        w = b["draw"]["winners"][gold]
        w[2], w[3] = "standard", 20000

    assert_fails(run_list(tmp_path, resign(r, edited(r, promote))), f"draw.winners[{gold}][2]")
    bundle = edited(r, lambda b: b["draw"]["winners"][0].__setitem__(4, 2))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "draw.winners[0][4]")


def test_winner_dropped_or_added(tmp_path: Path) -> None:
    r = make(tmp_path)
    bundle = edited(r, lambda b: b["draw"]["winners"].pop())
    assert_fails(run_list(tmp_path, resign(r, bundle)), "draw.winner")
    assert_fails(run_list(tmp_path, resign(r, edited(r, lambda b: b["draw"].__setitem__("winner_count", 31)))),
                 "draw.winner_count")


def test_winners_root_altered(tmp_path: Path) -> None:
    r = make(tmp_path)
    bundle = edited(r, lambda b: b["draw"].__setitem__("winners_root_hex", "00" * 32))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "draw.winners_root_hex")


# --- the registrant list -----------------------------------------------------------------------------

def test_registrant_dropped(tmp_path: Path) -> None:
    r = make(tmp_path)
    for index in (0, 50, 99):
        rows = r.rows[:index] + r.rows[index + 1:]
        path = write_csv(tmp_path / "dropped.csv", rows)
        assert_fails(run_list(tmp_path, r.bundle_bytes, list_path=path), "99 registrants, the commitment 100")


def test_registrant_added(tmp_path: Path) -> None:
    r = make(tmp_path)
    extra = (1000, rehearsal.pseudonym(1000), "d1")
    path = write_csv(tmp_path / "added.csv", [*r.rows, extra])
    assert_fails(run_list(tmp_path, r.bundle_bytes, list_path=path), "101 registrants, the commitment 100")
    # One added and another dropped, so the count still matches: the root does not.
    path = write_csv(tmp_path / "replaced.csv", [*r.rows[:10], *r.rows[11:], extra])
    assert_fails(run_list(tmp_path, r.bundle_bytes, list_path=path), "differs from the committed root")


def test_registrant_stratum_changed(tmp_path: Path) -> None:
    r = make(tmp_path)
    ticket, name, stratum = r.rows[7]
    other = "d2" if stratum != "d2" else "d3"
    rows = [*r.rows[:7], (ticket, name, other), *r.rows[8:]]
    path = write_csv(tmp_path / "moved.csv", rows)
    assert_fails(run_list(tmp_path, r.bundle_bytes, list_path=path), "differs from the committed root")
    rows = [*r.rows[:7], (ticket, name, "d9"), *r.rows[8:]]
    path = write_csv(tmp_path / "unknown.csv", rows)
    assert_fails(run_list(tmp_path, r.bundle_bytes, list_path=path), "unknown stratum 'd9'")


def test_registrants_reordered_or_repeated(tmp_path: Path) -> None:
    r = make(tmp_path)
    rows = list(r.rows)
    rows[3], rows[4] = rows[4], rows[3]
    path = write_csv(tmp_path / "order.csv", rows)
    assert_fails(run_list(tmp_path, r.bundle_bytes, list_path=path), f"ticket {rows[4][0]} out of order")
    rows = [*r.rows[:5], r.rows[4], *r.rows[6:]]
    path = write_csv(tmp_path / "repeat.csv", rows)
    assert_fails(run_list(tmp_path, r.bundle_bytes, list_path=path), f"ticket {rows[5][0]} out of order")


# --- the ceremony -----------------------------------------------------------------------------------

def test_reveal_secret_altered(tmp_path: Path) -> None:
    r = make(tmp_path)

    def alter(b: dict[str, Any]) -> None:
        b["ceremony"][1]["secret_hex"] = hashlib.sha256(b"another secret").hexdigest()

    assert_fails(run_list(tmp_path, resign(r, edited(r, alter))), "participant p2: secret does not match the commitment")


def test_reveal_signed_by_another_key(tmp_path: Path) -> None:
    r = make(tmp_path)
    entry = r.bundle["ceremony"][1]
    statement = ceremony_reveal_statement(r.bundle["campaign"]["id"], "p2", entry["secret_hex"],
                                          r.bundle["commitment"]["root_hex"], r.bundle["commitment"]["tree_size"])
    for key in (r.participant_keys["p1"], r.service_key, Ed25519PrivateKey.generate()):
        bundle = copy.deepcopy(r.bundle)
        bundle["ceremony"][1]["reveal_signature_hex"] = key.sign(statement).hex()
        assert_fails(run_list(tmp_path, resign(r, bundle)), "participant p2: reveal signature does not verify")


def test_reveal_for_another_root_refused(tmp_path: Path) -> None:
    # A reveal signed before the list was fixed would name another root: the signature check fails.
    r = make(tmp_path)
    entry = r.bundle["ceremony"][0]
    statement = ceremony_reveal_statement(r.bundle["campaign"]["id"], "p1", entry["secret_hex"], "00" * 32, 100)
    bundle = edited(r, lambda b: b["ceremony"][0].__setitem__(
        "reveal_signature_hex", r.participant_keys["p1"].sign(statement).hex()))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "participant p1: reveal signature does not verify")


def test_participant_commitment_altered(tmp_path: Path) -> None:
    r = make(tmp_path)
    secret = hashlib.sha256(b"chosen after the fact").digest()

    def alter(b: dict[str, Any]) -> None:
        b["ceremony"][0]["secret_hex"] = secret.hex()
        b["ceremony"][0]["commitment_hex"] = hashlib.sha256(secret).hexdigest()

    assert_fails(run_list(tmp_path, resign(r, edited(r, alter))), "participant p1: commitment signature does not verify")


def test_revealed_secret_passed_off_as_missing(tmp_path: Path) -> None:
    # Dropping a revealed secret (with the sandbox beacon there is no reveal deadline to lean on).
    r = make(tmp_path)

    def drop(b: dict[str, Any]) -> None:
        entry = b["ceremony"][0]
        entry.update(secret_hex=None, reveal_signature_hex=None, revealed_at=None, status="missing")
        b["fallbacks_taken"].append("participant p1 did not reveal: drawn without their secret (rule proceed-without)")

    assert_fails(run_list(tmp_path, resign(r, edited(r, drop))), "participant p1")


def test_missing_reveal_without_declared_fallback(tmp_path: Path) -> None:
    r = make(tmp_path, missing_reveals=1)
    bundle = edited(r, lambda b: b.__setitem__("fallbacks_taken", []))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R12.2.7: fallbacks_taken")
    bundle = edited(r, lambda b: b["campaign"]["draw_rules"].__setitem__("missing_reveal", "abort"))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R6.9:", "the campaign's rule is abort")


# --- the beacon ---------------------------------------------------------------------------------------

def flip_hex(value: str, position: int = 5) -> str:
    data = bytearray.fromhex(value)
    data[position] ^= 0x01
    return data.hex()


def test_sandbox_beacon_signature_altered(tmp_path: Path) -> None:
    r = make(tmp_path)
    bundle = edited(r, lambda b: b["beacon"].__setitem__("signature_hex", flip_hex(b["beacon"]["signature_hex"])))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "beacon randomness is not SHA-256 of its signature")

    def consistent(b: dict[str, Any]) -> None:
        b["beacon"]["signature_hex"] = flip_hex(b["beacon"]["signature_hex"])
        b["beacon"]["randomness_hex"] = hashlib.sha256(bytes.fromhex(b["beacon"]["signature_hex"])).hexdigest()

    assert_fails(run_list(tmp_path, resign(r, edited(r, consistent))),
                 "BLS signature does not verify against the sandbox chain's key")


def test_sandbox_beacon_randomness_replaced(tmp_path: Path) -> None:
    r = make(tmp_path)
    bundle = edited(r, lambda b: b["beacon"].__setitem__("randomness_hex", "11" * 32))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "beacon randomness is not SHA-256 of its signature")


def test_sandbox_beacon_unmarked(tmp_path: Path) -> None:
    r = make(tmp_path)
    result = run_list(tmp_path, r.bundle_bytes)
    assert_passes(result)
    assert any(line.startswith("WARN beacon: SANDBOX chain round") for line in result[1])
    bundle = edited(r, lambda b: b.__setitem__("sandbox", False))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R7.2.3:")
    bundle = edited(r, lambda b: b["beacon"].__setitem__("warning", "a fair draw"))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R7.3.3: sandbox beacon not marked as such")
    bundle = edited(r, lambda b: b["beacon"].__setitem__("public_key_hex", drand.QUICKNET.public_key_hex))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R7.3.2:")


def test_sandbox_chain_round_is_the_first_after_the_reveals(tmp_path: Path) -> None:
    r = make(tmp_path)
    later = r.bundle["beacon"]["round"] + 1
    signature = sign_round(later)

    def shopped(b: dict[str, Any]) -> None:
        b["beacon"].update(round=later, signature_hex=signature.hex(), randomness_hex=drand.randomness(signature).hex(),
                           round_time=timestamp(drand.SANDBOX.round_time(later)))

    assert_fails(run_list(tmp_path, resign(r, edited(r, shopped))), "R7.3.1:")
    # A quicknet round passed off as the sandbox chain's: the chain hash gives it away.
    bundle = edited(r, lambda b: b["beacon"].__setitem__("chain_hash", drand.QUICKNET.chain_hash))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R7.1.1: beacon is not from the sandbox chain")


def test_drand_draw_passes_and_altered_signature_fails(tmp_path: Path) -> None:
    r = make(tmp_path, beacon="drand-quicknet")
    result = run_list(tmp_path, r.bundle_bytes)
    assert_passes(result)
    assert any("BLS signature verified" in line for line in result[1])

    def consistent(b: dict[str, Any]) -> None:
        b["beacon"]["signature_hex"] = flip_hex(b["beacon"]["signature_hex"], 47)
        b["beacon"]["randomness_hex"] = hashlib.sha256(bytes.fromhex(b["beacon"]["signature_hex"])).hexdigest()

    assert_fails(run_list(tmp_path, resign(r, edited(r, consistent))),
                 "R7.1.5: drand round 657413: BLS signature does not verify against the quicknet key")
    bundle = edited(r, lambda b: b["beacon"].__setitem__("randomness_hex", "22" * 32))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "beacon randomness is not SHA-256 of its signature")


def test_drand_round_or_chain_changed(tmp_path: Path) -> None:
    r = make(tmp_path, beacon="drand-quicknet")
    bundle = edited(r, lambda b: b["beacon"].__setitem__("round", 657414))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R7.1.2: beacon round 657414 on path declared-round")
    bundle = edited(r, lambda b: b["beacon"].__setitem__("chain_hash", "00" * 32))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R7.1.1: beacon is not from the drand quicknet chain")
    bundle = edited(r, lambda b: b["campaign"]["beacon"].__setitem__("kind", "sandbox"))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "beacon kind differs from the campaign's")
    bundle = edited(r, lambda b: b["campaign"]["beacon"].__setitem__("round", 657412))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R7.1.2:", "not the declared round 657412")


# Real quicknet rounds 2, 3 and 30662982 (ChainSafe/forest src/beacon/tests/fixtures/drand_quicknet.json;
# see test_drand.py), to build draws whose declared round is missed.
QUICKNET = {
    2: "b6b6a585449b66eb12e875b64fcbab3799861a00e4dbf092d99e969a5eac57dd3f798acf61e705fe4f093db926626807",
    3: "b3fab6df720b68cc47175f2c777e86d84187caab5770906f515ff1099cb01e4deaa027075d860823e49477b93c72bd64",
    30662982: "8b3edd0d42a2fa36ac15641a2dea2e4f4895acec2ef72ef39e5b6138f0346fb6b046dde1b4b3d09ff5fe8a6a7acd674a",
}


def drand_fallback_draw(tmp: Path, declared: int, used: int, path: str = "next-round-fallback",
                        declare_line: bool = True) -> bytes:
    """A consistent, re-composed drand draw that used round `used` for the declared round `declared`."""
    s = rehearsal.Scenario(beacon="drand-quicknet", closes_at=datetime(2023, 8, 1, tzinfo=UTC))
    r = rehearsal.rehearse(s, count=60, list_path=tmp / "list.csv")
    campaign = copy.deepcopy(r.bundle["campaign"])
    campaign["beacon"]["round"] = declared
    signature = bytes.fromhex(QUICKNET[used])
    beacon = {**r.bundle["beacon"], "round": used, "signature_hex": signature.hex(),
              "randomness_hex": drand.randomness(signature).hex(),
              "round_time": timestamp(drand.round_time(used)), "path": path}
    by_stratum: dict[str, list[int]] = {q: [] for q in s.quotas}
    for ticket, _, stratum in r.rows:
        by_stratum[stratum].append(ticket)
    bundle, _, _ = bundle_module.compose(
        campaign=campaign, commitment=r.bundle["commitment"], ceremony=r.bundle["ceremony"], beacon=beacon,
        tickets_by_stratum=by_stratum, drawn_at=r.bundle["drawn_at"], software_version="rehearsal")
    if not declare_line:
        bundle["fallbacks_taken"] = [f for f in bundle["fallbacks_taken"] if not f.startswith("drand round")]
    return resign(r, bundle)


def test_drand_next_round_fallback_passes(tmp_path: Path) -> None:
    result = run_list(tmp_path, drand_fallback_draw(tmp_path, declared=2, used=3))
    assert_passes(result)
    assert any("drand quicknet round 3" in line for line in result[1])


def test_drand_fallback_must_be_declared(tmp_path: Path) -> None:
    assert_fails(run_list(tmp_path, drand_fallback_draw(tmp_path, declared=2, used=3, path="declared-round")),
                 "R7.1.2: beacon round 3 on path declared-round")


def test_drand_fallback_cannot_shop_for_a_later_round(tmp_path: Path) -> None:
    # "Next round" means the next one: any later round would let the operator choose among many.
    assert_fails(run_list(tmp_path, drand_fallback_draw(tmp_path, declared=2, used=30662982)),
                 "R7.1.2: beacon round 30662982 on path next-round-fallback is not the declared round 2")
    assert_fails(run_list(tmp_path, drand_fallback_draw(tmp_path, declared=1, used=3)),
                 "R7.1.2: beacon round 3 on path next-round-fallback is not the declared round 1")
    assert_fails(run_list(tmp_path, drand_fallback_draw(tmp_path, declared=2, used=3, declare_line=False)),
                 "R12.2.7: fallbacks_taken")


def test_sandbox_beacon_round_differs_from_declared(tmp_path: Path) -> None:
    r = make(tmp_path)
    bundle = edited(r, lambda b: b["campaign"]["beacon"].__setitem__("round", 2))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R7.1.2: beacon round")


# --- parameters, seed, cutoffs --------------------------------------------------------------------------

PARAMETER_EDITS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "quota-moved": (lambda b: (b["campaign"]["strata"][0].__setitem__("quota", 11),
                               b["campaign"]["strata"][2].__setitem__("quota", 9)), "R12.2.8: draw.strata[0]"),
    "quota-up": (lambda b: b["campaign"]["strata"][0].__setitem__("quota", 11), "R9.2.1: the quotas add up to 31"),
    "quota-zero": (lambda b: (b["campaign"]["strata"][0].__setitem__("quota", 0),
                              b["campaign"]["strata"][1].__setitem__("quota", 20)), "R9.2.1:"),
    "tier-amount": (lambda b: b["campaign"]["tiers"][0].__setitem__("amount_fen", 19999),
                    "R12.2.8: draw.winners[0][3]"),
    "over-budget": (lambda b: b["campaign"]["tiers"][0].__setitem__("amount_fen", 20001), "R12.2.6:"),
    "tier-count": (lambda b: b["campaign"]["tiers"][0].__setitem__("count", 29), "R9.2.1:"),
    "tier-name": (lambda b: b["campaign"]["tiers"][0].__setitem__("tier", "premium"), "draw.winners[0][2]"),
    "spillover": (lambda b: b["campaign"]["draw_rules"].__setitem__("spillover", "none"), "draw.spillover.rule"),
    "algorithm": (lambda b: b["campaign"]["draw_rules"].__setitem__("algorithm", "rfc3797"), "draw.algorithm"),
    "unknown-algorithm": (lambda b: b["campaign"]["draw_rules"].__setitem__("algorithm", "lowest-ticket"),
                          "R12.2.3: bundle.campaign.draw_rules.algorithm"),
    "campaign-id": (lambda b: b["campaign"].__setitem__("id", "another"), "commitment names another campaign"),
    "stratum-added": (lambda b: b["campaign"]["strata"].append({"stratum": "d4", "quota": 1}), "R9.2.1:"),
    "strata-unsorted": (lambda b: b["campaign"]["strata"].reverse(), "R12.2.4:"),
    "participant-key": (lambda b: b["campaign"]["participants"][0].__setitem__("public_key_hex", "ab" * 32),
                        "participant p1"),
}


@pytest.mark.parametrize("name", sorted(PARAMETER_EDITS))
def test_parameter_changed_and_resigned(tmp_path: Path, name: str) -> None:
    r = make(tmp_path)
    edit, needle = PARAMETER_EDITS[name]
    assert_fails(run_list(tmp_path, resign(r, edited(r, edit))), needle)


def test_seed_altered(tmp_path: Path) -> None:
    r = make(tmp_path)
    bundle = edited(r, lambda b: b["draw"].__setitem__("seed_hex", flip_hex(b["draw"]["seed_hex"], 31)))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "seed: bundle says")


@pytest.mark.parametrize("field", ["cutoff_ticket", "cutoff_score_hex"])
def test_cutoff_altered(tmp_path: Path, field: str) -> None:
    r = make(tmp_path)

    def alter(b: dict[str, Any]) -> None:
        entry = b["draw"]["strata"][1]
        entry[field] = entry[field] + 1 if field == "cutoff_ticket" else flip_hex(entry[field], 0)

    assert_fails(run_list(tmp_path, resign(r, edited(r, alter))), f"draw.strata[1].{field}")


def test_spillover_summary_altered(tmp_path: Path) -> None:
    r = make(tmp_path, quotas={"d1": 10, "d2": 10, "d3": 10, "d4": 20}, count=60,
             tiers=[{"tier": "standard", "amount_fen": 20000, "count": 50}])
    assert r.bundle["draw"]["spillover"]["unused_quota"] > 0
    assert_passes(run_list(tmp_path, r.bundle_bytes))
    bundle = edited(r, lambda b: b["draw"]["spillover"].__setitem__("unused_quota", 0))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "draw.spillover.unused_quota")


# --- keys, signatures, the commitment ----------------------------------------------------------------------

def test_bundle_signed_by_the_wrong_key(tmp_path: Path) -> None:
    r = make(tmp_path)
    intruder = Ed25519PrivateKey.generate()
    data = bundle_module.envelope(r.bundle, intruder.sign, raw_public(intruder))
    assert_fails(run_list(tmp_path, data), "commitment key id is not the service key")
    assert_fails(run_list(tmp_path, data, "--service-key", r.service_public.hex()),
                 "signed by a key other than the pinned service key")
    # Signed by the intruder but naming the real key: the signature fails.
    forged = bundle_module.envelope(r.bundle, intruder.sign, r.service_public)
    assert_fails(run_list(tmp_path, forged), "bundle signature does not verify")
    document = json.loads(r.bundle_bytes)
    document["key_id"] = key_id_of(raw_public(intruder))
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert_fails(run_list(tmp_path, data), "key_id does not match the public key")


def test_pinned_key_refuses_a_self_consistent_draw_by_another_service(tmp_path: Path) -> None:
    # A whole draw made up by someone else with their own key is internally consistent; only
    # pinning the real service key exposes it.
    real = make(tmp_path)
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    fake = rehearsal.rehearse(rehearsal.Scenario(campaign_id="impostor", sandbox_signer=sign_round), count=100, list_path=fake_dir / "list.csv")
    assert real.service_public != fake.service_public
    assert_passes(run_list(fake_dir, fake.bundle_bytes))
    assert_fails(run_list(fake_dir, fake.bundle_bytes, "--service-key", real.service_public.hex()),
                 "pinned service key")
    assert_passes(run_list(fake_dir, fake.bundle_bytes, "--service-key", fake.service_public.hex()))


def test_commitment_root_altered(tmp_path: Path) -> None:
    r = make(tmp_path)
    bundle = edited(r, lambda b: b["commitment"].__setitem__("root_hex", flip_hex(b["commitment"]["root_hex"])))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "commitment signature does not verify")


def test_commitment_root_altered_and_recommitted(tmp_path: Path) -> None:
    # The service re-signs the commitment too (and re-runs the draw for it): the published list
    # no longer hashes to the root, and the participants' reveals name the old root.
    r = make(tmp_path)
    rows = [(t, n, s) for t, n, s in r.rows if t != 42]
    other = rehearsal.rehearse(rehearsal.Scenario(sandbox_signer=sign_round), rows=rows, list_path=tmp_path / "other.csv")
    assert_fails(run_list(tmp_path, other.bundle_bytes), "registrant list has 100 registrants, the commitment 99")
    spliced = edited(r, lambda b: b.__setitem__("commitment", other.bundle["commitment"]))
    assert_fails(run_list(tmp_path, resign(r, spliced), list_path=tmp_path / "other.csv"),
                 "R6.6: participant p1: reveal signature does not verify")


def test_commitment_made_before_registration_closed(tmp_path: Path) -> None:
    r = make(tmp_path)
    later = "2023-09-01T00:10:00.000000Z"  # the list was committed at 00:05

    def close_later(b: dict[str, Any]) -> None:
        b["campaign"]["registration_closes_at"] = b["campaign"]["registration_closed_at"] = later

    assert_fails(run_list(tmp_path, resign(r, edited(r, close_later))), "commitment made before registration closed")
    bundle = edited(r, lambda b: b["campaign"].__setitem__("registration_closed_at", later))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R12.2.5: registration_closed_at lies outside")


def test_not_canonical_or_malformed_bundle(tmp_path: Path) -> None:
    r = make(tmp_path)
    assert_fails(run_list(tmp_path, r.bundle_bytes + b"\n"), "not canonical JSON")
    document = json.loads(r.bundle_bytes)
    document["extra"] = 1
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert_fails(run_list(tmp_path, data), "R12.1.1: envelope has the unexpected key 'extra'")
    bundle = edited(r, lambda b: b["draw"].pop("seed_hex"))
    assert_fails(run_list(tmp_path, resign(r, bundle)), "R12.2.1: bundle.draw lacks the key 'seed_hex'")


# --- one citizen's ticket ---------------------------------------------------------------------------------

def proof_for(r: rehearsal.Rehearsal, index: int, path_index: int | None = None) -> dict[str, Any]:
    assert r.tree is not None
    ticket, name, stratum = r.rows[index]
    return {"ticket": ticket, "leaf_index": index, "tree_size": r.tree.size, "root_hex": r.tree.root.hex(),
            "leaf_hex": encode_leaf(r.bundle["campaign"]["id"], ticket, name, stratum).hex(),
            "audit_path": [p.hex() for p in r.tree.inclusion_proof(index if path_index is None else path_index)]}


def receipt_for(proof: dict[str, Any], key: Ed25519PrivateKey, campaign_id: str = "rehearsal") -> dict[str, Any]:
    registered_at = "2023-08-30T10:00:00.000000Z"
    key_id = key_id_of(raw_public(key))
    statement = receipt_statement(campaign_id, proof["ticket"], proof["leaf_hex"], registered_at, key_id)
    return {"campaign_id": campaign_id, "ticket": proof["ticket"], "leaf_hex": proof["leaf_hex"],
            "registered_at": registered_at, "key_id": key_id, "signature_hex": key.sign(statement).hex()}


def run_ticket(tmp: Path, bundle_bytes: bytes, proof: dict[str, Any], receipt: dict[str, Any] | None = None) -> Result:
    (tmp / "proof.json").write_text(json.dumps(proof))
    args = ["--proof", str(tmp / "proof.json")]
    if receipt is not None:
        (tmp / "receipt.json").write_text(json.dumps(receipt))
        args += ["--receipt", str(tmp / "receipt.json")]
    return run(tmp, bundle_bytes, *args)


def indexes(r: rehearsal.Rehearsal) -> tuple[int, int]:
    winners = {w[0] for w in r.bundle["draw"]["winners"]}
    won = next(i for i, row in enumerate(r.rows) if row[0] in winners)
    lost = next(i for i, row in enumerate(r.rows) if row[0] not in winners)
    return won, lost


def test_ticket_mode_passes_for_a_winner_and_a_loser(tmp_path: Path) -> None:
    r = make(tmp_path)
    won, lost = indexes(r)
    for index, needle in ((won, "WON tier standard"), (lost, "did not win")):
        proof = proof_for(r, index)
        result = run_ticket(tmp_path, r.bundle_bytes, proof, receipt_for(proof, r.service_key))
        assert_passes(result)
        assert any(needle in line for line in result[1])


def test_ticket_mode_proof_for_another_index(tmp_path: Path) -> None:
    r = make(tmp_path)
    won, lost = indexes(r)
    assert_fails(run_ticket(tmp_path, r.bundle_bytes, proof_for(r, won, path_index=lost)),
                 f"is not included at index {won}")
    proof = proof_for(r, won)
    proof["leaf_index"] = lost
    assert_fails(run_ticket(tmp_path, r.bundle_bytes, proof), f"is not included at index {lost}")
    proof = proof_for(r, won)
    proof["leaf_index"] = r.tree.size if r.tree else 0
    assert_fails(run_ticket(tmp_path, r.bundle_bytes, proof), "is not included at index")


def test_ticket_mode_proof_for_another_tree_or_ticket(tmp_path: Path) -> None:
    r = make(tmp_path)
    proof = proof_for(r, 3)
    proof["tree_size"] += 1
    assert_fails(run_ticket(tmp_path, r.bundle_bytes, proof), "proof is for another tree than the committed one")
    proof = proof_for(r, 3)
    proof["ticket"] += 1
    assert_fails(run_ticket(tmp_path, r.bundle_bytes, proof), "proof leaf is for another ticket")
    proof = proof_for(r, 3)
    proof["audit_path"][0] = "00" * 32
    assert_fails(run_ticket(tmp_path, r.bundle_bytes, proof), "is not included at index 3")


def test_ticket_mode_receipt_problems(tmp_path: Path) -> None:
    r = make(tmp_path)
    proof = proof_for(r, 4)
    assert_fails(run_ticket(tmp_path, r.bundle_bytes, proof, receipt_for(proof, Ed25519PrivateKey.generate())),
                 "receipt signature does not verify against the service key")
    other = proof_for(r, 5)
    assert_fails(run_ticket(tmp_path, r.bundle_bytes, proof, receipt_for(other, r.service_key)),
                 "the committed leaf differs from the receipt's")


def test_ticket_mode_tampered_winners(tmp_path: Path) -> None:
    r = make(tmp_path)
    won, lost = indexes(r)
    # The bundle drops a real winner and lists a loser instead, re-signed with a fresh winners' root.
    victim, intruder = r.rows[won][0], r.rows[lost][0]

    def swap(b: dict[str, Any]) -> None:
        for w in b["draw"]["winners"]:
            if w[0] == victim:
                w[0] = intruder
        b["draw"]["winners"].sort()
        b["draw"]["winners_root_hex"] = winners_root_hex(b["draw"]["winners"])

    data = resign(r, edited(r, swap))
    same_stratum = r.rows[won][2] == r.rows[lost][2]
    assert_fails(run_ticket(tmp_path, data, proof_for(r, won)), "within its stratum's cutoff but is not listed")
    assert_fails(run_ticket(tmp_path, data, proof_for(r, lost)),
                 "scores above the cutoff" if same_stratum else "listed in another stratum")
    # A winners list that no longer matches its root.
    stale = edited(r, lambda b: b["draw"]["winners"][0].__setitem__(3, 1))
    assert_fails(run_ticket(tmp_path, resign(r, stale), proof_for(r, won)), "does not hash to the winners' root")


def spill_draw(tmp: Path) -> rehearsal.Rehearsal:
    # d1: 12 registrants for 5 places; d2: none for 5, so 5 places spill over to d1's next 5.
    rows = [(t, rehearsal.pseudonym(t), "d1") for t in range(1, 13)]
    return make(tmp, rows=rows, quotas={"d1": 5, "d2": 5},
                tiers=[{"tier": "standard", "amount_fen": 20000, "count": 10}])


def omit_a_spill_winner(r: rehearsal.Rehearsal) -> tuple[bytes, int]:
    """List a loser in place of a spill-over winner; the re-signed bundle and the omitted winner's row."""
    draw = r.bundle["draw"]
    winners = {w[0] for w in draw["winners"]}
    spill = [w[0] for w in draw["winners"] if w[4] == 2]
    loser = next(t for t, _, _ in r.rows if t not in winners)
    victim = spill[0]

    def swap(b: dict[str, Any]) -> None:
        for w in b["draw"]["winners"]:
            if w[0] == victim:
                w[0] = loser
        b["draw"]["winners"].sort()
        b["draw"]["winners_root_hex"] = winners_root_hex(b["draw"]["winners"])

    return resign(r, edited(r, swap)), next(i for i, row in enumerate(r.rows) if row[0] == victim)


def test_omitted_spill_winner_caught_with_the_list(tmp_path: Path) -> None:
    r = spill_draw(tmp_path)
    assert_passes(run_list(tmp_path, r.bundle_bytes))
    data, _ = omit_a_spill_winner(r)
    assert_fails(run_list(tmp_path, data), "draw.winners[")


def test_omitted_spill_winner_caught_in_ticket_mode(tmp_path: Path) -> None:
    # Every candidate the code examined won round 2 here, yet two tickets lost: the bundle must
    # still publish the spill-over cutoff, or the omitted winner's own check would pass.
    r = spill_draw(tmp_path)
    assert r.bundle["draw"]["spillover"]["cutoff_ticket"] is not None
    data, victim_index = omit_a_spill_winner(r)
    assert_fails(run_ticket(tmp_path, data, proof_for(r, victim_index)), "within the spill-over cutoff but did not win")


# --- any edit of the registrant list ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_draw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, rehearsal.Rehearsal]]:
    tmp = tmp_path_factory.mktemp("small")
    yield tmp, make(tmp, count=40)


FIELD_VALUES: dict[int, st.SearchStrategy[str]] = {
    0: st.integers(0, 10**6).map(str),
    1: st.text(max_size=40) | st.text("0123456789abcdef", min_size=32, max_size=32),
    2: st.sampled_from(["d1", "d2", "d3", "d4", "D1", "d1 ", ""]) | st.text(max_size=4),
}


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_any_field_changed_fails(small_draw: tuple[Path, rehearsal.Rehearsal], data: st.DataObject) -> None:
    tmp, r = small_draw
    line = data.draw(st.integers(0, len(r.rows) - 1), label="line")
    field = data.draw(st.sampled_from([0, 1, 2]), label="field")
    row = [str(v) for v in r.rows[line]]
    value = data.draw(FIELD_VALUES[field].filter(lambda v: v != row[field]), label="value")
    row[field] = value
    text = registrant_list.CSV_HEADER + "\n" + "".join(
        ",".join(row) + "\n" if i == line else registrant_list.csv_line(*original)
        for i, original in enumerate(r.rows))
    path = tmp / "edited.csv"
    path.write_text(text, encoding="utf-8", newline="")
    assert_fails(run_list(tmp, r.bundle_bytes, list_path=path))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_byte_changed_fails(small_draw: tuple[Path, rehearsal.Rehearsal], data: st.DataObject) -> None:
    tmp, r = small_draw
    original = (tmp / "list.csv").read_bytes()
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != original[position]), label="byte")
    path = tmp / "bytes.csv"
    path.write_bytes(original[:position] + bytes([value]) + original[position + 1:])
    assert_fails(run_list(tmp, r.bundle_bytes, list_path=path))


def test_every_field_changed_once(small_draw: tuple[Path, rehearsal.Rehearsal]) -> None:
    tmp, r = small_draw
    last = len(r.rows) - 1
    for line, field in itertools.product((0, 1, last // 2, last - 1, last), range(3)):
        ticket, name, stratum = r.rows[line]
        changed = [(ticket + 1000, name, stratum), (ticket, name[::-1], stratum),
                   (ticket, name, "d2" if stratum == "d1" else "d1")][field]
        rows = [*r.rows[:line], changed, *r.rows[line + 1:]]
        assert_fails(run_list(tmp, r.bundle_bytes, list_path=write_csv(tmp / "each.csv", rows)))
