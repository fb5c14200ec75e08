"""Thresholds per scenario (loadtests/thresholds.toml) and their evaluation against locust's stats.

A scenario's table holds the run's limits (`max_failure_ratio`, `min_rps` over all requests)
and one table per endpoint, keyed "METHOD name" as the locustfiles name their requests, with
any of `p50_ms`, `p95_ms`, `p99_ms`, `max_failure_ratio`, `min_rps`, `min_requests`. A `smoke`
sub-table holds the same for the short runs of the test suite, whose numbers are too small for
the full run's throughput floors.
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_FILE = Path(__file__).with_name("thresholds.toml")
AGGREGATED = "Aggregated"
RUN_KEYS = ("max_failure_ratio", "min_rps", "min_requests")
ENDPOINT_KEYS = ("p50_ms", "p95_ms", "p99_ms", "max_failure_ratio", "min_rps", "min_requests")
PERCENTILE_COLUMNS = {"p50_ms": "50%", "p95_ms": "95%", "p99_ms": "99%"}


class ThresholdFileError(Exception):
    pass


@dataclass(frozen=True)
class EndpointStats:
    key: str               # "METHOD name", or "Aggregated"
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Check:
    subject: str           # "run" or an endpoint key
    metric: str
    actual: float | None   # None: the endpoint saw no requests
    limit: float
    ok: bool

    @property
    def bound(self) -> str:
        return ">=" if self.metric.startswith("min_") else "<="


def read_stats(path: Path) -> dict[str, EndpointStats]:
    """locust's `_stats.csv`: one row per (method, name) and the aggregate."""
    stats: dict[str, EndpointStats] = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            key = row["Name"] if row["Name"] == AGGREGATED else f"{row['Type']} {row['Name']}"

            def ms(column: str, row: dict[str, str] = row) -> float:
                value = row.get(column, "")
                return float(value) if value not in ("", "N/A") else 0.0

            stats[key] = EndpointStats(key, int(row["Request Count"]), int(row["Failure Count"]),
                                       float(row["Requests/s"] or 0), ms("50%"), ms("95%"), ms("99%"),
                                       ms("Max Response Time"))
    return stats


def load(path: Path, scenario: str, profile: str) -> dict[str, Any]:
    """The limits of `scenario` for `profile` ("full" or "smoke")."""
    with path.open("rb") as fh:
        document = tomllib.load(fh)
    if document.get("version") != 1:
        raise ThresholdFileError(f"{path}: unknown version {document.get('version')!r}")
    table = document.get(scenario)
    if not isinstance(table, dict):
        raise ThresholdFileError(f"{path}: no thresholds for scenario {scenario!r}")
    if profile == "smoke":
        table = table.get("smoke")
        if not isinstance(table, dict):
            raise ThresholdFileError(f"{path}: no smoke thresholds for scenario {scenario!r}")
    limits = {k: v for k, v in table.items() if k != "smoke"}
    for key in limits:
        if key not in (*RUN_KEYS, "endpoints"):
            raise ThresholdFileError(f"{path}: [{scenario}] has unknown key {key!r}")
    for endpoint, values in limits.get("endpoints", {}).items():
        for key in values:
            if key not in ENDPOINT_KEYS:
                raise ThresholdFileError(f"{path}: [{scenario}] endpoint {endpoint!r} has unknown key {key!r}")
    return limits


def _check(subject: str, metric: str, stats: EndpointStats | None, limit: float) -> Check:
    if stats is None:
        return Check(subject, metric, None, limit, False)
    actual = {
        "max_failure_ratio": stats.failure_ratio, "min_rps": stats.rps, "min_requests": stats.requests,
        "p50_ms": stats.p50_ms, "p95_ms": stats.p95_ms, "p99_ms": stats.p99_ms,
    }[metric]
    ok = actual >= limit if metric.startswith("min_") else actual <= limit
    return Check(subject, metric, float(actual), float(limit), ok)


def evaluate(limits: dict[str, Any], stats: dict[str, EndpointStats]) -> list[Check]:
    checks = [_check("run", metric, stats.get(AGGREGATED), limits[metric])
              for metric in RUN_KEYS if metric in limits]
    for endpoint, values in limits.get("endpoints", {}).items():
        found = stats.get(endpoint)
        checks += [_check(endpoint, metric, found, values[metric]) for metric in ENDPOINT_KEYS
                   if metric in values]
    return checks
