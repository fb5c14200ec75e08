"""The demo end to end at a small size: it must keep running as the parts under it change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stimulus.demo import run_demo


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="the demo runs its own embedded stack")
def test_demo_runs_a_whole_campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(citizens=300, state_dir=tmp_path / "demo") == 0
    out = capsys.readouterr().out
    assert "stimulus-verify" in out and "PASS" in out
    assert "stimulus audit ledger: clean" in out
    assert (tmp_path / "demo" / "published").is_dir()
    # The summary table wraps long cells: read it without its borders.
    assert "all seeded breaks found, no false ones" in " ".join(out.replace("│", " ").split())
    reports = list((tmp_path / "demo" / "published").glob("report-*.html"))
    assert len(reports) == 1 and "<svg" in reports[0].read_text()
