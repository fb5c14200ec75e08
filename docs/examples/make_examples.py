"""Regenerate the worked examples of docs/draw-spec.md from the project's own code.

    .venv/bin/python docs/examples/make_examples.py [--print] [--out DIR]

Writes the example bundles, registrant lists, an inclusion proof and a receipt next to this file
(or into DIR),
and with --print writes every intermediate value the spec quotes (leaf bytes, tree nodes, proof
steps, statements, seed preimage, scores, RFC 3797 hashes). Every key here is derived from a
public label: the examples are reproducible and their keys are worthless.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kernel.signing import SigningKey
from lottery import algorithms, drand, merkle, registrant_list, rfc3797
from lottery.bundle import ceremony_inputs
from lottery.canonical import dumps
from lottery.leaf import encode_leaf
from lottery.merkle import MerkleTree, leaf_hash, node_hash
from lottery.registration import make_receipt
from lottery.rehearsal import (
    DRAND_VECTOR_SIGNATURE,
    Rehearsal,
    Scenario,
    pseudonym,
    rehearse,
)
from lottery.seed import derive_seed, rank_key, score, seed_preimage
from lottery.selection import TierSpec, select, winner_leaf
from lottery.statements import (
    ceremony_commit_statement,
    ceremony_reveal_statement,
    commitment_statement,
    key_id_of,
    receipt_statement,
)
from sandbox.drand_chain import sign_round

HERE = Path(__file__).resolve().parent
CAMPAIGN = "changsha-2021"
# Twelve registrants: stratum 430103 has one (short of its quota of 2), 430102 has eleven.
ROWS = [(t, pseudonym(t), "430103" if t == 5 else "430102") for t in range(1, 13)]
SCENARIO = Scenario(
    campaign_id=CAMPAIGN,
    tiers=[{"tier": "first", "amount_fen": 20000, "count": 1}, {"tier": "second", "amount_fen": 10000, "count": 3}],
    quotas={"430102": 2, "430103": 2},
    participants=3,
    missing_reveals=1,
    beacon="drand-quicknet",
    closes_at=datetime(2023, 9, 13, 16, 0, tzinfo=UTC),
)
PROOF_TICKET = 4
SEED_FIELDS = [("lp(domain) length", 4), ("lp(domain) bytes", 16), ("lp(campaign) length", 4),
               ("lp(campaign) bytes", 13), ("root", 32), ("u64 size", 8), ("u32 participants", 4),
               ("p1 lp(id)", 6), ("p1 revealed", 1), ("p1 lp(secret)", 4),
               ("p2 lp(id)", 6), ("p2 revealed", 1), ("p2 lp(secret) length", 4), ("p2 secret", 32),
               ("p3 lp(id)", 6), ("p3 revealed", 1), ("p3 lp(secret) length", 4), ("p3 secret", 32),
               ("lp(kind) length", 4), ("lp(kind) bytes", 14), ("u64 round", 8),
               ("lp(randomness) length", 4), ("randomness", 32)]
SHOW = "--print" in sys.argv
OUT = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else HERE


def show(label: str, value: object) -> None:
    if SHOW:
        print(f"{label}: {value}")


def section(title: str) -> None:
    if SHOW:
        print(f"\n== {title}")


def write(name: str, data: bytes) -> None:
    (OUT / name).write_bytes(data)


def leaf_example() -> None:
    section("registration leaf")
    name = pseudonym(42)
    leaf = encode_leaf(CAMPAIGN, 42, name, "430102")
    show("pseudonym", name)
    show("leaf length", len(leaf))
    show("leaf", leaf.hex())
    show("leaf hash", leaf_hash(leaf).hex())


def trace_inclusion(leaf_hash_value: bytes, index: int, size: int, proof: list[bytes]) -> bytes | None:
    """merkle.root_from_inclusion_proof with every step printed; checked against it below."""
    fn, sn, r = index, size - 1, leaf_hash_value
    show("  start", f"fn={fn} sn={sn} r={r.hex()}")
    for p in proof:
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            how = "r = H(0x01 || p || r)"
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
                how += f"; shifted to fn={fn} sn={sn}"
        else:
            r = node_hash(r, p)
            how = "r = H(0x01 || r || p)"
        fn >>= 1
        sn >>= 1
        show("  step", f"p={p.hex()} {how}; then fn={fn} sn={sn}; r={r.hex()}")
    result = r if sn == 0 else None
    assert result == merkle.root_from_inclusion_proof(leaf_hash_value, index, size, proof)
    return result


def merkle_example() -> None:
    section("merkle, 5 leaves (tickets 1-5)")
    leaves = [encode_leaf(CAMPAIGN, t, n, s) for t, n, s in ROWS[:5]]
    tree = MerkleTree.from_leaves(leaves)
    assert tree.root == merkle.root_of(leaves)
    for i, leaf in enumerate(leaves):
        show(f"leaf {i}", leaf.hex())
        show(f"h{i}", leaf_hash(leaf).hex())
    for depth, level in enumerate(tree.levels):
        show(f"level {depth}", [level[i:i + 32].hex() for i in range(0, len(level), 32)])
    show("root", tree.root.hex())
    show("empty tree root", MerkleTree(b"").root.hex())
    for index in (3, 4):
        proof = tree.inclusion_proof(index)
        show(f"proof index {index}", [p.hex() for p in proof])
        assert trace_inclusion(tree.leaf_hash_at(index), index, 5, proof) == tree.root
    proof3 = tree.inclusion_proof(3)
    for index, size in ((3, 4), (3, 6), (3, 7), (2, 5), (5, 5)):
        got = merkle.root_from_inclusion_proof(tree.leaf_hash_at(3), index, size, proof3)
        show(f"proof of index 3 replayed as index {index} size {size}",
             "None" if got is None else ("root" if got == tree.root else got.hex()))
    # The same leaf in a 4-leaf tree has a different root: the 5-leaf proof must not pass there.
    four = MerkleTree.from_leaves(leaves[:4])
    show("root of the first 4 leaves", four.root.hex())
    show("4-leaf proof index 3", [p.hex() for p in four.inclusion_proof(3)])


def statements_example(r: Rehearsal) -> None:
    section("keys and statements")
    bundle = r.bundle
    service_public = r.service_public
    show("service private seed (example only)", hashlib.sha256(f"service/{CAMPAIGN}".encode()).digest().hex())
    show("service public key", service_public.hex())
    show("service key id", key_id_of(service_public))
    show("sha256(service public key)", hashlib.sha256(service_public).hexdigest())
    for p in bundle["campaign"]["participants"]:
        show(f"participant {p['id']} public key", p["public_key_hex"])
    c = bundle["commitment"]
    statement = commitment_statement(CAMPAIGN, c["tree_size"], c["root_hex"], c["committed_at"], c["key_id"])
    show("commitment statement", statement.decode())
    show("commitment statement hex", statement.hex())
    show("commitment signature", c["signature_hex"])
    for entry in bundle["ceremony"]:
        pid = entry["participant_id"]
        show(f"ceremony {pid}", json.dumps(entry))
        show(f"commit statement {pid}", ceremony_commit_statement(CAMPAIGN, pid, entry["commitment_hex"]).decode())
        if entry["secret_hex"]:
            show(f"reveal statement {pid}", ceremony_reveal_statement(
                CAMPAIGN, pid, entry["secret_hex"], c["root_hex"], c["tree_size"]).decode())


def drand_example() -> None:
    section("drand quicknet")
    signature = bytes.fromhex(DRAND_VECTOR_SIGNATURE)
    show("round", 657413)
    show("u64be(round)", (657413).to_bytes(8, "big").hex())
    show("message", drand.round_message(657413).hex())
    show("signature", signature.hex())
    show("randomness", drand.randomness(signature).hex())
    show("round time", drand.round_time(657413).isoformat())
    show("BLS verifies (py_ecc)", drand.verify_round(657413, signature))
    show("BLS verifies as round 657414", drand.verify_round(657414, signature))


def seed_example(bundle: dict[str, Any]) -> bytes:
    section("seed")
    c, b = bundle["commitment"], bundle["beacon"]
    reveals, fallbacks = ceremony_inputs(bundle["ceremony"])
    show("fallbacks", fallbacks)
    pre = seed_preimage(CAMPAIGN, bytes.fromhex(c["root_hex"]), c["tree_size"], reveals, b["kind"], b["round"],
                        bytes.fromhex(b["randomness_hex"]))
    seed = derive_seed(CAMPAIGN, bytes.fromhex(c["root_hex"]), c["tree_size"], reveals, b["kind"], b["round"],
                       bytes.fromhex(b["randomness_hex"]))
    assert seed.hex() == bundle["draw"]["seed_hex"] == hashlib.sha256(pre).hexdigest()
    show("preimage length", len(pre))
    show("preimage", pre.hex())
    offset = 0
    for name, size in SEED_FIELDS:
        show(f"  {offset:3} {name}", pre[offset:offset + size].hex())
        offset += size
    assert offset == len(pre)
    show("seed", seed.hex())
    return seed


def selection_example(seed: bytes) -> dict[str, list[int]]:
    section("sha256-score-v1")
    by_stratum: dict[str, list[int]] = {}
    for t, _, s in ROWS:
        by_stratum.setdefault(s, []).append(t)
    show("score preimage ticket 1", (b"stimulus/score/v1" + seed + struct.pack(">Q", 1)).hex())
    for t, _, s in ROWS:
        show(f"ticket {t:2} {s} score", score(seed, t).hex())
    for s, ts in sorted(by_stratum.items()):
        ordered = sorted(ts, key=lambda t: rank_key(score(seed, t), t))
        show(f"rank order {s}", ordered)
    tiers = [TierSpec(t["tier"], t["amount_fen"], t["count"]) for t in SCENARIO.tiers]
    outcome = select(seed, by_stratum, SCENARIO.quotas, tiers, SCENARIO.spillover)
    for st in outcome.strata:
        show(f"stratum {st.stratum}", f"registrants={st.registrants} quota={st.quota} round1={st.winners_round1} "
             f"cutoff={st.cutoff_key.hex() if st.cutoff_key else None}")
    show("unused quota", outcome.unused_quota)
    show("spill cutoff", outcome.spill_cutoff_key.hex() if outcome.spill_cutoff_key else None)
    for w in outcome.winners:
        show("winner", f"ticket={w.ticket} stratum={w.stratum} tier={w.tier} amount={w.amount_fen} round={w.round} "
             f"key={w.rank_key.hex()}")
    section("winners' root")
    for w in sorted(outcome.winners, key=lambda w: w.ticket):
        leaf = winner_leaf(w.ticket, w.stratum, w.tier, w.amount_fen)
        show(f"winner leaf {w.ticket}", leaf.hex())
        show(f"winner leaf hash {w.ticket}", leaf_hash(leaf).hex())
    show("winners root", outcome.winners_root.hex())
    none = select(seed, by_stratum, SCENARIO.quotas, tiers, "none")
    show("spillover none winners", [(w.ticket, w.tier, w.round) for w in none.winners])
    show("spillover none root", none.winners_root.hex())
    return by_stratum


def rfc3797_example(seed: bytes, by_stratum: dict[str, list[int]]) -> None:
    section("rfc3797")
    tiers = [TierSpec(t["tier"], t["amount_fen"], t["count"]) for t in SCENARIO.tiers]
    chosen: set[int] = set()
    for s in sorted(SCENARIO.quotas):
        key = algorithms.rfc3797_key(seed, f"stratum:{s}")
        pool = sorted(by_stratum.get(s, []))
        take = min(SCENARIO.quotas[s], len(pool))
        show(f"key {s}", key)
        show(f"pool {s}", pool)
        for j in range(take):
            bracket = j.to_bytes(2, "big")
            show(f"  md5 input j={j}", (bracket + key.encode() + bracket).hex())
            value = rfc3797.selection_hash(key, j)
            show(f"  j={j} md5", f"{value:032x} mod {len(pool) - j} = {value % (len(pool) - j)}")
        picked = rfc3797.select(key, pool, take)
        show(f"picked {s}", picked)
        chosen.update(picked)
    key = algorithms.rfc3797_key(seed, "spillover")
    rest = sorted(t for ts in by_stratum.values() for t in ts if t not in chosen)
    show("key spillover", key)
    show("pool spillover", rest)
    value = rfc3797.selection_hash(key, 0)
    show("  j=0 md5", f"{value:032x} mod {len(rest)} = {value % len(rest)}")
    show("picked spillover", rfc3797.select(key, rest, 1))
    outcome = algorithms.select_rfc3797(seed, by_stratum, SCENARIO.quotas, tiers, SCENARIO.spillover)
    for w in outcome.winners:
        show("winner", f"ticket={w.ticket} stratum={w.stratum} tier={w.tier} round={w.round}")
    show("winners root", outcome.winners_root.hex())
    show("rfc key example", rfc3797.canonical_key([[9319], [2, 5, 12, 8, 10], "abc"]))


def list_files() -> None:
    csv = registrant_list.CSV_HEADER + "\n" + "".join(registrant_list.csv_line(*row) for row in ROWS)
    ndjson = "".join(registrant_list.ndjson_line(*row) for row in ROWS)
    write("registrants.csv", csv.encode())
    write("registrants.ndjson", ndjson.encode())


def ticket_files(r: Rehearsal) -> None:
    section("ticket mode files")
    bundle = r.bundle
    tree = r.tree
    assert tree is not None
    index = next(i for i, row in enumerate(ROWS) if row[0] == PROOF_TICKET)
    t, name, s = ROWS[index]
    leaf = encode_leaf(CAMPAIGN, t, name, s)
    proof = {"campaign_id": CAMPAIGN, "ticket": t, "leaf_index": index, "tree_size": tree.size,
             "leaf_hex": leaf.hex(), "audit_path": [p.hex() for p in tree.inclusion_proof(index)],
             "root_hex": tree.root.hex()}
    write(f"proof-ticket-{t}.json", json.dumps(proof, indent=2).encode() + b"\n")
    service = SigningKey.from_seed(hashlib.sha256(f"service/{CAMPAIGN}".encode()).digest())
    receipt = make_receipt(service, CAMPAIGN, t, name, s, datetime(2023, 9, 8, 2, 15, 30, 123456, tzinfo=UTC))
    fields = {f: getattr(receipt, f) for f in receipt.__struct_fields__}
    write(f"receipt-ticket-{t}.json", json.dumps(fields, indent=2).encode() + b"\n")
    show("proof", json.dumps(proof))
    assert trace_inclusion(tree.leaf_hash_at(index), index, tree.size, tree.inclusion_proof(index)) == tree.root
    show("receipt", json.dumps(fields))
    message = receipt_statement(CAMPAIGN, t, leaf.hex(), receipt.registered_at, receipt.key_id)
    show("receipt statement", message.decode())
    show("ticket score", score(bytes.fromhex(bundle["draw"]["seed_hex"]), t).hex())


def main() -> None:
    leaf_example()
    merkle_example()
    drand_example()
    r = rehearse(SCENARIO, rows=ROWS)
    write("bundle.json", r.bundle_bytes)
    show("bundle signed bytes length", len(dumps(r.bundle)))
    show("bundle signature", json.loads(r.bundle_bytes)["signature_hex"])
    statements_example(r)
    seed = seed_example(r.bundle)
    by_stratum = selection_example(seed)
    rfc3797_example(seed, by_stratum)
    list_files()
    ticket_files(r)
    sandbox = rehearse(replace(SCENARIO, beacon="sandbox", sandbox_signer=sign_round), rows=ROWS)
    write("bundle-sandbox.json", sandbox.bundle_bytes)
    section("sandbox")
    show("sandbox beacon", json.dumps(sandbox.bundle["beacon"]))
    show("sandbox seed", sandbox.bundle["draw"]["seed_hex"])
    rfc = rehearse(replace(SCENARIO, algorithm="rfc3797"), rows=ROWS)
    write("bundle-rfc3797.json", rfc.bundle_bytes)
    show("rfc3797 bundle seed", rfc.bundle["draw"]["seed_hex"])
    show("rfc3797 bundle winners", rfc.bundle["draw"]["winners"])


if __name__ == "__main__":
    main()
