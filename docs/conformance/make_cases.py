"""Regenerate the conformance cases of docs/draw-spec.md from the project's own code.

    .venv/bin/python docs/conformance/make_cases.py [--out DIR] [--check]

Each case is a signed bundle with its registrant list (full mode) or an inclusion proof and a
receipt (ticket mode), and the verdict and rule a verifier must report. Every case breaks at most
one rule. A tampered bundle is signed again with the cases' fixed service key (derived from the
public label "service/conformance", like the examples: worthless for anything real), so a case can
reach the deep rules and not stop at the envelope's signature. Writes cases/<name>/ and
cases.json next to this file (or into DIR); with --check, also runs stimulus-verify on every case
and stops at the first one whose verdict or rule differs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lottery import bundle as bundle_module
from lottery import drand, registrant_list, rehearsal, verify
from lottery.leaf import encode_leaf
from lottery.merkle import MerkleTree
from lottery.selection import winner_leaf
from lottery.statements import (
    commitment_statement,
    key_id_of,
    parse_timestamp,
    receipt_statement,
    timestamp,
)
from sandbox.drand_chain import sign_round

HERE = Path(__file__).resolve().parent
OUT = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else HERE
CAMPAIGN = "conformance"
SERVICE = rehearsal.deterministic_key(f"service/{CAMPAIGN}")
SERVICE_PUBLIC = rehearsal._raw_public(SERVICE)
OTHER = rehearsal.deterministic_key("another service/conformance")
# Real quicknet rounds (see tests/lottery/test_drand.py for their sources), for the fallback draws.
QUICKNET = {
    2: "b6b6a585449b66eb12e875b64fcbab3799861a00e4dbf092d99e969a5eac57dd3f798acf61e705fe4f093db926626807",
    3: "b3fab6df720b68cc47175f2c777e86d84187caab5770906f515ff1099cb01e4deaa027075d860823e49477b93c72bd64",
}
Row = tuple[int, str, str]


@dataclass
class Case:
    name: str
    description: str
    rule: str | None  # None: the case must PASS
    bundle: bytes
    rows: Sequence[Row] | None = None
    list_text: bytes | None = None
    ndjson: bool = False
    proof: Any = None
    receipt: Any = None
    pinned: bool = True
    service_key: bytes = SERVICE_PUBLIC  # the key pinned, when `pinned`
    files: dict[str, bytes] = field(default_factory=dict)


# --- the draws the cases start from -------------------------------------------------------------------

def rows_for(spec: dict[str, int], first: int = 1) -> list[Row]:
    """Tickets in order, dealt to strata round-robin by the given counts."""
    pending = dict(spec)
    rows: list[Row] = []
    ticket = first
    while any(pending.values()):
        for stratum in sorted(pending):
            if pending[stratum]:
                rows.append((ticket, rehearsal.pseudonym(ticket), stratum))
                pending[stratum] -= 1
                ticket += 1
    return rows


BASE_ROWS = rows_for({"north": 9, "south": 1, "west": 6})
BASE = {"campaign_id": CAMPAIGN, "quotas": {"north": 2, "south": 2, "west": 2}, "participants": 3,
        "tiers": [{"tier": "first", "amount_fen": 20000, "count": 1}, {"tier": "second", "amount_fen": 10000, "count": 5}]}


def draw(rows: Sequence[Row] = BASE_ROWS, **changes: Any) -> rehearsal.Rehearsal:
    return rehearsal.rehearse(rehearsal.Scenario(**{**BASE, "sandbox_signer": sign_round, **changes}), rows=list(rows))


def tickets_by_stratum(bundle: dict[str, Any], rows: Sequence[Row]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {s["stratum"]: [] for s in bundle["campaign"]["strata"]}
    for ticket, _, stratum in rows:
        grouped[stratum].append(ticket)
    return grouped


def recompose(bundle: dict[str, Any], rows: Sequence[Row]) -> dict[str, Any]:
    """The bundle's draw section and fallbacks recomputed after an edit of its evidence."""
    fresh, _, _ = bundle_module.compose(
        campaign=bundle["campaign"], commitment=bundle["commitment"], ceremony=bundle["ceremony"],
        beacon=bundle["beacon"], tickets_by_stratum=tickets_by_stratum(bundle, rows), drawn_at=bundle["drawn_at"],
        software_version=bundle["software"]["version"])
    return fresh


def resandboxed(bundle: dict[str, Any], rows: Sequence[Row] = BASE_ROWS) -> dict[str, Any]:
    """A sandbox bundle whose evidence times were edited, with its open round taken again and the
    draw recomputed, as the service would have drawn it."""
    bundle["beacon"] = rehearsal.sandbox_beacon(bundle["campaign"], bundle["commitment"], bundle["ceremony"],
                                                sign_round)
    return recompose(bundle, rows)


def sign(bundle: dict[str, Any], key: Any = SERVICE) -> bytes:
    return bundle_module.envelope(bundle, key.sign, rehearsal._raw_public(key))


