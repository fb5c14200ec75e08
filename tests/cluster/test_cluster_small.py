"""The cluster run of `make test-cluster`, smaller: the same harness (tests/cluster/campaign.py)
with 1,000 registrants and the same six faults, in `make test`, judged by the same truth checks.

It starts its own PostgreSQL, PgBouncer, Sentinel group, haproxy and nodes (not the session's),
so the books it audits are its campaign's alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.campaign import FAULTS, run
from tests.cluster.nodes import MissingProgram

REGISTRANTS = 1_000


@pytest.mark.timeout(900)
def test_a_campaign_through_the_cluster_under_six_faults(tmp_path: Path) -> None:
    lines: list[str] = []
    try:
        outcome = run(REGISTRANTS, tmp_path, lines.append)
    except MissingProgram as exc:
        pytest.skip(str(exc))
    report = "\n".join([*lines, *outcome.lines()])
    print(report)
    assert len(outcome.faults) == FAULTS, report
    assert all(f.caught for f in outcome.faults), report
    assert outcome.ok, report
