"""The conformance cases of docs/conformance/: stimulus-verify gives every one its expected verdict and rule.

The cases are what an outside implementer runs their own verifier over, so they must be exactly
what docs/conformance/make_cases.py generates, cover every numbered rule of docs/draw-spec.md with
a failing case, and agree with stimulus-verify case by case.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lottery import verify

ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE = ROOT / "docs" / "conformance"
MANIFEST = json.loads((CONFORMANCE / "cases.json").read_text())
CASES: list[dict[str, Any]] = MANIFEST["cases"]
sys.path.insert(0, str(CONFORMANCE))
import run_cases  # noqa: E402  (the runner outside implementers use, beside the cases)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_stimulus_verify_gives_each_case_its_verdict_and_rule(case: dict[str, Any]) -> None:
    args = [str(CONFORMANCE / a) if a.startswith("cases/") else a for a in case["args"]]
    if case["mode"] == "full":
        args += ["--workers", "1"]
    lines: list[str] = []
    code = verify.run(args, say=lines.append)
    assert run_cases.verdict_of("\n".join(lines), code) == run_cases.expected_of(case), (case["description"], lines)


def test_the_runner_reads_the_console_script_the_same_way() -> None:
    # Through the installed entry point, as an outside implementer's verifier would be run.
    for name in ("pass-ticket-winner", "fail-list-leading-zero", "fail-shape-fallback-not-string"):
        done = subprocess.run([sys.executable, str(CONFORMANCE / "run_cases.py"), "--only", name, "--",
                               sys.executable, "-m", "lottery.verify"],
                              capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 agree, 0 differ" in done.stdout


def test_every_numbered_rule_has_a_failing_case_and_both_modes_pass() -> None:
    stated = set(re.findall(r"\*\*(R\d+(?:\.\d+)+)\*\*", (ROOT / "docs" / "draw-spec.md").read_text()))
    failing = {c["rule"] for c in CASES if c["verdict"] == "FAIL"}
    assert stated == failing, (sorted(stated - failing), sorted(failing - stated))
    passing = [c for c in CASES if c["verdict"] == "PASS"]
    assert {c["mode"] for c in passing} == {"full", "ticket"}
    assert len(CASES) >= 60


def test_the_cases_are_what_the_script_generates(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(CONFORMANCE / "make_cases.py"), "--out", str(tmp_path)],
                   check=True, cwd=ROOT, timeout=600, capture_output=True)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    kept = sorted(p.relative_to(CONFORMANCE) for p in (CONFORMANCE / "cases").rglob("*") if p.is_file())
    assert sorted(p for p in fresh if p.parts[0] == "cases") == kept, "docs/conformance/cases has stale files"
    for relative in fresh:
        assert (tmp_path / relative).read_bytes() == (CONFORMANCE / relative).read_bytes(), \
            f"docs/conformance/{relative} is stale: run docs/conformance/make_cases.py"
