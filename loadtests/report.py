"""The verdict of a run as tables: per-endpoint figures, thresholds, the system's truth, the CPU split."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from loadtests.orchestrate import RunResult
from loadtests.thresholds import AGGREGATED, Check


def _figure(metric: str, value: float | None) -> str:
    if value is None:
        return "no requests"
    if metric.endswith("_ratio"):
        return f"{value:.4%}"
    if metric.endswith("_ms"):
        return f"{value:,.0f} ms"
    if metric == "min_rps":
        return f"{value:,.1f}/s"
    return f"{value:,.0f}"


def endpoints_table(result: RunResult) -> Table:
    table = Table(title=f"{result.scenario}: requests per endpoint")
    for column in ("endpoint", "requests", "failures", "req/s", "p50", "p95", "p99", "max"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    ordered = sorted(result.stats.values(), key=lambda s: (s.key == AGGREGATED, s.key))
    for s in ordered:
        table.add_row(s.key, f"{s.requests:,}", f"{s.failures:,}", f"{s.rps:,.1f}", f"{s.p50_ms:,.0f}",
                      f"{s.p95_ms:,.0f}", f"{s.p99_ms:,.0f}", f"{s.max_ms:,.0f}",
                      style="bold" if s.key == AGGREGATED else None)
    return table


def thresholds_table(checks: list[Check]) -> Table:
    table = Table(title="thresholds (loadtests/thresholds.toml)")
    for column in ("subject", "metric", "actual", "threshold", ""):
        table.add_column(column)
    for c in checks:
        table.add_row(c.subject, c.metric, _figure(c.metric, c.actual), f"{c.bound} {_figure(c.metric, c.limit)}",
                      "[green]ok" if c.ok else "[red]MISS")
    return table


def truth_table(result: RunResult) -> Table:
    table = Table(title="the system's own truth")
    for column in ("check", "expected", "actual", ""):
        table.add_column(column)
    for t in result.truths:
        table.add_row(t.name, t.expected, t.actual, "[green]ok" if t.ok else "[red]FAIL")
    return table


def cpu_table(result: RunResult) -> Table:
    cpu = result.locust.cpu_s
    wall = max(result.locust.wall_s, 1e-6)
    total = sum(cpu.values()) or 1.0
    requests = max(1, result.stats[AGGREGATED].requests if AGGREGATED in result.stats else 0)
    table = Table(title=f"CPU over {wall:,.0f} s of wall time ({requests:,} requests)")
    for column in ("process group", "CPU seconds", "cores", "share", "ms per request"):
        table.add_column(column, justify="left" if column == "process group" else "right")
    for group, seconds in cpu.items():
        per_request = "" if group == "other" else f"{seconds * 1000 / requests:.2f}"
        table.add_row(group, f"{seconds:,.1f}", f"{seconds / wall:.2f}", f"{seconds / total:.0%}", per_request)
    return table


def print_result(result: RunResult, console: Console) -> None:
    console.print(endpoints_table(result))
    console.print(thresholds_table(result.checks))
    console.print(truth_table(result))
    console.print(cpu_table(result))
    if result.locust.timed_out:
        console.print("[red]locust overran its time bound and was stopped")
    console.print(f"report: {result.run_dir / 'report.html'}   summary: {result.run_dir / 'summary.json'}")
    console.print("[bold green]PASS" if result.ok else "[bold red]FAIL")
