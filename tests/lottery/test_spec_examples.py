"""The draw specification's worked examples are what the code produces, and they verify.

An auditor writes a verifier from docs/draw-spec.md alone, so a spec whose examples drift from
the code misleads exactly the reader it is for.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
SPEC = ROOT / "docs" / "draw-spec.md"
SERVICE_KEY = json.loads((EXAMPLES / "bundle.json").read_text())["public_key_hex"]


def test_the_example_files_are_what_the_code_regenerates(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(EXAMPLES / "make_examples.py"), "--out", str(tmp_path)],
                   check=True, cwd=ROOT, timeout=300)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written, "the example script wrote nothing"
    for name in written:
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), f"docs/examples/{name} is stale"


def test_the_pretty_printed_bundle_in_the_spec_is_the_example_bundle() -> None:
    spec = SPEC.read_text()
    section = spec[spec.index("### 12.3"):spec.index("### 12.4")]
    shown = re.search(r"```json\n(.*?)```", section, re.S)
    assert shown is not None
    assert json.loads(shown.group(1)) == json.loads((EXAMPLES / "bundle.json").read_text())


@pytest.mark.parametrize("bundle", ["bundle.json", "bundle-sandbox.json", "bundle-rfc3797.json"])
def test_every_example_bundle_passes_the_verifier(bundle: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lottery.verify", str(EXAMPLES / bundle),
         "--registrants", str(EXAMPLES / "registrants.csv"), "--service-key", SERVICE_KEY],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("PASS")


def test_the_example_ticket_passes_ticket_mode() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lottery.verify", str(EXAMPLES / "bundle.json"),
         "--proof", str(EXAMPLES / "proof-ticket-4.json"), "--receipt", str(EXAMPLES / "receipt-ticket-4.json"),
         "--service-key", SERVICE_KEY],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ticket 4: WON tier second" in done.stdout
