"""`make bench` in smoke mode: a few hundred requests, one run per side, so the benchmark cannot rot.

No thresholds: the machine running the tests is not the one the targets are for. What must hold
is that every endpoint was driven against both apps, that every request made ahead of time was
answered 2xx by both (the bare app answers 401/404/409 when its one statement finds nothing, so
wrong data shows here), and that the report ends with the smallest ratio.
"""

from __future__ import annotations

import pytest

from bench import endpoints, setup


def test_every_endpoint_against_its_bare_contract() -> None:
    try:
        setup.ensure_wrk()
    except SystemExit as exc:
        pytest.skip(str(exc))
    said: list[str] = []
    compared = endpoints.run(endpoints.SMOKE, say=said.append)
    assert [c.endpoint for c in compared] == list(endpoints.ENDPOINTS)
    sizes = {"registration": endpoints.SMOKE.registrations, "result check": endpoints.SMOKE.results,
             "claim": endpoints.SMOKE.claims, "merchant notice": endpoints.SMOKE.notices}
    for c in compared:
        for measured in (*c.ours, *c.bare):
            assert measured.refused == 0, (c.endpoint, measured, said)
            # wrk drops the answers still in flight when it is stopped: at most one per connection
            assert measured.ok >= sizes[c.endpoint] - endpoints.SMOKE.connections, (c.endpoint, measured)
            assert measured.cpu_us > 0 and measured.p99_ms >= measured.p50_ms > 0
        assert c.ratio > 0
    last = endpoints.report(compared).splitlines()[-1]
    assert last == f"ratio = {min(c.ratio for c in compared):.2f}"
