"""`stimulus-verify`: re-derive a draw offline from its proof bundle, trusting nobody.

    stimulus-verify BUNDLE --registrants LIST [--service-key HEX] [--workers N]
        re-derives the Merkle root from the registrant list, checks every signature, the
        ceremony's timing, the beacon (BLS, pure Python), the seed, every stratum's winners and
        cutoffs and the winners' root.
    stimulus-verify BUNDLE --proof PROOF [--receipt RECEIPT] [--service-key HEX]
        checks one citizen: the receipt's signature, the ticket's inclusion in the committed tree,
        and its result against the published winners and cutoffs.

Prints PASS, or `FAIL <rule>: <reason>` for the first rule of docs/draw-spec.md found broken;
exit code 0 only on PASS. Imports only the standard library, `cryptography` and `py_ecc` (for
drand's BLS signature).
"""

from __future__ import annotations

import argparse
import array
import hashlib
import itertools
import json
import struct
import sys
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import datetime
from pathlib import Path
from typing import Any

from lottery import algorithms, bundle_shape, drand, parallel
from lottery.bundle import SANDBOX_WARNING, draw_section, fallbacks_taken, open_envelope
from lottery.leaf import LeafError, decode_leaf
from lottery.merkle import HASH_SIZE, MerkleTree, verify_inclusion
from lottery.rfc3797 import MAX_SELECTIONS
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
    timestamp,
)
from lottery.violation import Violation, require

# What `run` prints when a check itself broke on input the shape rules should have refused: a bug
# in this verifier, reported as a failure rather than a traceback (the property tests look for it).
UNGUARDED = "input the shape rules let through"


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