def edited(r: rehearsal.Rehearsal, edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    bundle = copy.deepcopy(r.bundle)
    edit(bundle)
    return bundle


def redrawn(r: rehearsal.Rehearsal, edit: Callable[[dict[str, Any]], object],
            rows: Sequence[Row] = BASE_ROWS) -> dict[str, Any]:
    """The edit, then the seed, the draw and the fallbacks recomputed: only the edited rule breaks."""
    return recompose(edited(r, edit), rows)


def resign_commitment(bundle: dict[str, Any]) -> None:
    c = bundle["commitment"]
    c["signature_hex"] = SERVICE.sign(commitment_statement(
        c["campaign_id"], c["tree_size"], c["root_hex"], c["committed_at"], c["key_id"])).hex()


def shift(stamp: str, **delta: float) -> str:
    return timestamp(parse_timestamp(stamp) + timedelta(**delta))


def flip_hex(value: str, position: int = 5) -> str:
    data = bytearray.fromhex(value)
    data[position] ^= 0x01
    return data.hex()


def winners_root_hex(winners: list[list[Any]]) -> str:
    return MerkleTree.from_leaves(winner_leaf(w[0], w[1], w[2], w[3]) for w in winners).root.hex()


def fallback_draw(declared: int = 2, used: int = 3, path: str | None = None,
                  fallback: str = "next-round") -> tuple[dict[str, Any], list[Row]]:
    """A drand draw whose declared round `declared` was missed, drawn on `used` under next-round."""
    rows = rows_for({"north": 6, "west": 4})
    r = draw(rows, beacon="drand-quicknet", participants=2, quotas={"north": 3, "west": 3},
             closes_at=datetime(2023, 8, 1, tzinfo=UTC))
    bundle = copy.deepcopy(r.bundle)
    bundle["campaign"]["beacon"].update(round=declared, fallback=fallback)
    signature = bytes.fromhex(QUICKNET[used])
    bundle["beacon"].update(round=used, signature_hex=signature.hex(), randomness_hex=drand.randomness(signature).hex(),
                            round_time=timestamp(drand.round_time(used)),
                            path=path or ("declared-round" if used == declared else "next-round-fallback"))
    return recompose(bundle, rows), rows


def proof_of(r: rehearsal.Rehearsal, ticket: int) -> dict[str, Any]:
    assert r.tree is not None
    index = next(i for i, row in enumerate(r.rows) if row[0] == ticket)
    _, name, stratum = r.rows[index]
    return {"campaign_id": CAMPAIGN, "ticket": ticket, "leaf_index": index, "tree_size": r.tree.size,
            "leaf_hex": encode_leaf(CAMPAIGN, ticket, name, stratum).hex(),
            "audit_path": [p.hex() for p in r.tree.inclusion_proof(index)], "root_hex": r.tree.root.hex()}


def receipt_of(proof: dict[str, Any], key: Any = SERVICE) -> dict[str, Any]:
    registered_at = "2023-08-30T10:00:00.123456+00:00"
    key_id = key_id_of(rehearsal._raw_public(key))
    statement = receipt_statement(CAMPAIGN, proof["ticket"], proof["leaf_hex"], registered_at, key_id)
    return {"campaign_id": CAMPAIGN, "ticket": proof["ticket"], "leaf_hex": proof["leaf_hex"],
            "registered_at": registered_at, "key_id": key_id, "signature_hex": key.sign(statement).hex()}


def csv_text(rows: Sequence[Row]) -> bytes:
    return (registrant_list.CSV_HEADER + "\n" + "".join(registrant_list.csv_line(*row) for row in rows)).encode()


def ndjson_text(rows: Sequence[Row]) -> bytes:
    return "".join(registrant_list.ndjson_line(*row) for row in rows).encode()


def winner_and_loser(bundle: dict[str, Any], rows: Sequence[Row]) -> tuple[int, int]:
    won = {w[0] for w in bundle["draw"]["winners"]}
    return (next(t for t, _, _ in rows if t in won), next(t for t, _, _ in rows if t not in won))


# --- the cases -------------------------------------------------------------------------------------------

def passing() -> Iterator[Case]:
    drand_draw = draw(beacon="drand-quicknet", missing_reveals=1)
    yield Case("pass-drand-sha256", "drand quicknet round 657413, sha256-score-v1, one participant never "
               "revealed (proceed-without), a short stratum whose places spill over", None,
               drand_draw.bundle_bytes, BASE_ROWS)
    yield Case("pass-drand-sha256-ndjson", "the same draw with the list in its NDJSON spelling", None,
               drand_draw.bundle_bytes, BASE_ROWS, ndjson=True)
    yield Case("pass-unpinned-key", "the same draw with no service key pinned: PASS with a warning", None,
               drand_draw.bundle_bytes, BASE_ROWS, pinned=False)
    yield Case("pass-sandbox-sha256", "the sandbox beacon, every participant revealed", None,
               draw().bundle_bytes, BASE_ROWS)
    yield Case("pass-drand-rfc3797", "drand quicknet with the rfc3797 algorithm and spill-over", None,
               draw(beacon="drand-quicknet", algorithm="rfc3797").bundle_bytes, BASE_ROWS)
    yield Case("pass-sandbox-rfc3797-missing-reveal", "sandbox beacon, rfc3797, a missing reveal under a set "
               "reveal deadline", None, draw(algorithm="rfc3797", missing_reveals=1).bundle_bytes, BASE_ROWS)
    yield Case("pass-spillover-none", "spill-over rule none: unused_quota counts the empty places, the last "
               "tier comes up short", None, draw(spillover="none").bundle_bytes, BASE_ROWS)
    yield Case("pass-rfc3797-spillover-none", "rfc3797 with spill-over none", None,
               draw(spillover="none", algorithm="rfc3797").bundle_bytes, BASE_ROWS)
    bundle, rows = fallback_draw()
    yield Case("pass-next-round-fallback", "declared drand round 2 missed; round 3 used under the declared "
               "next-round fallback, and declared in fallbacks_taken", None, sign(bundle), rows)
    rows = rows_for({"a": 5, "b": 3})
    yield Case("pass-quota-edges", "quotas of 1; a stratum with exactly its quota (cutoff null); an empty "
               "stratum whose 2 places spill over", None,
               draw(rows, quotas={"a": 1, "b": 3, "c": 2}, tiers=[{"tier": "gold", "amount_fen": 500, "count": 1},
                                                               {"tier": "std", "amount_fen": 100, "count": 5}],
                    ).bundle_bytes, rows)
    rows = rows_for({"a": 2, "b": 1})
    yield Case("pass-everyone-wins", "fewer registrants than places: everyone wins, no cutoff at all, the "
               "tiers come up short", None, draw(rows, quotas={"a": 3, "b": 3},
                                                 tiers=[{"tier": "t", "amount_fen": 100, "count": 6}]).bundle_bytes,
               rows)
    yield Case("pass-empty-list", "no registrants at all: tree size 0, the empty root, no winners", None,
               draw([], quotas={"a": 1}, tiers=[{"tier": "t", "amount_fen": 1, "count": 1}]).bundle_bytes, [])
    yield Case("pass-empty-list-ndjson", "no registrants, NDJSON spelling: an empty file", None,
               draw([], quotas={"a": 1}, tiers=[{"tier": "t", "amount_fen": 1, "count": 1}]).bundle_bytes, [],
               ndjson=True)
    big = [(0, rehearsal.pseudonym(0), "a"), (7, rehearsal.pseudonym(7), "b"),
           (2**63, rehearsal.pseudonym(2**63), "a"), (2**64 - 2, rehearsal.pseudonym(2**64 - 2), "b"),
           (2**64 - 1, rehearsal.pseudonym(2**64 - 1), "a")]
    yield Case("pass-extreme-tickets", "tickets 0 and 2^64-1 with wide gaps", None,
               draw(big, quotas={"a": 1, "b": 1}, tiers=[{"tier": "t", "amount_fen": 100, "count": 2}]).bundle_bytes,
               big)
    odd = [(1, 'quote " and \\ backslash', "a"), (2, "comma, and é 中文", "a"),
           (3, "é" * 127 + "x", "a"), (4, "tab\there", "a")]
    yield Case("pass-ndjson-escapes", "NDJSON pseudonyms that need escapes, carry a comma, or are 255 bytes of "
               "UTF-8 (canonical lines)", None,
               draw(odd, quotas={"a": 2}, tiers=[{"tier": "t", "amount_fen": 100, "count": 2}]).bundle_bytes, odd,
               ndjson=True)
    yield Case("pass-no-participants", "a campaign without ceremony participants", None,
               draw(participants=0).bundle_bytes, BASE_ROWS)

    def early_close(b: dict[str, Any]) -> None:
        b["campaign"]["registration_closes_at"] = shift(b["campaign"]["registration_closes_at"], days=1)
        b["campaign"]["draw_rules"]["reveal_deadline"] = shift(b["campaign"]["registration_closes_at"], hours=1)
    r = draw(missing_reveals=1)
    yield Case("pass-closed-early", "registration closed a day before the declared close", None,
               sign(resandboxed(edited(r, early_close))), BASE_ROWS)

    def just_in_time(b: dict[str, Any]) -> None:
        b["ceremony"][1]["revealed_at"] = shift(b["campaign"]["draw_rules"]["reveal_deadline"], microseconds=-1)
    yield Case("pass-reveal-just-before-deadline", "a reveal one microsecond before the reveal deadline", None,
               sign(resandboxed(edited(r, just_in_time))), BASE_ROWS)
    winner, loser = winner_and_loser(drand_draw.bundle, BASE_ROWS)
    proof = proof_of(drand_draw, winner)
    yield Case("pass-ticket-winner", "ticket mode: a winner, with its receipt", None, drand_draw.bundle_bytes,
               proof=proof, receipt=receipt_of(proof))
    yield Case("pass-ticket-loser", "ticket mode: a ticket that did not win, without a receipt", None,
               drand_draw.bundle_bytes, proof=proof_of(drand_draw, loser))
    spill_winner = next(w[0] for w in drand_draw.bundle["draw"]["winners"] if w[4] == 2)
    yield Case("pass-ticket-spill-winner", "ticket mode: a round-2 (spill-over) winner", None,
               drand_draw.bundle_bytes, proof=proof_of(drand_draw, spill_winner))
    rfc = draw(algorithm="rfc3797")
    yield Case("pass-ticket-rfc3797", "ticket mode on an rfc3797 draw: inclusion and the winners' root", None,
               rfc.bundle_bytes, proof=proof_of(rfc, BASE_ROWS[0][0]))


def envelope_and_shape() -> Iterator[Case]:
    r = draw()
    yield Case("fail-file-trailing-newline", "the bundle file ends with a newline", "R2.5.1",
               r.bundle_bytes + b"\n", BASE_ROWS)
    text = r.bundle_bytes.decode()
    yield Case("fail-file-repeated-key", "the bundle object holds \"sandbox\" twice", "R2.5.1",
               text.replace('"sandbox":true', '"sandbox":true,"sandbox":true', 1).encode(), BASE_ROWS)
    yield Case("fail-file-float", "a float in the bundle", "R2.5.1",
               text.replace('"tree_size":16', '"tree_size":16.0', 1).encode(), BASE_ROWS)
    document = json.loads(r.bundle_bytes)
    yield Case("fail-envelope-extra-key", "the envelope has a fifth key", "R12.1.1",
               canonical({**document, "comment": "x"}), BASE_ROWS)
    yield Case("fail-envelope-signature-not-string", "signature_hex is a number", "R12.1.1",
               canonical({**document, "signature_hex": 1}), BASE_ROWS)
    yield Case("fail-envelope-key-upper-case", "public_key_hex in upper case", "R2.3.1",
               canonical({**document, "public_key_hex": document["public_key_hex"].upper()}), BASE_ROWS)
    yield Case("fail-pinned-key", "a self-consistent draw signed by another service's key, with the real key "
               "pinned", "R12.1.2", sign(r.bundle, OTHER), BASE_ROWS)
    yield Case("fail-key-id", "key_id names another key", "R12.1.3",
               canonical({**document, "key_id": key_id_of(rehearsal._raw_public(OTHER))}), BASE_ROWS)
    swapped = copy.deepcopy(document)
    swapped["bundle"]["draw"]["winners"][0][0] += 1
    yield Case("fail-bundle-signature", "a winner changed and the bundle not signed again", "R12.1.4",
               canonical(swapped), BASE_ROWS)
    yield Case("fail-format", "bundle.format is v2", "R12.1.5",
               sign(edited(r, lambda b: b.__setitem__("format", "stimulus/draw-bundle/v2"))), BASE_ROWS)
    yield Case("fail-shape-extra-key", "draw has a key the spec does not list", "R12.2.1",
               sign(edited(r, lambda b: b["draw"].__setitem__("note", "x"))), BASE_ROWS)
    yield Case("fail-shape-missing-key", "the ceremony entry lacks revealed_at", "R12.2.1",
               sign(edited(r, lambda b: b["ceremony"][0].pop("revealed_at"))), BASE_ROWS)
    yield Case("fail-shape-fallback-not-string", "fallbacks_taken holds a number", "R12.2.2",
               sign(edited(r, lambda b: b["fallbacks_taken"].append(7))), BASE_ROWS)
    yield Case("fail-shape-winner-row", "a winner row with four entries", "R12.2.2",
               sign(edited(r, lambda b: b["draw"]["winners"][0].pop())), BASE_ROWS)
    yield Case("fail-shape-boolean-integer", "a quota written as true", "R12.2.2",
               sign(edited(r, lambda b: b["campaign"]["strata"][0].__setitem__("quota", True))), BASE_ROWS)
    yield Case("fail-shape-huge-number", "tree_size 2^64", "R2.1.1",
               sign(edited(r, lambda b: b["commitment"].__setitem__("tree_size", 2**64))), BASE_ROWS)
    yield Case("fail-shape-negative", "a negative amount_fen", "R2.1.1",
               sign(edited(r, lambda b: b["campaign"]["tiers"][0].__setitem__("amount_fen", -1))), BASE_ROWS)
    yield Case("fail-shape-hex-upper-case", "a participant's public key in upper-case hex (the same bytes)",
               "R2.3.1", sign(edited(r, lambda b: b["campaign"]["participants"][0].__setitem__(
                   "public_key_hex", b["campaign"]["participants"][0]["public_key_hex"].upper()))), BASE_ROWS)
    yield Case("fail-shape-root-upper-case", "the committed root in upper-case hex (its signature then fails too: "
               "the shape is checked first)", "R2.3.1",
               sign(edited(r, lambda b: b["commitment"].__setitem__("root_hex", b["commitment"]["root_hex"].upper()))),
               BASE_ROWS)
    yield Case("fail-shape-secret-too-short", "a revealed secret of 15 bytes", "R2.3.1",
               sign(edited(r, lambda b: b["ceremony"][0].__setitem__("secret_hex", "00" * 15))), BASE_ROWS)
    yield Case("fail-shape-timestamp", "drawn_at without its microseconds", "R2.4.1",
               sign(edited(r, lambda b: b.__setitem__("drawn_at", b["drawn_at"].replace(".000000", "")))), BASE_ROWS)
    yield Case("fail-shape-unknown-algorithm", "draw_rules.algorithm is not one of the two", "R12.2.3",
               sign(edited(r, lambda b: b["campaign"]["draw_rules"].__setitem__("algorithm", "lowest-ticket"))),
               BASE_ROWS)
    yield Case("fail-shape-status", "a ceremony status outside revealed/missing", "R12.2.3",
               sign(edited(r, lambda b: b["ceremony"][0].__setitem__("status", "late"))), BASE_ROWS)
    upper = rehearsal.rehearse(rehearsal.Scenario(**{**BASE, "campaign_id": "Conformance", "sandbox_signer": sign_round}), rows=BASE_ROWS)
    yield Case("fail-campaign-id", "a whole, consistent draw for the campaign id Conformance (upper case), "
               "signed by that draw's own key", "R3.1", upper.bundle_bytes, BASE_ROWS, service_key=upper.service_public)
    spaced = draw(tiers=[{"tier": "first prize", "amount_fen": 20000, "count": 1}, BASE["tiers"][1]])
    yield Case("fail-tier-label", "a whole, consistent draw whose first tier is named \"first prize\"", "R3.2",
               spaced.bundle_bytes, BASE_ROWS)


def canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def campaign_rules() -> Iterator[Case]:
    r = draw(missing_reveals=1)
    yield Case("fail-strata-unsorted", "campaign.strata not in stratum order", "R12.2.4",
               sign(edited(r, lambda b: b["campaign"]["strata"].reverse())), BASE_ROWS)
    yield Case("fail-participants-unsorted", "campaign.participants not in id order", "R12.2.4",
               sign(edited(r, lambda b: b["campaign"]["participants"].reverse())), BASE_ROWS)
    yield Case("fail-closed-after-declared-close", "registration_closed_at after registration_closes_at",
               "R12.2.5", sign(edited(r, lambda b: b["campaign"].__setitem__(
                   "registration_closed_at", shift(b["campaign"]["registration_closes_at"], seconds=1)))), BASE_ROWS)
    lone = draw(participants=1, missing_reveals=1)  # nobody revealed, so no reveal is late either
    yield Case("fail-reveal-deadline-before-close", "the reveal deadline before registration closes", "R12.2.5",
               sign(edited(lone, lambda b: b["campaign"]["draw_rules"].__setitem__(
                   "reveal_deadline", shift(b["campaign"]["registration_closes_at"], hours=-1)))), BASE_ROWS)
    yield Case("fail-budget", "the budget one fen short of the prizes", "R12.2.6",
               sign(edited(r, lambda b: b["campaign"].__setitem__("budget_fen", 69999))), BASE_ROWS)

    def duplicate_tier(b: dict[str, Any]) -> None:
        b["campaign"]["tiers"][1]["tier"] = "first"
    yield Case("fail-tier-names-repeat", "two tiers named first (drawn so)", "R9.2.2", sign(redrawn(r, duplicate_tier)),
               BASE_ROWS)

    def zero_count(b: dict[str, Any]) -> None:
        b["campaign"]["tiers"].append({"tier": "third", "amount_fen": 1, "count": 0})
    yield Case("fail-tier-count-zero", "a tier of count 0", "R9.2.2", sign(edited(r, zero_count)), BASE_ROWS)
    yield Case("fail-quotas-sum", "quotas add up to 7, the tiers to 6", "R9.2.1",
               sign(edited(r, lambda b: b["campaign"]["strata"][0].__setitem__("quota", 3))), BASE_ROWS)

    def zero_quota(b: dict[str, Any]) -> None:
        b["campaign"]["strata"][0]["quota"] = 4
        b["campaign"]["strata"][1]["quota"] = 0
    yield Case("fail-quota-zero", "a quota of 0 (the sum still matches the tiers)", "R9.2.1",
               sign(edited(r, zero_quota)), BASE_ROWS)
    rfc = draw(algorithm="rfc3797")

    def too_many(b: dict[str, Any]) -> None:
        b["campaign"]["tiers"][1]["count"] = 65536
        b["campaign"]["strata"][0]["quota"] = 65533
        b["campaign"]["budget_fen"] = 20000 + 10000 * 65536
    yield Case("fail-rfc3797-too-many-winners", "rfc3797 with 65,537 winners", "R10.2.1",
               sign(edited(rfc, too_many)), BASE_ROWS)


def commitment_rules() -> Iterator[Case]:
    r = draw()
    yield Case("fail-commitment-campaign", "the commitment names another campaign", "R5.1.1",
               sign(edited(r, lambda b: b["commitment"].__setitem__("campaign_id", "another"))), BASE_ROWS)
    def other_key_id(b: dict[str, Any]) -> None:
        b["commitment"]["key_id"] = key_id_of(rehearsal._raw_public(OTHER))
        resign_commitment(b)
    yield Case("fail-commitment-key-id", "the commitment names another key's id (signed so by the service)",
               "R5.1.2", sign(edited(r, other_key_id)), BASE_ROWS)
    yield Case("fail-commitment-signature", "the committed root changed, its signature not", "R5.1.3",
               sign(edited(r, lambda b: b["commitment"].__setitem__("root_hex", flip_hex(b["commitment"]["root_hex"])))),
               BASE_ROWS)

    def early(b: dict[str, Any]) -> None:
        b["commitment"]["committed_at"] = shift(b["campaign"]["registration_closed_at"], seconds=-1)
        resign_commitment(b)
    yield Case("fail-committed-before-close", "the list committed (and signed) a second before registration "
               "closed", "R5.1.4", sign(edited(r, early)), BASE_ROWS)


def ceremony_rules() -> Iterator[Case]:
    r = draw(missing_reveals=1)
    yield Case("fail-ceremony-order", "ceremony entries not in participant_id order", "R6.1",
               sign(edited(r, lambda b: b["ceremony"].reverse())), BASE_ROWS)
    yield Case("fail-ceremony-missing-entry", "one participant has no ceremony entry", "R6.1",
               sign(edited(r, lambda b: b["ceremony"].pop())), BASE_ROWS)
    yield Case("fail-ceremony-status", "a participant without a secret marked revealed", "R6.2",
               sign(edited(r, lambda b: b["ceremony"][0].__setitem__("status", "revealed"))), BASE_ROWS)
    yield Case("fail-ceremony-half-reveal", "a reveal signature without a secret", "R6.2",
               sign(edited(r, lambda b: b["ceremony"][0].__setitem__("reveal_signature_hex", "00" * 64))), BASE_ROWS)
    yield Case("fail-commit-signature", "a participant's commit signature altered", "R6.3",
               sign(edited(r, lambda b: b["ceremony"][1].__setitem__(
                   "commit_signature_hex", flip_hex(b["ceremony"][1]["commit_signature_hex"])))), BASE_ROWS)
    yield Case("fail-committed-after-close", "a participant committed after registration closed", "R6.4",
               sign(edited(r, lambda b: b["ceremony"][1].__setitem__(
                   "committed_at", shift(b["campaign"]["registration_closed_at"], seconds=1)))), BASE_ROWS)
    yield Case("fail-secret", "a revealed secret that does not match its commitment", "R6.5",
               sign(edited(r, lambda b: b["ceremony"][1].__setitem__(
                   "secret_hex", hashlib.sha256(b"another secret").hexdigest()))), BASE_ROWS)

    def other_reveal_key(b: dict[str, Any]) -> None:
        b["ceremony"][1]["reveal_signature_hex"] = b["ceremony"][2]["reveal_signature_hex"]
    yield Case("fail-reveal-signature", "p2's reveal carries p3's signature", "R6.6",
               sign(edited(r, other_reveal_key)), BASE_ROWS)
    yield Case("fail-revealed-before-commitment", "a reveal before the list was committed", "R6.7",
               sign(edited(r, lambda b: b["ceremony"][1].__setitem__(
                   "revealed_at", shift(b["commitment"]["committed_at"], seconds=-1)))), BASE_ROWS)
    yield Case("fail-revealed-after-deadline", "a reveal after the reveal deadline but before the beacon",
               "R6.8", sign(resandboxed(edited(r, lambda b: b["ceremony"][1].__setitem__(
                   "revealed_at", shift(b["campaign"]["draw_rules"]["reveal_deadline"], hours=1))))), BASE_ROWS)
    bundle, rows = fallback_draw()
    bundle["ceremony"][0]["revealed_at"] = timestamp(drand.round_time(2) + timedelta(seconds=1))
    yield Case("fail-revealed-after-declared-round", "drand fallback draw: a reveal after the declared round "
               "was due but before the round used", "R6.8", sign(bundle), rows)
    yield Case("fail-missing-reveal-abort", "a missing reveal under the rule abort", "R6.9",
               sign(edited(r, lambda b: b["campaign"]["draw_rules"].__setitem__("missing_reveal", "abort"))),
               BASE_ROWS)
    yield Case("fail-missing-reveal-no-deadline", "a sandbox draw without a reveal deadline drawn without a "
               "secret", "R6.10",
               sign(resandboxed(edited(r, lambda b: b["campaign"]["draw_rules"].__setitem__("reveal_deadline", None)))),
               BASE_ROWS)

    def declared_before_deadline(b: dict[str, Any]) -> None:
        # A sandbox campaign that declared its round, a round published before the reveal deadline.
        b["campaign"]["beacon"]["round"] = b["beacon"]["round"]
        b["beacon"]["path"] = "declared-round"
        b["campaign"]["draw_rules"]["reveal_deadline"] = shift(b["beacon"]["round_time"], seconds=1)
    yield Case("fail-missing-reveal-deadline-after-beacon", "the sandbox round published before the reveal deadline",
               "R6.10", sign(recompose(edited(r, declared_before_deadline), BASE_ROWS)), BASE_ROWS)


def beacon_rules() -> Iterator[Case]:
    d = draw(beacon="drand-quicknet")
    s = draw()
    yield Case("fail-beacon-kind", "the campaign declared a sandbox beacon, the bundle used drand", "R7.2.1",
               sign(edited(d, lambda b: b["campaign"]["beacon"].__setitem__("kind", "sandbox"))), BASE_ROWS)
    yield Case("fail-drand-randomness", "drand randomness not SHA-256 of the signature", "R7.2.2",
               sign(edited(d, lambda b: b["beacon"].__setitem__("randomness_hex", "22" * 32))), BASE_ROWS)
    yield Case("fail-sandbox-randomness", "sandbox randomness replaced", "R7.2.2",
               sign(edited(s, lambda b: b["beacon"].__setitem__("randomness_hex", "11" * 32))), BASE_ROWS)
    yield Case("fail-sandbox-flag-false", "a sandbox beacon in a bundle marked sandbox false", "R7.2.3",
               sign(edited(s, lambda b: b.__setitem__("sandbox", False))), BASE_ROWS)
    yield Case("fail-sandbox-flag-true", "a drand beacon in a bundle marked sandbox true", "R7.2.3",
               sign(edited(d, lambda b: b.__setitem__("sandbox", True))), BASE_ROWS)
    yield Case("fail-drand-chain", "another chain hash", "R7.1.1",
               sign(edited(d, lambda b: b["beacon"].__setitem__("chain_hash", "00" * 32))), BASE_ROWS)
    bundle, rows = fallback_draw(path="declared-round")
    yield Case("fail-fallback-undeclared-path", "round 3 used for declared round 2 on the path declared-round",
               "R7.1.2", sign(bundle), rows)
    bundle, rows = fallback_draw(fallback="none")
    yield Case("fail-fallback-not-allowed", "the next round used while the campaign's fallback is none", "R7.1.2",
               sign(bundle), rows)
    bundle, rows = fallback_draw(declared=2, used=2, path="next-round-fallback")
    yield Case("fail-fallback-path-on-declared-round", "the declared round itself recorded on the fallback path",
               "R7.1.2", sign(bundle), rows)
    bundle, rows = fallback_draw(declared=1, used=3)
    yield Case("fail-fallback-two-rounds-later", "round 3 used for declared round 1: only the next round may be",
               "R7.1.2", sign(bundle), rows)
    yield Case("fail-drand-round-time", "round_time a second late", "R7.1.3",
               sign(edited(d, lambda b: b["beacon"].__setitem__("round_time", shift(b["beacon"]["round_time"],
                                                                                     seconds=1)))), BASE_ROWS)

    def committed_late(b: dict[str, Any]) -> None:
        b["commitment"]["committed_at"] = shift(b["beacon"]["round_time"], hours=1)
        resign_commitment(b)
    alone = draw(beacon="drand-quicknet", participants=0)  # no reveal to fall before the new commitment
    yield Case("fail-drand-round-before-commitment", "the round was published before the list was committed",
               "R7.1.4", sign(edited(alone, committed_late)), BASE_ROWS)

    def bad_bls(b: dict[str, Any]) -> None:
        b["beacon"]["signature_hex"] = flip_hex(b["beacon"]["signature_hex"], 47)
        b["beacon"]["randomness_hex"] = hashlib.sha256(bytes.fromhex(b["beacon"]["signature_hex"])).hexdigest()
    yield Case("fail-drand-bls", "a drand signature altered; its randomness, the seed and the draw recomputed",
               "R7.1.5", sign(redrawn(d, bad_bls)), BASE_ROWS)

    def shopped(b: dict[str, Any]) -> None:
        later = b["beacon"]["round"] + 1
        signature = sign_round(later)
        b["beacon"].update(round=later, signature_hex=signature.hex(), randomness_hex=drand.randomness(signature).hex(),
                           round_time=timestamp(drand.SANDBOX.round_time(later)))
    yield Case("fail-sandbox-round", "an open-round sandbox campaign drawn with the round after the first one after "
               "the reveals", "R7.3.1", sign(recompose(edited(s, shopped), BASE_ROWS)), BASE_ROWS)
    yield Case("fail-sandbox-key", "the sandbox beacon names another key", "R7.3.2",
               sign(edited(s, lambda b: b["beacon"].__setitem__("public_key_hex", drand.QUICKNET.public_key_hex))),
               BASE_ROWS)
    yield Case("fail-sandbox-warning", "the sandbox beacon's warning removed", "R7.3.3",
               sign(edited(s, lambda b: b["beacon"].__setitem__("warning", "a fair draw"))), BASE_ROWS)
    yield Case("fail-sandbox-chain", "a sandbox beacon naming the quicknet chain", "R7.1.1",
               sign(edited(s, lambda b: b["beacon"].__setitem__("chain_hash", drand.QUICKNET.chain_hash))), BASE_ROWS)

    def quicknet_key(b: dict[str, Any]) -> None:
        signature = bytes.fromhex(rehearsal.DRAND_VECTOR_SIGNATURE)
        b["beacon"].update(signature_hex=signature.hex(), randomness_hex=drand.randomness(signature).hex())
    yield Case("fail-sandbox-bls", "a sandbox beacon carrying a quicknet signature", "R7.1.5",
               sign(recompose(edited(s, quicknet_key), BASE_ROWS)), BASE_ROWS)

    def undeclared_drand(b: dict[str, Any]) -> None:
        b["campaign"]["beacon"]["round"] = None
    yield Case("fail-drand-round-open", "a drand campaign that declared no round", "R7.1.2",
               sign(edited(d, undeclared_drand)), BASE_ROWS)


def seed_and_draw_rules() -> Iterator[Case]:
    r = draw(missing_reveals=1)
    yield Case("fail-fallbacks-missing", "a missing reveal not declared in fallbacks_taken", "R12.2.7",
               sign(edited(r, lambda b: b.__setitem__("fallbacks_taken", []))), BASE_ROWS)
    yield Case("fail-fallbacks-extra", "a beacon fallback declared that was never taken", "R12.2.7",
               sign(edited(r, lambda b: b["fallbacks_taken"].append(
                   "drand round 1 unavailable: used round 2 (rule next-round)"))), BASE_ROWS)
    bundle, rows = fallback_draw()
    bundle["fallbacks_taken"] = []
    yield Case("fail-fallbacks-beacon-line", "the next round used without its line in fallbacks_taken", "R12.2.7",
               sign(bundle), rows)
    yield Case("fail-seed", "the seed altered", "R8.1",
               sign(edited(r, lambda b: b["draw"].__setitem__("seed_hex", flip_hex(b["draw"]["seed_hex"], 31)))),
               BASE_ROWS)
    for algorithm in ("sha256-score-v1", "rfc3797"):
        a = draw(algorithm=algorithm)

        def swap(b: dict[str, Any]) -> None:
            winners = {w[0] for w in b["draw"]["winners"]}
            losers = [(t, s) for t, _, s in BASE_ROWS if t not in winners]
            victim = next(w for w in b["draw"]["winners"] if any(s == w[1] for _, s in losers))
            victim[0] = next(t for t, s in losers if s == victim[1])
            b["draw"]["winners"].sort()
            b["draw"]["winners_root_hex"] = winners_root_hex(b["draw"]["winners"])
        yield Case(f"fail-winner-swapped-{algorithm}", f"{algorithm}: a winner replaced by a loser of the same "
                   "stratum, the winners' root recomputed", "R12.2.8", sign(edited(a, swap)), BASE_ROWS)
    yield Case("fail-cutoff", "a stratum's cutoff ticket altered", "R12.2.8",
               sign(edited(r, lambda b: b["draw"]["strata"][0].__setitem__(
                   "cutoff_ticket", b["draw"]["strata"][0]["cutoff_ticket"] + 1))), BASE_ROWS)
    none = draw(spillover="none")
    yield Case("fail-unused-quota-none", "spill-over none with unused_quota written as 0", "R12.2.8",
               sign(edited(none, lambda b: b["draw"]["spillover"].__setitem__("unused_quota", 0))), BASE_ROWS)
    yield Case("fail-tier-order", "the tiers' order changed after the draw (first is no longer first)", "R12.2.8",
               sign(edited(r, lambda b: b["campaign"]["tiers"].reverse())), BASE_ROWS)
    yield Case("fail-winner-round", "a round-1 winner listed as round 2", "R12.2.8",
               sign(edited(r, lambda b: b["draw"]["winners"][0].__setitem__(4, 2))), BASE_ROWS)
    yield Case("fail-winner-count", "winner_count one too many", "R12.2.8",
               sign(edited(r, lambda b: b["draw"].__setitem__("winner_count", 7))), BASE_ROWS)


def list_rules() -> Iterator[Case]:
    r = draw()
    good = csv_text(BASE_ROWS)
    yield Case("fail-list-no-final-newline", "the CSV list's last line has no LF", "R12.4.1", r.bundle_bytes,
               list_text=good[:-1])
    yield Case("fail-list-ndjson-no-final-newline", "the NDJSON list's last line has no LF", "R12.4.1",
               r.bundle_bytes, list_text=ndjson_text(BASE_ROWS)[:-1], ndjson=True)
    yield Case("fail-list-crlf-header", "a CSV header ending in CRLF", "R12.4.1", r.bundle_bytes,
               list_text=good.replace(b"stratum\n", b"stratum\r\n", 1))
    yield Case("fail-list-not-utf8", "a pseudonym byte that is not UTF-8", "R12.4.1", r.bundle_bytes,
               list_text=good.replace(BASE_ROWS[3][1].encode(), b"\xff" + BASE_ROWS[3][1].encode()[1:]))
    yield Case("fail-list-leading-zero", "ticket 1 written as 01", "R12.4.2", r.bundle_bytes,
               list_text=good.replace(b"\n1,", b"\n01,", 1))
    yield Case("fail-list-unicode-digit", "a ticket with an Arabic-Indic digit", "R12.4.2", r.bundle_bytes,
               list_text=good.replace(b"\n2,", "\n\u0662,".encode(), 1))
    yield Case("fail-list-four-fields", "a CSV line with a fourth field", "R12.4.2", r.bundle_bytes,
               list_text=good.replace(b"\n3,", b"\n3,x,", 1))
    yield Case("fail-list-empty-line", "an empty line in the CSV list", "R12.4.2", r.bundle_bytes,
               list_text=good + b"\n")
    lines = ndjson_text(BASE_ROWS).split(b"\n")

    def ndjson_with(index: int, line: bytes) -> bytes:
        changed = list(lines)
        changed[index] = line
        return b"\n".join(changed)
    t, name, stratum = BASE_ROWS[2]
    other = "north" if stratum != "north" else "west"
    yield Case("fail-ndjson-extra-key", "an NDJSON line with a fourth key", "R12.4.3", r.bundle_bytes,
               list_text=ndjson_with(2, b'{"id":"x","pseudonym":"%s","stratum":"%s","ticket":%d}'
                                     % (name.encode(), stratum.encode(), t)), ndjson=True)
    yield Case("fail-ndjson-repeated-key", "an NDJSON line whose stratum key appears twice (first value right, "
               "last value another stratum)", "R12.4.3", r.bundle_bytes,
               list_text=ndjson_with(2, b'{"pseudonym":"%s","stratum":"%s","stratum":"%s","ticket":%d}'
                                     % (name.encode(), stratum.encode(), other.encode(), t)), ndjson=True)
    yield Case("fail-ndjson-key-order", "an NDJSON line with its keys out of order", "R12.4.3", r.bundle_bytes,
               list_text=ndjson_with(2, b'{"ticket":%d,"pseudonym":"%s","stratum":"%s"}'
                                     % (t, name.encode(), stratum.encode())), ndjson=True)
    yield Case("fail-ndjson-space", "an NDJSON line with a space after a colon", "R12.4.3", r.bundle_bytes,
               list_text=ndjson_with(2, b'{"pseudonym": "%s","stratum":"%s","ticket":%d}'
                                     % (name.encode(), stratum.encode(), t)), ndjson=True)
    yield Case("fail-ndjson-ticket-string", "an NDJSON ticket written as a string", "R12.4.3", r.bundle_bytes,
               list_text=ndjson_with(2, b'{"pseudonym":"%s","stratum":"%s","ticket":"%d"}'
                                     % (name.encode(), stratum.encode(), t)), ndjson=True)
    rows = list(BASE_ROWS)
    rows[3], rows[4] = rows[4], rows[3]
    yield Case("fail-list-order", "two lines swapped", "R12.4.4", r.bundle_bytes, rows)
    yield Case("fail-list-repeat", "a line repeated", "R12.4.4", r.bundle_bytes, [*BASE_ROWS[:5], *BASE_ROWS[4:]])
    yield Case("fail-list-unknown-stratum", "a registrant in a stratum the campaign does not have", "R12.4.5",
               r.bundle_bytes, [*BASE_ROWS[:5], (BASE_ROWS[5][0], BASE_ROWS[5][1], "east"), *BASE_ROWS[6:]])
    yield Case("fail-list-long-pseudonym", "a 256-byte pseudonym", "R3.3", r.bundle_bytes,
               [*BASE_ROWS[:5], (BASE_ROWS[5][0], "a" * 256, BASE_ROWS[5][2]), *BASE_ROWS[6:]])
    yield Case("fail-list-empty-pseudonym", "an empty pseudonym", "R3.3", r.bundle_bytes,
               [*BASE_ROWS[:5], (BASE_ROWS[5][0], "", BASE_ROWS[5][2]), *BASE_ROWS[6:]])
    yield Case("fail-list-dropped", "a registrant dropped", "R12.4.6", r.bundle_bytes, BASE_ROWS[1:])
    yield Case("fail-list-added", "a registrant added at the end", "R12.4.6", r.bundle_bytes,
               [*BASE_ROWS, (1000, rehearsal.pseudonym(1000), "north")])
    yield Case("fail-list-pseudonym-changed", "a pseudonym changed", "R12.4.7", r.bundle_bytes,
               [*BASE_ROWS[:5], (BASE_ROWS[5][0], BASE_ROWS[5][1][::-1], BASE_ROWS[5][2]), *BASE_ROWS[6:]])
    moved = "north" if BASE_ROWS[7][2] != "north" else "west"
    yield Case("fail-list-stratum-changed", "a registrant moved to another stratum", "R12.4.7", r.bundle_bytes,
               [*BASE_ROWS[:7], (BASE_ROWS[7][0], BASE_ROWS[7][1], moved), *BASE_ROWS[8:]])


def ticket_rules() -> Iterator[Case]:
    r = draw()
    winner, loser = winner_and_loser(r.bundle, BASE_ROWS)
    proof = proof_of(r, winner)
    yield Case("fail-proof-missing-path", "a proof without audit_path", "R12.5.1", r.bundle_bytes,
               proof={k: v for k, v in proof.items() if k != "audit_path"})
    yield Case("fail-receipt-not-object", "a receipt that is an array", "R12.5.1", r.bundle_bytes, proof=proof,
               receipt=[receipt_of(proof)])
    yield Case("fail-proof-repeated-key", "a proof with leaf_index twice", "R12.5.1", r.bundle_bytes,
               files={"proof.json": json.dumps(proof).replace('"leaf_index": ', '"leaf_index": 0, "leaf_index": ', 1)
                      .encode()})
    yield Case("fail-proof-path-hash-short", "an audit path hash of 31 bytes", "R2.3.1", r.bundle_bytes,
               proof={**proof, "audit_path": [proof["audit_path"][0][:-2], *proof["audit_path"][1:]]})
    yield Case("fail-proof-tree", "a proof for a tree one larger than the committed one", "R12.5.2",
               r.bundle_bytes, proof={**proof, "tree_size": proof["tree_size"] + 1})
    yield Case("fail-proof-leaf", "a proof leaf with a trailing byte", "R3.4", r.bundle_bytes,
               proof={**proof, "leaf_hex": proof["leaf_hex"] + "00"})
    yield Case("fail-proof-ticket", "a proof naming another ticket than its leaf", "R12.5.3", r.bundle_bytes,
               proof={**proof, "ticket": proof["ticket"] + 1})
    yield Case("fail-receipt-signature", "a receipt signed by another key", "R5.6.1", r.bundle_bytes, proof=proof,
               receipt=receipt_of(proof, OTHER))
    yield Case("fail-receipt-leaf", "a valid receipt for another ticket's leaf", "R5.6.2", r.bundle_bytes,
               proof=proof, receipt=receipt_of(proof_of(r, loser)))
    yield Case("fail-inclusion", "an audit path hash replaced", "R4.4.1", r.bundle_bytes,
               proof={**proof, "audit_path": ["00" * 32, *proof["audit_path"][1:]]})
    yield Case("fail-inclusion-index", "a proof's leaf_index pointing at another leaf", "R4.4.1", r.bundle_bytes,
               proof={**proof, "leaf_index": proof["leaf_index"] + 1})
    yield Case("fail-winners-root", "a winner's amount changed, the winners' root not", "R11.1",
               sign(edited(r, lambda b: b["draw"]["winners"][0].__setitem__(3, 1))), proof=proof)
    # A round-1 winner of stratum north replaced by a north loser, with a fresh winners' root.
    north_winner = next(w[0] for w in r.bundle["draw"]["winners"] if w[1] == "north" and w[4] == 1)
    won = {w[0] for w in r.bundle["draw"]["winners"]}
    north_loser = next(t for t, _, s in BASE_ROWS if s == "north" and t not in won)
    swapped_bundle = copy.deepcopy(r.bundle)
    for w in swapped_bundle["draw"]["winners"]:
        if w[0] == north_winner:
            w[0] = north_loser
    swapped_bundle["draw"]["winners"].sort()
    swapped_bundle["draw"]["winners_root_hex"] = winners_root_hex(swapped_bundle["draw"]["winners"])
    yield Case("fail-ticket-omitted", "ticket mode, the real winner: a loser listed in its place", "R9.4.3",
               sign(swapped_bundle), proof=proof_of(r, north_winner))
    yield Case("fail-ticket-intruder", "ticket mode, the intruder: listed as a winner above its stratum's cutoff",
               "R9.4.2", sign(swapped_bundle), proof=proof_of(r, north_loser))

    def other_stratum(b: dict[str, Any]) -> None:
        for w in b["draw"]["winners"]:
            if w[0] == winner:
                w[1] = "south" if w[1] != "south" else "north"
        b["draw"]["winners_root_hex"] = winners_root_hex(b["draw"]["winners"])
    yield Case("fail-ticket-wrong-stratum", "ticket mode: the winner listed in another stratum", "R9.4.1",
               sign(edited(r, other_stratum)), proof=proof)


def cases() -> Iterator[Case]:
    for group in (passing, envelope_and_shape, campaign_rules, commitment_rules, ceremony_rules, beacon_rules,
                  seed_and_draw_rules, list_rules, ticket_rules):
        yield from group()


# --- writing them out --------------------------------------------------------------------------------------

def write(case: Case) -> dict[str, Any]:
    folder = OUT / "cases" / case.name
    folder.mkdir(parents=True, exist_ok=True)
    files = dict(case.files)
    files.setdefault("bundle.json", case.bundle)
    args: list[str] = [f"cases/{case.name}/bundle.json"]
    if case.rows is not None or case.list_text is not None:
        name = "registrants.ndjson" if case.ndjson else "registrants.csv"
        if case.list_text is not None:
            files[name] = case.list_text
        else:
            assert case.rows is not None
            files[name] = ndjson_text(case.rows) if case.ndjson else csv_text(case.rows)
        args += ["--registrants", f"cases/{case.name}/{name}"]
    else:
        if case.proof is not None:
            files["proof.json"] = json.dumps(case.proof, indent=2).encode() + b"\n"
        args += ["--proof", f"cases/{case.name}/proof.json"]
        if case.receipt is not None:
            files["receipt.json"] = json.dumps(case.receipt, indent=2).encode() + b"\n"
            args += ["--receipt", f"cases/{case.name}/receipt.json"]
    if case.pinned:
        args += ["--service-key", case.service_key.hex()]
    for name, data in files.items():
        (folder / name).write_bytes(data)
    expected = {"name": case.name, "description": case.description, "mode": "full" if "--registrants" in args
                else "ticket", "args": args, "verdict": "FAIL" if case.rule else "PASS", "rule": case.rule}
    (folder / "expected.json").write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")
    return expected


def check(expected: dict[str, Any]) -> None:
    lines: list[str] = []
    code = verify.run([str(OUT / a) if a.startswith("cases/") else a for a in expected["args"]], say=lines.append)
    got = "PASS" if code == 0 else lines[-1].split(":", 1)[0].removeprefix("FAIL ")
    want = "PASS" if expected["rule"] is None else expected["rule"]
    if got != want:
        raise SystemExit(f"{expected['name']}: expected {want}, stimulus-verify said {lines[-1]}")


def main() -> None:
    manifest = []
    for case in cases():
        expected = write(case)
        if "--check" in sys.argv:
            check(expected)
        manifest.append(expected)
    names = [m["name"] for m in manifest]
    assert len(set(names)) == len(names), "case names repeat"
    (OUT / "cases.json").write_text(json.dumps(
        {"service_key_hex": SERVICE_PUBLIC.hex(), "cases": manifest}, indent=2, ensure_ascii=False) + "\n")
    print(f"{len(manifest)} cases written to {OUT}")


if __name__ == "__main__":
    main()
