"""`stimulus-verify`: re-derive a draw offline from its proof bundle, trusting nobody.

    stimulus-verify BUNDLE --registrants LIST [--service-key HEX]
        re-derives the Merkle root from the registrant list, checks every signature, the
        ceremony's timing, the beacon (BLS, pure Python), the seed, every stratum's winners and
        cutoffs and the winners' root.
    stimulus-verify BUNDLE --proof PROOF [--receipt RECEIPT] [--service-key HEX]
        checks one citizen: the receipt's signature, the ticket's inclusion in the committed tree,
        and its result against the published winners and cutoffs.

Prints PASS or FAIL with the first discrepancy; exit code 0 only on PASS. Imports only the
standard library, `cryptography` and `py_ecc` (for drand's BLS signature).
"""

from __future__ import annotations

import argparse
import array
import hashlib
import json
import struct
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from datetime import datetime
from pathlib import Path
from typing import Any

from lottery import algorithms, drand, parallel, registrant_list
from lottery.bundle import SANDBOX_WARNING, BundleError, draw_section, open_envelope
from lottery.leaf import LeafError, decode_leaf, encode_leaf
from lottery.merkle import HASH_SIZE, MerkleTree, verify_inclusion
from lottery.seed import RevealInput, derive_seed, rank_key, score
from lottery.selection import TierSpec, winner_leaf
from lottery.statements import (
    ceremony_commit_statement,
    ceremony_reveal_statement,
    commitment_statement,
    ed25519_ok,
    key_id_of,
    parse_timestamp,
    receipt_statement,
    sandbox_beacon_statement,
)


