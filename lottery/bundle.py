"""The proof bundle: everything needed to re-derive a draw, as signed canonical JSON.

The file is the canonical JSON of {"bundle": {...}, "signature_hex": ..., "key_id": ...,
"public_key_hex": ...}; the signature covers the canonical bytes of "bundle". Field by field in
docs/draw-spec.md. Imports only the standard library and `cryptography`: the verifier reads this.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

from lottery import algorithms, bundle_shape
from lottery.canonical import dumps, loads_strict
from lottery.seed import RevealInput, derive_seed
from lottery.selection import DrawOutcome, StratumOutcome, TierSpec
from lottery.statements import BUNDLE, ed25519_ok, key_id_of
from lottery.violation import Violation

FORMAT = BUNDLE
SANDBOX_WARNING = "SANDBOX BEACON: a drand-format chain whose secret key is public, so predictable; demos and tests only"


def cutoff_fields(key: bytes | None) -> dict[str, Any]:
    if key is None:
        return {"cutoff_score_hex": None, "cutoff_ticket": None}
    return {"cutoff_score_hex": key[:32].hex(), "cutoff_ticket": struct.unpack(">Q", key[32:40])[0]}


def stratum_entry(outcome: StratumOutcome) -> dict[str, Any]:
    return {"stratum": outcome.stratum, "registrants": outcome.registrants, "quota": outcome.quota,
            "winners_round1": outcome.winners_round1, **cutoff_fields(outcome.cutoff_key)}


def draw_section(algorithm: str, seed: bytes, outcome: DrawOutcome, spillover: str) -> dict[str, Any]:
    """The part of the bundle a verifier recomputes and compares field by field."""
    return {
        "algorithm": algorithm,
        "seed_hex": seed.hex(),
        "strata": [stratum_entry(s) for s in outcome.strata],
        "spillover": {"rule": spillover, "unused_quota": outcome.unused_quota,
                      "winners": sum(1 for w in outcome.winners if w.round == 2),
                      **cutoff_fields(outcome.spill_cutoff_key)},
        "winner_count": len(outcome.winners),
        "winners_root_hex": outcome.winners_root.hex(),
        "winners": [[w.ticket, w.stratum, w.tier, w.amount_fen, w.round]
                    for w in sorted(outcome.winners, key=lambda w: w.ticket)],
    }


def build(*, campaign: dict[str, Any], commitment: dict[str, Any], ceremony: Sequence[dict[str, Any]],
          beacon: dict[str, Any], draw: dict[str, Any], drawn_at: str, fallbacks: Sequence[str],
          software_version: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "software": {"name": "stimulus", "version": software_version},
        "sandbox": beacon.get("kind") == "sandbox",
        "campaign": campaign,
        "commitment": commitment,
        "ceremony": list(ceremony),
        "beacon": beacon,
        "draw": draw,
        "drawn_at": drawn_at,
        "fallbacks_taken": list(fallbacks),
    }


def envelope(bundle: dict[str, Any], sign: Any, public_key: bytes) -> bytes:
    """The downloadable file. `sign` maps bytes to an Ed25519 signature.

    Built around the bundle's canonical bytes rather than serialised twice: the envelope's keys sort
    as bundle < key_id < public_key_hex < signature_hex, so this is exactly its canonical form.
    """
    body = dumps(bundle)
    signature = sign(body)
    return b"".join([b'{"bundle":', body, b',"key_id":', dumps(key_id_of(public_key)), b',"public_key_hex":',
                     dumps(public_key.hex()), b',"signature_hex":', dumps(signature.hex()), b"}"])


class BundleError(Violation):
    pass


def open_envelope(data: bytes, pinned_public_key: bytes | None = None) -> tuple[dict[str, Any], bytes]:
    """Parse a bundle file and check its signature (rules R2.5.1, R12.1.1-R12.1.5 of the spec)."""
    try:
        document = loads_strict(data)
    except (ValueError, RecursionError) as exc:
        raise BundleError("R2.5.1", f"bundle file is not canonical JSON: {exc}") from exc
    bundle_shape.ENVELOPE_SHAPE(document, "envelope")
    public_key = bytes.fromhex(document["public_key_hex"])
    if pinned_public_key is not None and public_key != pinned_public_key:
        raise BundleError("R12.1.2", "bundle is signed by a key other than the pinned service key")
    if key_id_of(public_key) != document["key_id"]:
        raise BundleError("R12.1.3", "key_id does not match the public key")
    bundle = document["bundle"]
    # The file is canonical, so the signed bytes are exactly the text between the envelope's markers.
    start = len(b'{"bundle":')
    end = data.rindex(b',"key_id":')
    if not ed25519_ok(public_key, bytes.fromhex(document["signature_hex"]), data[start:end]):
        raise BundleError("R12.1.4", "bundle signature does not verify")
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise BundleError("R12.1.5", f"not a {FORMAT} bundle")
    return bundle, public_key


def ceremony_inputs(ceremony: Sequence[dict[str, Any]]) -> tuple[list[RevealInput], list[str]]:
    """The seed's reveal inputs and the declared fallback line for each participant who never revealed."""
    reveals: list[RevealInput] = []
    fallbacks: list[str] = []
    for entry in sorted(ceremony, key=lambda e: e["participant_id"]):
        secret = entry["secret_hex"]
        reveals.append(RevealInput(entry["participant_id"], bytes.fromhex(secret) if secret is not None else None))
        if secret is None:
            fallbacks.append(f"participant {entry['participant_id']} did not reveal: "
                             "drawn without their secret (rule proceed-without)")
    return reveals, fallbacks


def fallbacks_taken(ceremony: Sequence[dict[str, Any]], declared_round: int | None,
                    beacon: Mapping[str, Any]) -> list[str]:
    """`fallbacks_taken`, exactly (spec R12.2.7): one line per missing reveal, then the beacon's."""
    _, fallbacks = ceremony_inputs(ceremony)
    if beacon.get("path") == "next-round-fallback":
        fallbacks.append(f"drand round {declared_round} unavailable: used round {beacon['round']} (rule next-round)")
    return fallbacks


def compose(*, campaign: dict[str, Any], commitment: dict[str, Any], ceremony: Sequence[dict[str, Any]],
            beacon: dict[str, Any], tickets_by_stratum: Mapping[str, Sequence[int]], drawn_at: str,
            software_version: str, pool: Executor | None = None) -> tuple[dict[str, Any], DrawOutcome, bytes]:
    """Run the draw from its evidence and lay out the bundle; the service and the tests share this."""
    reveals, _ = ceremony_inputs(ceremony)
    fallbacks = fallbacks_taken(ceremony, campaign["beacon"]["round"], beacon)
    seed = derive_seed(campaign["id"], bytes.fromhex(commitment["root_hex"]), commitment["tree_size"], reveals,
                       beacon["kind"], beacon["round"], bytes.fromhex(beacon["randomness_hex"]))
    rules = campaign["draw_rules"]
    quotas = {s["stratum"]: s["quota"] for s in campaign["strata"]}
    tiers = [TierSpec(t["tier"], t["amount_fen"], t["count"]) for t in campaign["tiers"]]
    outcome = algorithms.run(rules["algorithm"], seed, tickets_by_stratum, quotas, tiers, rules["spillover"], pool)
    bundle = build(campaign=campaign, commitment=commitment, ceremony=ceremony, beacon=beacon,
                   draw=draw_section(rules["algorithm"], seed, outcome, rules["spillover"]),
                   drawn_at=drawn_at, fallbacks=fallbacks, software_version=software_version)
    return bundle, outcome, seed
