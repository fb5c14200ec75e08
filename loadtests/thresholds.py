"""Thresholds per scenario (loadtests/thresholds.toml) and their evaluation against locust's stats.

A scenario's table holds the run's limits (`max_failure_ratio`, `min_rps` over all requests)
and one table per endpoint, keyed "METHOD name" as the locustfiles name their requests, with
any of `p50_ms`, `p95_ms`, `p99_ms`, `max_failure_ratio`, `min_rps`, `min_requests`. A `smoke`
sub-table holds the same for the short runs of the test suite, whose numbers are too small for
the full run's throughput floors.
"""

from __future__ import annotations

import json
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


def _percentile(histogram: dict[int, int], requests: int, fraction: float) -> float:
    """Locust's own rule over its rounded response-time histogram, so figures match its report."""
    below = int(requests * fraction)
    seen = 0
    for response_ms in sorted(histogram, reverse=True):
        seen += histogram[response_ms]
        if requests - seen <= below:
            return float(response_ms)
    return 0.0


def _entry(key: str, histogram: dict[int, int], requests: int, failures: int, started: float,
           last: float, max_ms: float) -> EndpointStats:
    rps = requests / (last - started) if last > started else 0.0
    return EndpointStats(key, requests, failures, rps, _percentile(histogram, requests, 0.50),
                         _percentile(histogram, requests, 0.95), _percentile(histogram, requests, 0.99),
                         max_ms)


def read_stats(path: Path) -> dict[str, EndpointStats]:
    """Locust's final statistics (`--json-file`), written after the last user stopped; the CSV
    files are periodic snapshots that can miss the requests finished while users stop."""
    stats: dict[str, EndpointStats] = {}
    total: dict[int, int] = {}
    requests = failures = 0
    started, last, max_ms = float("inf"), 0.0, 0.0
    for raw in json.loads(path.read_text()):
        histogram = {int(k): int(v) for k, v in raw["response_times"].items()}
        entry_last = float(raw["last_request_timestamp"] or raw["start_time"])
        key = f"{raw['method']} {raw['name']}"
        stats[key] = _entry(key, histogram, raw["num_requests"], raw["num_failures"], raw["start_time"],
                            entry_last, float(raw["max_response_time"] or 0))
        for k, v in histogram.items():
            total[k] = total.get(k, 0) + v
        requests += raw["num_requests"]
        failures += raw["num_failures"]
        started, last = min(started, raw["start_time"]), max(last, entry_last)
        max_ms = max(max_ms, float(raw["max_response_time"] or 0))
    stats[AGGREGATED] = _entry(AGGREGATED, total, requests, failures, started if requests else 0.0, last, max_ms)
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