class Failure(Exception):
    """The first discrepancy found; verification stops there."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


def first_difference(expected: Any, actual: Any, path: str = "draw") -> str | None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                return f"{path}.{key} is missing"
            if key not in expected:
                return f"{path}.{key} is not expected"
            found = first_difference(expected[key], actual[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            found = first_difference(e, a, f"{path}[{i}]")
            if found:
                return found
        if len(expected) != len(actual):
            return f"{path} has {len(actual)} entries, expected {len(expected)}"
        return None
    if expected != actual or type(expected) is not type(actual):
        return f"{path}: bundle says {actual!r}, recomputed {expected!r}"
    return None


class Verifier:
    """Checks that need only the bundle; the list and the per-ticket checks build on them."""

    def __init__(self, bundle: dict[str, Any], service_public_key: bytes, say: Any = print) -> None:
        self.bundle = bundle
        self.key = service_public_key
        self.say = say
        self.campaign: dict[str, Any] = bundle["campaign"]
        self.commitment: dict[str, Any] = bundle["commitment"]
        self.root = bytes.fromhex(self.commitment["root_hex"])
        self.size: int = self.commitment["tree_size"]
        self.seed = b""

    def check_commitment(self) -> None:
        c, campaign_id = self.commitment, self.campaign["id"]
        _require(c["campaign_id"] == campaign_id, "commitment names another campaign")
        _require(c["key_id"] == key_id_of(self.key), "commitment key id is not the service key")
        statement = commitment_statement(campaign_id, self.size, c["root_hex"], c["committed_at"], c["key_id"])
        _require(ed25519_ok(self.key, bytes.fromhex(c["signature_hex"]), statement),
                 "commitment signature does not verify")
        _require(parse_timestamp(c["committed_at"]) >= self.closed_at(), "commitment made before registration closed")
        self.say(f"ok   commitment: {self.size} registrants, root {c['root_hex']}, signed {c['committed_at']}")

    def closed_at(self) -> datetime:
        """Registration ends at the declared time, or earlier when an operator closed it."""
        declared = parse_timestamp(self.campaign["registration_closes_at"])
        actual = parse_timestamp(self.campaign["registration_closed_at"])
        _require(actual <= declared, "registration_closed_at lies after the declared close")
        return actual

    def beacon_time(self) -> datetime:
        beacon = self.bundle["beacon"]
        if beacon["kind"] == "drand-quicknet":
            return drand.round_time(beacon["round"])
        return parse_timestamp(beacon["generated_at"])

    def check_ceremony(self) -> list[RevealInput]:
        campaign_id, rules = self.campaign["id"], self.campaign["draw_rules"]
        participants = {p["id"]: bytes.fromhex(p["public_key_hex"]) for p in self.campaign["participants"]}
        entries = {e["participant_id"]: e for e in self.bundle["ceremony"]}
        _require(set(entries) == set(participants) and len(entries) == len(self.bundle["ceremony"]),
                 "ceremony entries do not match the campaign's participants")
        closes = self.closed_at()
        committed = parse_timestamp(self.commitment["committed_at"])
        beacon_at = self.beacon_time()
        reveals: list[RevealInput] = []
        for pid in sorted(participants):
            entry, key = entries[pid], participants[pid]
            if entry["commitment_hex"] is not None:
                _require(ed25519_ok(key, bytes.fromhex(entry["commit_signature_hex"]),
                                    ceremony_commit_statement(campaign_id, pid, entry["commitment_hex"])),
                         f"participant {pid}: commitment signature does not verify")
                _require(parse_timestamp(entry["committed_at"]) < closes,
                         f"participant {pid}: committed after registration closed")
            if entry["secret_hex"] is None:
                _require(entry["status"] == "missing", f"participant {pid}: no secret but status {entry['status']}")
                _require(rules["missing_reveal"] == "proceed-without",
                         f"participant {pid} never revealed and the campaign's rule is {rules['missing_reveal']}")
                deadline = rules["reveal_deadline"]
                if deadline is None and self.bundle["beacon"]["kind"] == "drand-quicknet":
                    deadline_at = beacon_at
                else:
                    _require(deadline is not None, f"participant {pid} never revealed and no deadline was set")
                    deadline_at = parse_timestamp(deadline)
                _require(deadline_at <= beacon_at, f"participant {pid}: beacon used before the reveal deadline")
                _require(any(f.startswith(f"participant {pid} did not reveal")
                             for f in self.bundle["fallbacks_taken"]),
                         f"participant {pid} never revealed but the bundle does not declare the fallback")
                self.say(f"ok   participant {pid}: never revealed; drawn without (declared fallback)")
                reveals.append(RevealInput(pid, None))
                continue
            _require(entry["status"] == "revealed", f"participant {pid}: secret present but status {entry['status']}")
            _require(entry["commitment_hex"] is not None, f"participant {pid}: revealed without a commitment")
            secret = bytes.fromhex(entry["secret_hex"])
            _require(hashlib.sha256(secret).hexdigest() == entry["commitment_hex"],
                     f"participant {pid}: secret does not match the commitment")
            statement = ceremony_reveal_statement(campaign_id, pid, entry["secret_hex"],
                                                  self.commitment["root_hex"], self.size)
            _require(ed25519_ok(key, bytes.fromhex(entry["reveal_signature_hex"]), statement),
                     f"participant {pid}: reveal signature does not verify")
            revealed = parse_timestamp(entry["revealed_at"])
            _require(committed <= revealed < beacon_at,
                     f"participant {pid}: revealed outside the window between commitment and beacon")
            _require(rules["reveal_deadline"] is None or revealed < parse_timestamp(rules["reveal_deadline"]),
                     f"participant {pid}: revealed after the reveal deadline")
            self.say(f"ok   participant {pid}: commitment, reveal and signatures")
            reveals.append(RevealInput(pid, secret))
        return reveals

    def check_beacon(self) -> bytes:
        beacon, declared = self.bundle["beacon"], self.campaign["beacon"]
        _require(beacon["kind"] == declared["kind"], "beacon kind differs from the campaign's")
        signature = bytes.fromhex(beacon["signature_hex"])
        randomness = hashlib.sha256(signature).digest()
        _require(beacon["randomness_hex"] == randomness.hex(), "beacon randomness is not SHA-256 of its signature")
        committed = parse_timestamp(self.commitment["committed_at"])
        if beacon["kind"] == "drand-quicknet":
            _require(beacon["chain_hash"] == drand.CHAIN_HASH, "beacon is not from the drand quicknet chain")
            if beacon["round"] != declared["round"]:
                # Only the very next round: a wider choice would let the operator pick among rounds.
                _require(beacon.get("path") == "next-round-fallback" and beacon["round"] == declared["round"] + 1
                         and declared["fallback"] == "next-round"
                         and any(f.startswith(f"drand round {declared['round']} unavailable")
                                 for f in self.bundle["fallbacks_taken"]),
                         f"beacon round {beacon['round']} is not the declared round {declared['round']}")
            _require(drand.round_time(beacon["round"]) > committed,
                     "beacon round was published before the registrant list was committed")
            _require(drand.verify_round(beacon["round"], signature),
                     f"drand round {beacon['round']}: BLS signature does not verify against the quicknet key")
            self.say(f"ok   beacon: drand quicknet round {beacon['round']}, BLS signature verified")
        else:
            _require(beacon["kind"] == "sandbox", f"unknown beacon kind {beacon['kind']!r}")
            _require(beacon["round"] == declared["round"], "sandbox beacon round differs from the declared one")
            _require(bytes.fromhex(beacon["public_key_hex"]) == self.key, "sandbox beacon not signed by the service")
            statement = sandbox_beacon_statement(self.campaign["id"], beacon["round"], self.commitment["root_hex"])
            _require(ed25519_ok(self.key, signature, statement), "sandbox beacon signature does not verify")
            _require(parse_timestamp(beacon["generated_at"]) > committed, "sandbox beacon made before the commitment")
            _require(beacon.get("warning") == SANDBOX_WARNING and self.bundle["sandbox"] is True,
                     "sandbox beacon not marked as such")
            self.say("WARN beacon: SANDBOX beacon (signed locally, not unpredictable); demo or test draw only")
        return randomness

    def check_seed(self) -> bytes:
        reveals = self.check_ceremony()
        randomness = self.check_beacon()
        beacon = self.bundle["beacon"]
        self.seed = derive_seed(self.campaign["id"], self.root, self.size, reveals, beacon["kind"],
                                beacon["round"], randomness)
        _require(self.bundle["draw"]["seed_hex"] == self.seed.hex(),
                 f"seed: bundle says {self.bundle['draw']['seed_hex']}, recomputed {self.seed.hex()}")
        self.say(f"ok   seed {self.seed.hex()}")
        return self.seed

    def check_without_list(self) -> None:
        self.check_commitment()
        self.check_seed()

    def tiers(self) -> list[TierSpec]:
        return [TierSpec(t["tier"], t["amount_fen"], t["count"]) for t in self.campaign["tiers"]]

    def check_registrants(self, rows: Iterable[tuple[int, str, str]]) -> None:
        """Sequential: re-hash the list row by row (any iterable of rows)."""
        campaign_id = self.campaign["id"]
        quotas = {s["stratum"]: s["quota"] for s in self.campaign["strata"]}
        by_stratum: dict[str, array.array[int]] = {s: array.array("Q") for s in quotas}
        hashes = bytearray()
        extend = hashes.extend
        sha = hashlib.sha256
        previous = -1
        for ticket, pseudonym, stratum in rows:
            _require(ticket > previous, f"registrant list: ticket {ticket} out of order or repeated")
            tickets = by_stratum.get(stratum)
            _require(tickets is not None, f"registrant list: ticket {ticket} in unknown stratum {stratum!r}")
            assert tickets is not None
            try:
                leaf = encode_leaf(campaign_id, ticket, pseudonym, stratum)
            except LeafError as exc:
                raise Failure(f"registrant list: ticket {ticket}: {exc}") from exc
            extend(sha(b"\x00" + leaf).digest())
            tickets.append(ticket)
            previous = ticket
        self._check_draw(hashes, by_stratum, None)

    def check_registrant_file(self, path: Path, pool: Executor) -> None:
        """Parallel: the list file is cut at line boundaries and re-hashed in several processes."""
        strata = [s["stratum"] for s in self.campaign["strata"]]
        try:
            digest = parallel.digest_list(path, self.campaign["id"], strata, pool)
        except registrant_list.ListError as exc:
            raise Failure(f"registrant list: {exc}") from exc
        self._check_draw(digest.hashes, digest.tickets_by_stratum, pool)

    def _check_draw(self, hashes: bytearray, by_stratum: dict[str, array.array[int]], pool: Executor | None) -> None:
        count = len(hashes) // HASH_SIZE
        _require(count == self.size, f"registrant list has {count} registrants, the commitment {self.size}")
        root = parallel.tree_root(hashes, pool)
        del hashes
        _require(root == self.root, f"registrant list root {root.hex()} differs from the committed root")
        self.say(f"ok   registrant list: {count} registrants re-hash to the committed root")
        self.check_seed()
        rules = self.campaign["draw_rules"]
        quotas = {s["stratum"]: s["quota"] for s in self.campaign["strata"]}
        outcome = algorithms.run(rules["algorithm"], self.seed, by_stratum, quotas, self.tiers(), rules["spillover"],
                                 pool)
        expected = draw_section(rules["algorithm"], self.seed, outcome, rules["spillover"])
        difference = first_difference(expected, self.bundle["draw"])
        _require(difference is None, str(difference))
        self.say(f"ok   draw: {len(outcome.winners)} winners in {len(outcome.strata)} strata re-derived; "
                 f"cutoffs and winners' root {outcome.winners_root.hex()} match")

    def check_ticket(self, proof: dict[str, Any], receipt: dict[str, Any] | None) -> None:
        self.check_commitment()
        _require(proof["tree_size"] == self.size and proof["root_hex"] == self.commitment["root_hex"],
                 "proof is for another tree than the committed one")
        leaf = bytes.fromhex(proof["leaf_hex"])
        try:
            campaign_id, ticket, _pseudonym, stratum = decode_leaf(leaf)
        except LeafError as exc:
            raise Failure(f"proof leaf: {exc}") from exc
        _require(campaign_id == self.campaign["id"] and ticket == proof["ticket"], "proof leaf is for another ticket")
        if receipt is not None:
            statement = receipt_statement(receipt["campaign_id"], receipt["ticket"], receipt["leaf_hex"],
                                          receipt["registered_at"], receipt["key_id"])
            _require(receipt["key_id"] == key_id_of(self.key)
                     and ed25519_ok(self.key, bytes.fromhex(receipt["signature_hex"]), statement),
                     "receipt signature does not verify against the service key")
            _require(receipt["leaf_hex"] == proof["leaf_hex"], "the committed leaf differs from the receipt's")
            self.say(f"ok   receipt: ticket {ticket} signed at registration {receipt['registered_at']}")
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        _require(all(len(p) == HASH_SIZE for p in path), "proof hashes must be 32 bytes")
        _require(verify_inclusion(leaf, proof["leaf_index"], self.size, path, self.root),
                 f"ticket {ticket} is not included at index {proof['leaf_index']} of the committed tree")
        self.say(f"ok   inclusion: ticket {ticket} is leaf {proof['leaf_index']} of {self.size}")
        self.check_seed()
        self._check_ticket_result(ticket, stratum)

    def _check_ticket_result(self, ticket: int, stratum: str) -> None:
        draw = self.bundle["draw"]
        won = [w for w in draw["winners"] if w[0] == ticket]
        rows = [[w[0], w[1], w[2], w[3]] for w in draw["winners"]]
        root = MerkleTree.from_leaves(winner_leaf(*r) for r in rows).root  # type: ignore[arg-type]
        _require(root.hex() == draw["winners_root_hex"], "the winners list does not hash to the winners' root")
        if draw["algorithm"] != "sha256-score-v1":
            self.say(f"ok   ticket {ticket}: {'won ' + won[0][2] if won else 'did not win'} "
                     f"(algorithm {draw['algorithm']}: re-derive with the full list to check selection)")
            return
        key = rank_key(score(self.seed, ticket), ticket)
        entry = next((s for s in draw["strata"] if s["stratum"] == stratum), None)
        _require(entry is not None, f"stratum {stratum} missing from the bundle")
        assert entry is not None
        cutoff = _cutoff(entry)
        spill = _cutoff(draw["spillover"])
        if won:
            _, w_stratum, tier, amount, rnd = won[0]
            _require(w_stratum == stratum, "winner listed in another stratum")
            limit = cutoff if rnd == 1 else spill
            _require(limit is None or key <= limit, f"ticket {ticket} is listed as a winner but scores above the cutoff")
            self.say(f"ok   ticket {ticket}: WON tier {tier} ({amount} fen); score {key[:32].hex()}")
        else:
            _require(cutoff is not None and key > cutoff,
                     f"ticket {ticket} scores within its stratum's cutoff but is not listed as a winner")
            if draw["spillover"]["winners"]:
                _require(spill is not None and key > spill,
                         f"ticket {ticket} scores within the spill-over cutoff but did not win")
            assert cutoff is not None
            self.say(f"ok   ticket {ticket}: did not win; score {key[:32].hex()} is above stratum {stratum}'s "
                     f"cutoff {cutoff[:32].hex()}")


def _cutoff(entry: dict[str, Any]) -> bytes | None:
    if entry["cutoff_score_hex"] is None:
        return None
    return bytes.fromhex(entry["cutoff_score_hex"]) + struct.pack(">Q", entry["cutoff_ticket"])


def run(argv: Sequence[str] | None = None, say: Any = print) -> int:
    parser = argparse.ArgumentParser(prog="stimulus-verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the signed proof bundle (JSON)")
    parser.add_argument("--registrants", type=Path, help="the published registrant list (NDJSON or CSV)")
    parser.add_argument("--proof", type=Path, help="one ticket's inclusion proof (JSON)")
    parser.add_argument("--receipt", type=Path, help="a registration receipt (JSON), with --proof")
    parser.add_argument("--service-key", help="pin the service's Ed25519 public key (hex)")
    parser.add_argument("--workers", type=int, default=parallel.default_workers(),
                        help="processes for re-hashing the list (default: the CPU count)")
    args = parser.parse_args(argv)
    if (args.registrants is None) == (args.proof is None):
        parser.error("give either --registrants (whole draw) or --proof (one ticket)")
    pinned = bytes.fromhex(args.service_key) if args.service_key else None
    try:
        bundle, envelope_key = open_envelope(args.bundle.read_bytes(), pinned)
        if pinned is None:
            say(f"WARN service key not pinned; trusting the bundle's key {key_id_of(envelope_key)}")
        say(f"ok   bundle signature ({key_id_of(envelope_key)})")
        verifier = Verifier(bundle, envelope_key, say)
        if args.registrants is not None:
            verifier.check_commitment()
            with parallel.executor(args.workers) as pool:
                verifier.check_registrant_file(args.registrants, pool)
        else:
            proof = json.loads(args.proof.read_bytes())
            receipt = json.loads(args.receipt.read_bytes()) if args.receipt else None
            verifier.check_ticket(proof, receipt)
    except (Failure, BundleError, registrant_list.ListError) as exc:
        say(f"FAIL {exc}")
        return 1
    except (KeyError, TypeError, ValueError) as exc:
        say(f"FAIL malformed input: {type(exc).__name__}: {exc}")
        return 1
    say("PASS")
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