def _ascending(values: Sequence[str]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


class Verifier:
    """The rules that need only the bundle; the list and the per-ticket checks build on them."""

    def __init__(self, bundle: dict[str, Any], service_public_key: bytes, say: Any = print) -> None:
        bundle_shape.check_bundle(bundle)
        self.bundle = bundle
        self.key = service_public_key
        self.say = say
        self.campaign: dict[str, Any] = bundle["campaign"]
        self.commitment: dict[str, Any] = bundle["commitment"]
        self.root = bytes.fromhex(self.commitment["root_hex"])
        self.size: int = self.commitment["tree_size"]
        self.seed = b""

    def check_campaign(self) -> None:
        c = self.campaign
        strata, tiers = c["strata"], c["tiers"]
        require(_ascending([s["stratum"] for s in strata]), "R12.2.4", "campaign.strata not sorted by unique stratum id")
        require(_ascending([p["id"] for p in c["participants"]]), "R12.2.4",
                "campaign.participants not sorted by unique id")
        opens, closes = parse_timestamp(c["registration_opens_at"]), parse_timestamp(c["registration_closes_at"])
        closed = parse_timestamp(c["registration_closed_at"])
        require(opens < closes, "R12.2.5", "registration_opens_at is not before registration_closes_at")
        require(opens <= closed <= closes, "R12.2.5",
                "registration_closed_at lies outside registration_opens_at..registration_closes_at")
        deadline = c["draw_rules"]["reveal_deadline"]
        require(deadline is None or parse_timestamp(deadline) > closes, "R12.2.5",
                "the reveal deadline is not after registration closes")
        total_fen = sum(t["amount_fen"] * t["count"] for t in tiers)
        require(c["budget_fen"] >= 1 and total_fen <= c["budget_fen"], "R12.2.6",
                f"the tiers need {total_fen} fen but the budget is {c['budget_fen']}")
        require(len(tiers) >= 1 and len({t["tier"] for t in tiers}) == len(tiers), "R9.2.2",
                "the tiers must be at least one, with unique names")
        require(all(t["count"] >= 1 and t["amount_fen"] >= 1 for t in tiers), "R9.2.2",
                "every tier needs a count and an amount_fen of at least 1")
        winners = sum(t["count"] for t in tiers)
        require(len(strata) >= 1 and all(s["quota"] >= 1 for s in strata), "R9.2.1",
                "there must be at least one stratum, each with a quota of at least 1")
        quotas = sum(s["quota"] for s in strata)
        require(quotas == winners, "R9.2.1", f"the quotas add up to {quotas} but the tiers to {winners}")
        require(c["draw_rules"]["algorithm"] != "rfc3797" or winners <= MAX_SELECTIONS, "R10.2.1",
                f"rfc3797 selects at most {MAX_SELECTIONS} winners, the tiers ask for {winners}")

    def check_commitment(self) -> None:
        c, campaign_id = self.commitment, self.campaign["id"]
        require(c["campaign_id"] == campaign_id, "R5.1.1", "commitment names another campaign")
        require(c["key_id"] == key_id_of(self.key), "R5.1.2", "commitment key id is not the service key")
        statement = commitment_statement(campaign_id, self.size, c["root_hex"], c["committed_at"], c["key_id"])
        require(ed25519_ok(self.key, bytes.fromhex(c["signature_hex"]), statement), "R5.1.3",
                "commitment signature does not verify")
        require(parse_timestamp(c["committed_at"]) >= self.closed_at(), "R5.1.4",
                "commitment made before registration closed")
        self.say(f"ok   commitment: {self.size} registrants, root {c['root_hex']}, signed {c['committed_at']}")

    def closed_at(self) -> datetime:
        return parse_timestamp(self.campaign["registration_closed_at"])

    def chain(self) -> drand.Chain:
        """The beacon kind's pinned chain (the shape rules admit only the kinds that have one)."""
        return drand.CHAINS[self.bundle["beacon"]["kind"]]

    def beacon_time(self) -> datetime:
        return self.chain().round_time(self.bundle["beacon"]["round"])

    def reveal_deadline(self) -> datetime | None:
        """The reveal deadline in force: the declared one, or a drand round's time if that is earlier."""
        declared = self.campaign["draw_rules"]["reveal_deadline"]
        deadlines = [parse_timestamp(declared)] if declared is not None else []
        if self.campaign["beacon"]["kind"] == "drand-quicknet" and self.campaign["beacon"]["round"] is not None:
            deadlines.append(drand.round_time(self.campaign["beacon"]["round"]))
        return min(deadlines, default=None)

    def check_ceremony(self) -> list[RevealInput]:
        campaign_id, rules = self.campaign["id"], self.campaign["draw_rules"]
        participants = {p["id"]: bytes.fromhex(p["public_key_hex"]) for p in self.campaign["participants"]}
        ids = [e["participant_id"] for e in self.bundle["ceremony"]]
        require(ids == sorted(participants), "R6.1",
                "ceremony entries are not the campaign's participants, one each, in participant_id order")
        closes = self.closed_at()
        committed = parse_timestamp(self.commitment["committed_at"])
        beacon_at = self.beacon_time()
        deadline = self.reveal_deadline()
        reveals: list[RevealInput] = []
        for entry in self.bundle["ceremony"]:
            pid = entry["participant_id"]
            key = participants[pid]
            commit_fields = [entry[k] is None for k in ("commitment_hex", "commit_signature_hex", "committed_at")]
            reveal_fields = [entry[k] is None for k in ("secret_hex", "reveal_signature_hex", "revealed_at")]
            require(len(set(commit_fields)) == 1 and len(set(reveal_fields)) == 1, "R6.2",
                    f"participant {pid}: commitment or reveal fields only partly present")
            revealed = not reveal_fields[0]
            require(entry["status"] == ("revealed" if revealed else "missing"), "R6.2",
                    f"participant {pid}: status {entry['status']} does not match the secret")
            require(not revealed or not commit_fields[0], "R6.2", f"participant {pid}: revealed without a commitment")
            if entry["commitment_hex"] is not None:
                require(ed25519_ok(key, bytes.fromhex(entry["commit_signature_hex"]),
                                   ceremony_commit_statement(campaign_id, pid, entry["commitment_hex"])),
                        "R6.3", f"participant {pid}: commitment signature does not verify")
                require(parse_timestamp(entry["committed_at"]) < closes, "R6.4",
                        f"participant {pid}: committed after registration closed")
            if not revealed:
                require(rules["missing_reveal"] == "proceed-without", "R6.9",
                        f"participant {pid} never revealed and the campaign's rule is {rules['missing_reveal']}")
                require(deadline is not None, "R6.10", f"participant {pid} never revealed and no deadline was set")
                assert deadline is not None
                require(deadline <= beacon_at, "R6.10", f"participant {pid}: beacon used before the reveal deadline")
                self.say(f"ok   participant {pid}: never revealed; drawn without (declared fallback)")
                reveals.append(RevealInput(pid, None))
                continue
            secret = bytes.fromhex(entry["secret_hex"])
            require(hashlib.sha256(secret).hexdigest() == entry["commitment_hex"], "R6.5",
                    f"participant {pid}: secret does not match the commitment")
            statement = ceremony_reveal_statement(campaign_id, pid, entry["secret_hex"],
                                                  self.commitment["root_hex"], self.size)
            require(ed25519_ok(key, bytes.fromhex(entry["reveal_signature_hex"]), statement), "R6.6",
                    f"participant {pid}: reveal signature does not verify")
            revealed_at = parse_timestamp(entry["revealed_at"])
            require(committed <= revealed_at < beacon_at, "R6.7",
                    f"participant {pid}: revealed outside the window between commitment and beacon")
            require(deadline is None or revealed_at < deadline, "R6.8",
                    f"participant {pid}: revealed after the reveal deadline")
            self.say(f"ok   participant {pid}: commitment, reveal and signatures")
            reveals.append(RevealInput(pid, secret))
        return reveals

    def check_beacon(self) -> bytes:
        beacon, declared = self.bundle["beacon"], self.campaign["beacon"]
        require(beacon["kind"] == declared["kind"], "R7.2.1", "beacon kind differs from the campaign's")
        require(self.bundle["sandbox"] is (beacon["kind"] == "sandbox"), "R7.2.3",
                "bundle.sandbox must be true exactly when the beacon is the sandbox beacon")
        signature = bytes.fromhex(beacon["signature_hex"])
        randomness = hashlib.sha256(signature).digest()
        require(beacon["randomness_hex"] == randomness.hex(), "R7.2.2",
                "beacon randomness is not SHA-256 of its signature")
        committed = parse_timestamp(self.commitment["committed_at"])
        if beacon["kind"] == "sandbox":
            self._check_sandbox(beacon, declared)
        self._check_chain(beacon, declared, signature, committed)
        return randomness

    def _check_chain(self, beacon: dict[str, Any], declared: dict[str, Any], signature: bytes,
                     committed: datetime) -> None:
        """A round of the kind's drand chain: quicknet, or the sandbox chain (same scheme, public key)."""
        kind, chain = beacon["kind"], drand.CHAINS[beacon["kind"]]
        sandbox = kind == "sandbox"
        name, key = ("sandbox chain", "the sandbox chain's key") if sandbox else ("drand", "the quicknet key")
        require(beacon["chain_hash"] == chain.chain_hash, "R7.1.1",
                f"beacon is not from the {'sandbox' if sandbox else 'drand quicknet'} chain")
        round_number = beacon["round"]
        require(declared["round"] is not None or kind == "sandbox", "R7.1.2",
                "the campaign declared no beacon round; only a sandbox campaign may leave it open")
        if declared["round"] is not None:
            on_time = round_number == declared["round"] and beacon["path"] == "declared-round"
            # Only the very next round: a wider choice would let the operator pick among rounds.
            fallback = (beacon["path"] == "next-round-fallback" and round_number == declared["round"] + 1
                        and declared["fallback"] == "next-round")
            require(on_time or fallback, "R7.1.2", f"beacon round {round_number} on path {beacon['path']} is not "
                    f"the declared round {declared['round']} or its declared next-round fallback")
        require(1 <= round_number <= chain.max_round, "R7.1.3", f"{name} round {round_number} has no publication time")
        require(beacon["round_time"] == timestamp(chain.round_time(round_number)), "R7.1.3",
                f"beacon round_time {beacon['round_time']} is not round {round_number}'s time")
        require(chain.round_time(round_number) > committed, "R7.1.4",
                "beacon round was published before the registrant list was committed")
        require(drand.verify_round(round_number, signature, chain.public_key_hex), "R7.1.5",
                f"{name} round {round_number}: BLS signature does not verify against {key}")
        if kind == "sandbox":
            self.say(f"WARN beacon: SANDBOX chain round {round_number} (its key is public, so the round was "
                     "predictable); demo or test draw only")
        else:
            self.say(f"ok   beacon: drand quicknet round {round_number}, BLS signature verified")

    def _check_sandbox(self, beacon: dict[str, Any], declared: dict[str, Any]) -> None:
        """What only a sandbox beacon must show: its open round, if any, and its marking."""
        if declared["round"] is None:
            # The campaign left the round open: the first one after the commitment, every reveal and
            # (if someone never revealed) the reveal deadline, which nobody chooses.
            entries = self.bundle["ceremony"]
            moments = [parse_timestamp(self.commitment["committed_at"]),
                       *(parse_timestamp(e["revealed_at"]) for e in entries if e["revealed_at"] is not None)]
            deadline = self.campaign["draw_rules"]["reveal_deadline"]
            if deadline is not None and any(e["revealed_at"] is None for e in entries):
                moments.append(parse_timestamp(deadline))
            expected = drand.SANDBOX.first_round_after(max(moments))
            require(beacon["round"] == expected and beacon["path"] == "first-round-after-reveals", "R7.3.1",
                    f"sandbox beacon round {beacon['round']} on path {beacon['path']} is not the first round "
                    f"after the reveals ({expected}, path first-round-after-reveals)")
        require(beacon["public_key_hex"] == drand.SANDBOX.public_key_hex, "R7.3.2",
                "sandbox beacon's public_key_hex is not the sandbox chain's key")
        require(beacon["warning"] == SANDBOX_WARNING, "R7.3.3", "sandbox beacon not marked as such")

    def check_seed(self) -> bytes:
        randomness = self.check_beacon()
        reveals = self.check_ceremony()
        beacon = self.bundle["beacon"]
        expected = fallbacks_taken(self.bundle["ceremony"], self.campaign["beacon"]["round"], beacon)
        require(self.bundle["fallbacks_taken"] == expected, "R12.2.7",
                f"fallbacks_taken is {self.bundle['fallbacks_taken']!r}, the evidence says {expected!r}")
        self.seed = derive_seed(self.campaign["id"], self.root, self.size, reveals, beacon["kind"],
                                beacon["round"], randomness)
        require(self.bundle["draw"]["seed_hex"] == self.seed.hex(), "R8.1",
                f"seed: bundle says {self.bundle['draw']['seed_hex']}, recomputed {self.seed.hex()}")
        self.say(f"ok   seed {self.seed.hex()}")
        return self.seed

    def check_without_list(self) -> None:
        """Every rule that needs only the bundle, in the order of the spec's §13."""
        self.check_campaign()
        self.check_commitment()
        self.check_seed()

    def tiers(self) -> list[TierSpec]:
        return [TierSpec(t["tier"], t["amount_fen"], t["count"]) for t in self.campaign["tiers"]]

    def check_registrant_file(self, path: Path, pool: Executor) -> None:
        """Parallel: the list file is cut at line boundaries and re-hashed in several processes."""
        strata = [s["stratum"] for s in self.campaign["strata"]]
        digest = parallel.digest_list(path, self.campaign["id"], strata, pool)
        self._check_draw(digest.hashes, digest.tickets_by_stratum, pool)

    def _check_draw(self, hashes: bytearray, by_stratum: dict[str, array.array[int]], pool: Executor | None) -> None:
        count = len(hashes) // HASH_SIZE
        require(count == self.size, "R12.4.6", f"registrant list has {count} registrants, the commitment {self.size}")
        root = parallel.tree_root(hashes, pool)
        del hashes
        require(root == self.root, "R12.4.7", f"registrant list root {root.hex()} differs from the committed root")
        self.say(f"ok   registrant list: {count} registrants re-hash to the committed root")
        rules = self.campaign["draw_rules"]
        quotas = {s["stratum"]: s["quota"] for s in self.campaign["strata"]}
        outcome = algorithms.run(rules["algorithm"], self.seed, by_stratum, quotas, self.tiers(), rules["spillover"],
                                 pool)
        expected = draw_section(rules["algorithm"], self.seed, outcome, rules["spillover"])
        difference = first_difference(expected, self.bundle["draw"])
        require(difference is None, "R12.2.8", str(difference))
        self.say(f"ok   draw: {len(outcome.winners)} winners in {len(outcome.strata)} strata re-derived; "
                 f"cutoffs and winners' root {outcome.winners_root.hex()} match")

    def check_ticket(self, proof: Any, receipt: Any) -> None:
        bundle_shape.PROOF(proof, "proof")
        if receipt is not None:
            bundle_shape.RECEIPT(receipt, "receipt")
        require(proof["tree_size"] == self.size and proof["root_hex"] == self.commitment["root_hex"], "R12.5.2",
                "proof is for another tree than the committed one")
        leaf = bytes.fromhex(proof["leaf_hex"])
        try:
            campaign_id, ticket, _pseudonym, stratum = decode_leaf(leaf)
        except (LeafError, UnicodeDecodeError) as exc:
            raise Violation("R3.4", f"proof leaf: {exc}") from None
        require(campaign_id == self.campaign["id"] and ticket == proof["ticket"], "R12.5.3",
                "proof leaf is for another ticket")
        if receipt is not None:
            try:
                statement = receipt_statement(receipt["campaign_id"], receipt["ticket"], receipt["leaf_hex"],
                                              receipt["registered_at"], receipt["key_id"])
            except ValueError:  # a string with no UTF-8 form was never signed
                statement = b""
            require(receipt["key_id"] == key_id_of(self.key) and statement != b""
                    and ed25519_ok(self.key, bytes.fromhex(receipt["signature_hex"]), statement),
                    "R5.6.1", "receipt signature does not verify against the service key")
            require(receipt["leaf_hex"] == proof["leaf_hex"], "R5.6.2", "the committed leaf differs from the receipt's")
            self.say(f"ok   receipt: ticket {ticket} signed at registration {receipt['registered_at']}")
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        require(verify_inclusion(leaf, proof["leaf_index"], self.size, path, self.root), "R4.4.1",
                f"ticket {ticket} is not included at index {proof['leaf_index']} of the committed tree")
        self.say(f"ok   inclusion: ticket {ticket} is leaf {proof['leaf_index']} of {self.size}")
        self._check_ticket_result(ticket, stratum)

    def _check_ticket_result(self, ticket: int, stratum: str) -> None:
        draw = self.bundle["draw"]
        won = [w for w in draw["winners"] if w[0] == ticket]
        try:
            root = MerkleTree.from_leaves(winner_leaf(w[0], w[1], w[2], w[3]) for w in draw["winners"]).root
        except (struct.error, ValueError):  # a label too long for its u16 length prefix: no such leaf exists
            root = b""
        require(root.hex() == draw["winners_root_hex"], "R11.1", "the winners list does not hash to the winners' root")
        if draw["algorithm"] != "sha256-score-v1":
            self.say(f"ok   ticket {ticket}: {'won ' + won[0][2] if won else 'did not win'} "
                     f"(algorithm {draw['algorithm']}: re-derive with the full list to check selection)")
            return
        key = rank_key(score(self.seed, ticket), ticket)
        entry = next((s for s in draw["strata"] if s["stratum"] == stratum), None)
        require(entry is not None, "R9.4.1", f"stratum {stratum} missing from the bundle")
        assert entry is not None
        cutoff = _cutoff(entry)
        spill = _cutoff(draw["spillover"])
        if won:
            _, w_stratum, tier, amount, rnd = won[0]
            require(w_stratum == stratum, "R9.4.1", "winner listed in another stratum")
            limit = cutoff if rnd == 1 else spill
            require(rnd in (1, 2) and (limit is None or key <= limit), "R9.4.2",
                    f"ticket {ticket} is listed as a winner but scores above the cutoff")
            self.say(f"ok   ticket {ticket}: WON tier {tier} ({amount} fen); score {key[:32].hex()}")
        else:
            require(cutoff is not None and key > cutoff, "R9.4.3",
                    f"ticket {ticket} scores within its stratum's cutoff but is not listed as a winner")
            if draw["spillover"]["winners"]:
                require(spill is not None and key > spill, "R9.4.3",
                        f"ticket {ticket} scores within the spill-over cutoff but did not win")
            assert cutoff is not None
            self.say(f"ok   ticket {ticket}: did not win; score {key[:32].hex()} is above stratum {stratum}'s "
                     f"cutoff {cutoff[:32].hex()}")


def _cutoff(entry: dict[str, Any]) -> bytes | None:
    if entry["cutoff_score_hex"] is None or entry["cutoff_ticket"] is None:
        return None
    return bytes.fromhex(entry["cutoff_score_hex"]) + struct.pack(">Q", entry["cutoff_ticket"])


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("a key is repeated")
    return dict(pairs)


def read_citizen_file(path: Path, what: str) -> Any:
    """A proof or receipt: any JSON spelling, but one value per key (rule R12.5.1)."""
    try:
        return json.loads(path.read_bytes(), object_pairs_hook=_refuse_repeats)
    except (ValueError, RecursionError) as exc:
        raise Violation("R12.5.1", f"{what} is not a JSON object with unique keys: {exc}") from None


def verify(args: argparse.Namespace, pinned: bytes | None, say: Any) -> None:
    bundle, envelope_key = open_envelope(args.bundle.read_bytes(), pinned)
    if pinned is None:
        say(f"WARN service key not pinned; trusting the bundle's key {key_id_of(envelope_key)}")
    say(f"ok   bundle signature ({key_id_of(envelope_key)})")
    verifier = Verifier(bundle, envelope_key, say)
    verifier.check_without_list()
    if args.registrants is not None:
        with parallel.executor(args.workers) as pool:
            verifier.check_registrant_file(args.registrants, pool)
    else:
        proof = read_citizen_file(args.proof, "the proof")
        receipt = read_citizen_file(args.receipt, "the receipt") if args.receipt else None
        verifier.check_ticket(proof, receipt)


def run(argv: Sequence[str] | None = None, say: Any = print) -> int:
    parser = argparse.ArgumentParser(prog="stimulus-verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the signed proof bundle (JSON)")
    parser.add_argument("--registrants", type=Path, help="the published registrant list (NDJSON or CSV)")
    parser.add_argument("--proof", type=Path, help="one ticket's inclusion proof (JSON)")
    parser.add_argument("--receipt", type=Path, help="a registration receipt (JSON), with --proof")
    parser.add_argument("--service-key", help="pin the service's Ed25519 public key (hex)")
    parser.add_argument("--workers", type=int, default=parallel.default_workers(),
                        help="processes for re-hashing the list (default: the CPU count, at most 8)")
    args = parser.parse_args(argv)
    if (args.registrants is None) == (args.proof is None):
        parser.error("give either --registrants (whole draw) or --proof (one ticket)")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        pinned = bytes.fromhex(args.service_key) if args.service_key else None
    except ValueError:
        parser.error("--service-key must be hex")
    for path in (args.bundle, args.registrants, args.proof, args.receipt):
        if path is not None and not path.is_file():
            parser.error(f"{path}: no such file")
    try:
        verify(args, pinned, say)
    except Violation as exc:
        say(f"FAIL {exc}")
        return 1
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError) as exc:
        say(f"FAIL R12.2.2: {UNGUARDED}: {type(exc).__name__}: {exc}")
        return 1
    say("PASS")
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
