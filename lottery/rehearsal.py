"""A whole draw in memory from synthetic registrants: the evidence chain the service produces,
built without a database, for property tests, the tamper suite, the benchmark and the spec's
worked examples. Every step is the production code path (leaf encoding, tree, statements, seed,
selection, bundle); only the storage is missing.
"""

from __future__ import annotations

import array
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lottery import bundle as bundle_module
from lottery import drand, parallel, registrant_list
from lottery.leaf import encode_leaf
from lottery.merkle import MerkleTree
from lottery.statements import (
    ceremony_commit_statement,
    ceremony_reveal_statement,
    commitment_statement,
    key_id_of,
    parse_timestamp,
    timestamp,
)

# A real quicknet round, published by the League of Entropy (verified in tests against the chain key).
DRAND_VECTOR_ROUND = 657413
DRAND_VECTOR_SIGNATURE = ("b713718a38ae728dfd477991af2822e08d2f305e47718cef9f7848ce4050e7be"
                          "41076862b98fad56e91a6b85b89cd97b")


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def deterministic_key(label: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def pseudonym(ticket: int) -> str:
    return hashlib.blake2b(ticket.to_bytes(8, "big"), digest_size=16).hexdigest()


def synthetic_registrants(count: int, strata: Sequence[str], first_ticket: int = 1) -> Iterator[tuple[int, str, str]]:
    """Tickets in order, strata dealt round-robin with a skew so strata differ in size."""
    n = len(strata)
    for i in range(count):
        ticket = first_ticket + i
        yield ticket, pseudonym(ticket), strata[(i * 7 + i // 3) % n]


@dataclass
class Scenario:
    campaign_id: str = "rehearsal"
    tiers: list[dict[str, Any]] = field(default_factory=lambda: [{"tier": "standard", "amount_fen": 20000, "count": 30}])
    quotas: dict[str, int] = field(default_factory=lambda: {"d1": 10, "d2": 10, "d3": 10})
    participants: int = 2
    missing_reveals: int = 0
    beacon: str = "sandbox"  # or "drand-quicknet": uses the real published vector round
    # Signs a sandbox-chain round (`sandbox.drand_chain.sign_round`): this package may not import
    # the sandbox, so whoever rehearses a sandbox draw hands the signer in.
    sandbox_signer: Callable[[int], bytes] | None = None
    algorithm: str = "sha256-score-v1"
    spillover: str = "redistribute-lowest-scores"
    closes_at: datetime = datetime(2023, 9, 1, tzinfo=UTC)


@dataclass
class Rehearsal:
    bundle_bytes: bytes
    bundle: dict[str, Any]
    service_key: Ed25519PrivateKey
    participant_keys: dict[str, Ed25519PrivateKey]
    tree: MerkleTree | None
    rows: list[tuple[int, str, str]]

    @property
    def service_public(self) -> bytes:
        return _raw_public(self.service_key)


def campaign_section(s: Scenario, participant_keys: dict[str, Ed25519PrivateKey]) -> dict[str, Any]:
    reveal_deadline = timestamp(s.closes_at + timedelta(days=1)) if s.missing_reveals else None
    return {
        "id": s.campaign_id, "name": f"Rehearsal {s.campaign_id}",
        "budget_fen": sum(t["amount_fen"] * t["count"] for t in s.tiers),
        "tiers": s.tiers, "strata": [{"stratum": k, "quota": v} for k, v in sorted(s.quotas.items())],
        "registration_opens_at": timestamp(s.closes_at - timedelta(days=7)),
        "registration_closes_at": timestamp(s.closes_at),
        "registration_closed_at": timestamp(s.closes_at),
        "beacon": {"kind": s.beacon, "round": DRAND_VECTOR_ROUND if s.beacon == "drand-quicknet" else None,
                   "fallback": "next-round"},
        "participants": [{"id": pid, "name": pid.title(), "public_key_hex": _raw_public(k).hex()}
                         for pid, k in sorted(participant_keys.items())],
        "draw_rules": {"algorithm": s.algorithm, "tier_scope": "global", "spillover": s.spillover,
                       "missing_reveal": "proceed-without", "reveal_deadline": reveal_deadline},
    }


def sandbox_beacon(campaign: dict[str, Any], commitment: dict[str, Any], ceremony: Sequence[dict[str, Any]],
                   signer: Callable[[int], bytes]) -> dict[str, Any]:
    """The sandbox chain's beacon for an open-round campaign: the first round after the commitment,
    the reveals and (when someone never revealed) the reveal deadline, signed by `signer`."""
    moments = [parse_timestamp(commitment["committed_at"]),
               *(parse_timestamp(e["revealed_at"]) for e in ceremony if e["revealed_at"] is not None)]
    deadline = campaign["draw_rules"]["reveal_deadline"]
    if deadline is not None and any(e["revealed_at"] is None for e in ceremony):
        moments.append(parse_timestamp(deadline))
    round_number = drand.SANDBOX.first_round_after(max(moments))
    signature = signer(round_number)
    return {"kind": "sandbox", "chain_hash": drand.SANDBOX.chain_hash, "round": round_number,
            "signature_hex": signature.hex(), "randomness_hex": drand.randomness(signature).hex(),
            "round_time": timestamp(drand.SANDBOX.round_time(round_number)), "path": "first-round-after-reveals",
            "public_key_hex": drand.SANDBOX.public_key_hex, "warning": bundle_module.SANDBOX_WARNING}


def rehearse(s: Scenario, rows: Sequence[tuple[int, str, str]] | None = None, count: int = 200,
             list_path: Path | None = None, keep_rows: bool = True,
             progress: Callable[[str], None] | None = None) -> Rehearsal:
    """Commit, run the ceremony and beacon, draw and sign, exactly as the service would."""
    note = progress or (lambda _: None)
    source = rows if rows is not None else synthetic_registrants(count, sorted(s.quotas))
    hashes = bytearray()
    by_stratum: dict[str, array.array[int]] = {k: array.array("Q") for k in s.quotas}
    kept: list[tuple[int, str, str]] = []
    sha = hashlib.sha256
    out = list_path.open("w", encoding="utf-8") if list_path else None
    if out:
        out.write(registrant_list.CSV_HEADER + "\n")
    try:
        for ticket, name, stratum in source:
            hashes.extend(sha(b"\x00" + encode_leaf(s.campaign_id, ticket, name, stratum)).digest())
            by_stratum[stratum].append(ticket)
            if keep_rows:
                kept.append((ticket, name, stratum))
            if out:
                out.write(f"{ticket},{name},{stratum}\n")
    finally:
        if out:
            out.close()
    note("leaves hashed")
    tree = MerkleTree(hashes)
    del hashes
    note("tree built")
    return _finish(s, tree, by_stratum, kept, None, note)


def rehearse_list(s: Scenario, list_path: Path, pool: Executor,
                  progress: Callable[[str], None] | None = None) -> Rehearsal:
    """The same, from an already published list file, hashing in `pool`'s processes."""
    note = progress or (lambda _: None)
    digest = parallel.digest_list(list_path, s.campaign_id, sorted(s.quotas), pool)
    note("leaves hashed")
    tree = parallel.build_tree(digest.hashes, pool)
    del digest.hashes
    note("tree built")
    return _finish(s, tree, digest.tickets_by_stratum, [], pool, note)


def _finish(s: Scenario, tree: MerkleTree, by_stratum: Mapping[str, Sequence[int]],
            kept: list[tuple[int, str, str]], pool: Executor | None, note: Callable[[str], None]) -> Rehearsal:
    service_key = deterministic_key(f"service/{s.campaign_id}")
    participant_keys = {f"p{i + 1}": deterministic_key(f"participant/{s.campaign_id}/{i}")
                        for i in range(s.participants)}
    campaign = campaign_section(s, participant_keys)
    root_hex, size = tree.root.hex(), tree.size
    committed_at = s.closes_at + timedelta(minutes=5)
    sign = service_key.sign
    kid = key_id_of(_raw_public(service_key))
    commitment: dict[str, Any] = {"campaign_id": s.campaign_id, "tree_size": size, "root_hex": root_hex,
                  "committed_at": timestamp(committed_at), "key_id": kid}
    commitment["signature_hex"] = sign(commitment_statement(s.campaign_id, size, root_hex,
                                                            commitment["committed_at"], kid)).hex()
    ceremony = []
    for i, (pid, key) in enumerate(sorted(participant_keys.items())):
        secret = hashlib.sha256(f"secret/{s.campaign_id}/{pid}".encode()).digest()
        commit_hex = hashlib.sha256(secret).hexdigest()
        revealed = i >= s.missing_reveals
        ceremony.append({
            "participant_id": pid, "commitment_hex": commit_hex,
            "commit_signature_hex": key.sign(ceremony_commit_statement(s.campaign_id, pid, commit_hex)).hex(),
            "committed_at": timestamp(s.closes_at - timedelta(days=3)),
            "secret_hex": secret.hex() if revealed else None,
            "reveal_signature_hex": key.sign(ceremony_reveal_statement(
                s.campaign_id, pid, secret.hex(), root_hex, size)).hex() if revealed else None,
            "revealed_at": timestamp(committed_at + timedelta(minutes=10)) if revealed else None,
            "status": "revealed" if revealed else "missing",
        })
    if s.beacon == "drand-quicknet":
        signature = bytes.fromhex(DRAND_VECTOR_SIGNATURE)
        beacon: dict[str, Any] = {
            "kind": "drand-quicknet", "chain_hash": drand.CHAIN_HASH, "round": DRAND_VECTOR_ROUND,
            "signature_hex": signature.hex(), "randomness_hex": drand.randomness(signature).hex(),
            "round_time": timestamp(drand.round_time(DRAND_VECTOR_ROUND)), "path": "declared-round"}
    else:
        if s.sandbox_signer is None:
            raise ValueError("a sandbox rehearsal needs Scenario.sandbox_signer (sandbox.drand_chain.sign_round)")
        beacon = sandbox_beacon(campaign, commitment, ceremony, s.sandbox_signer)
    bundle, _outcome, _seed = bundle_module.compose(
        campaign=campaign, commitment=commitment, ceremony=ceremony, beacon=beacon,
        tickets_by_stratum=by_stratum, drawn_at=timestamp(committed_at + timedelta(days=2, minutes=1)),
        software_version="rehearsal", pool=pool)
    note("drawn")
    data = bundle_module.envelope(bundle, sign, _raw_public(service_key))
    note("bundle signed")
    return Rehearsal(data, bundle, service_key, participant_keys, tree, kept)
