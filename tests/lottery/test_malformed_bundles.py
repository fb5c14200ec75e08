"""Whatever a bundle holds, `stimulus-verify` answers PASS or `FAIL <rule>: <reason>`, never a traceback.

Each example takes a real signed draw, changes one node anywhere in the bundle (any JSON value in
its place, a key removed or added, a number pushed past 2^64, a string or a list edited), signs it
again with the service key so the deeper rules are reached, and runs the verifier in both modes.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import py_ecc.bls  # noqa: F401  (raises the recursion limit on import: before hypothesis starts counting)
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lottery import bundle as bundle_module
from lottery import rehearsal, verify
from lottery.leaf import encode_leaf
from sandbox.drand_chain import sign_round

VERDICT = re.compile(r"^(PASS|FAIL R\d+(\.\d+)+: .+)$")

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([2**64, 2**64 - 1, -1, 0])
    | st.text(max_size=12) | st.sampled_from(["", "00" * 32, "AB" * 32, "2023-09-01T00:00:00Z", "sandbox"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += paths(item, (*prefix, i))
    return found


def tweaks(value: Any) -> st.SearchStrategy[Any]:
    """Values near the original, to get past the shape rules and reach the semantic ones."""
    if isinstance(value, bool):
        return st.just(not value)
    if isinstance(value, int):
        return st.sampled_from([value + 1, value - 1, 0, 1, 2**64, 2**64 - 1, -value - 1, str(value)])
    if isinstance(value, str):
        return st.sampled_from([value + "0", value[:-1], value.upper(), value[::-1], value + "\x00", ""])
    if isinstance(value, list):
        return st.sampled_from([value[:-1], value + value[-1:], value[::-1], [*value, None]])
    if isinstance(value, dict):
        return st.sampled_from([{**value, "extra": 1}, dict(list(value.items())[1:]), {}])
    return st.just(value)


@st.composite
def mutated(draw: st.DrawFn, bundle: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(bundle)
    path = draw(st.sampled_from(paths(changed)[1:]), label="path")
    parent = changed
    for step in path[:-1]:
        parent = parent[step]
    original = parent[path[-1]]
    action = draw(st.sampled_from(["replace", "tweak", "tweak", "delete"]), label="action")
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "tweak":
        parent[path[-1]] = draw(tweaks(original), label="tweak")
    else:
        parent[path[-1]] = draw(JSON_VALUES, label="value")
    return changed


@pytest.fixture(scope="module")
def draws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, rehearsal.Rehearsal]]:
    made = {}
    for name, scenario in {
        "sandbox": rehearsal.Scenario(missing_reveals=1, participants=2, sandbox_signer=sign_round),
        "drand": rehearsal.Scenario(beacon="drand-quicknet", algorithm="rfc3797"),
    }.items():
        tmp = tmp_path_factory.mktemp(name)
        r = rehearsal.rehearse(scenario, count=30, list_path=tmp / "list.csv")
        ticket, name_, stratum = r.rows[3]
        assert r.tree is not None
        proof = {"ticket": ticket, "leaf_index": 3, "tree_size": r.tree.size, "root_hex": r.tree.root.hex(),
                 "leaf_hex": encode_leaf(scenario.campaign_id, ticket, name_, stratum).hex(),
                 "audit_path": [p.hex() for p in r.tree.inclusion_proof(3)]}
        (tmp / "proof.json").write_text(json.dumps(proof))
        made[name] = (tmp, r)
    return made


def verdict(tmp: Path, data: bytes, mode: str) -> list[str]:
    (tmp / "mutant.json").write_bytes(data)
    extra = ["--registrants", str(tmp / "list.csv"), "--workers", "1"] if mode == "list" \
        else ["--proof", str(tmp / "proof.json")]
    lines: list[str] = []
    code = verify.run([str(tmp / "mutant.json"), *extra], say=lines.append)
    assert VERDICT.match(lines[-1]), lines
    assert (code == 0) == (lines[-1] == "PASS"), lines
    assert verify.UNGUARDED not in lines[-1], lines
    return lines


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_sandbox_bundle_never_crashes_the_verifier(
        draws: dict[str, tuple[Path, rehearsal.Rehearsal]], data: st.DataObject) -> None:
    tmp, r = draws["sandbox"]
    bundle = data.draw(mutated(r.bundle), label="bundle")
    signed = bundle_module.envelope(bundle, r.service_key.sign, r.service_public)
    verdict(tmp, signed, data.draw(st.sampled_from(["list", "ticket"]), label="mode"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_drand_bundle_never_crashes_the_verifier(
        draws: dict[str, tuple[Path, rehearsal.Rehearsal]], data: st.DataObject) -> None:
    tmp, r = draws["drand"]
    bundle = data.draw(mutated(r.bundle), label="bundle")
    signed = bundle_module.envelope(bundle, r.service_key.sign, r.service_public)
    verdict(tmp, signed, data.draw(st.sampled_from(["list", "ticket"]), label="mode"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_envelope_never_crashes_the_verifier(
        draws: dict[str, tuple[Path, rehearsal.Rehearsal]], data: st.DataObject) -> None:
    tmp, r = draws["sandbox"]
    document = data.draw(mutated(json.loads(r.bundle_bytes)), label="envelope")
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    lines = verdict(tmp, text, "ticket")
    assert lines[-1] != "PASS" or document == json.loads(r.bundle_bytes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(proof=JSON_VALUES, receipt=JSON_VALUES)
def test_any_proof_or_receipt_never_crashes_the_verifier(
        draws: dict[str, tuple[Path, rehearsal.Rehearsal]], proof: Any, receipt: Any) -> None:
    tmp, r = draws["sandbox"]
    (tmp / "any-proof.json").write_text(json.dumps(proof))
    (tmp / "any-receipt.json").write_text(json.dumps(receipt))
    (tmp / "b.json").write_bytes(r.bundle_bytes)
    lines: list[str] = []
    code = verify.run([str(tmp / "b.json"), "--proof", str(tmp / "any-proof.json"),
                       "--receipt", str(tmp / "any-receipt.json")], say=lines.append)
    assert code == 1 and VERDICT.match(lines[-1]) and verify.UNGUARDED not in lines[-1], lines
