"""Run a draw verifier over the conformance cases and compare its verdicts with the expected ones.

    python3 docs/conformance/run_cases.py [--only NAME] -- VERIFIER [ARGS...]

For every case in cases.json, runs `VERIFIER [ARGS...] <the case's arguments>` in this directory
(the case's arguments are stimulus-verify's: BUNDLE, then --registrants LIST or --proof PROOF
[--receipt RECEIPT], then --service-key HEX), reads the last non-empty line the verifier prints,
and expects `PASS` with exit code 0, or `FAIL <rule>: <reason>` with exit code 1 and the case's
rule. Prints one line per mismatch and a summary; exits 1 if any case differs. Needs only the
Python standard library.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def verdict_of(stdout: str, code: int) -> str:
    """`PASS`, `FAIL <rule>`, or a description of output that is neither."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    if last == "PASS" and code == 0:
        return "PASS"
    if last.startswith("FAIL ") and ":" in last and code == 1:
        return "FAIL " + last[5:].split(":", 1)[0].strip()
    return f"unreadable (exit {code}): {last[:120]!r}"


def expected_of(case: dict[str, object]) -> str:
    return "PASS" if case["verdict"] == "PASS" else f"FAIL {case['rule']}"


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__)
        return 2
    options, command = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    only = options[options.index("--only") + 1] if "--only" in options else None
    cases = json.loads((HERE / "cases.json").read_text())["cases"]
    failures = 0
    for case in cases:
        if only is not None and case["name"] != only:
            continue
        done = subprocess.run([*command, *case["args"]], cwd=HERE, capture_output=True, text=True, timeout=600)
        got, want = verdict_of(done.stdout, done.returncode), expected_of(case)
        if got != want:
            failures += 1
            print(f"{case['name']}: expected {want}, got {got}  ({case['description']})")
    print(f"{len(cases) - failures if only is None else 1 - failures} agree, {failures} differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
