"""One load run from start to verdict: set-up, locust, thresholds, the system's own truth.

The run's files land in `<state dir>/load/<scenario>-<timestamp>/`: plan.json (what the users
were given), locust's CSV statistics and HTML report, locust.log, and summary.json with every
figure, threshold and check of the verdict.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from loadtests import thresholds, truth
from loadtests.cpu import find_watched
from loadtests.prepare import Preparer
from loadtests.runner import LocustOptions, LocustRun, run_locust
from loadtests.scenarios import Scale, Scenario
from loadtests.target import Target

PLAN_ENV = "STIMULUS_LOAD_PLAN"
SESSION_SECONDS_PER_CITIZEN = 2.0   # a registrant's visit with its pauses, a little faster than average
# After the run, issuance may still be crediting: wait for it, at no less than this rate.
ISSUANCE_WAIT_MIN_S = 60.0
ISSUANCE_FLOOR_PER_S = 100.0


class MissingEndpoint(Exception):
    """The build under test lacks an endpoint the scenario drives."""


@dataclass
class RunRequest:
    scenario: Scenario
    profile: str = "full"               # "full" or "smoke": the scale and the thresholds
    scale: Scale | None = None          # None: the scenario's scale for the profile
    thresholds_path: Path = thresholds.DEFAULT_FILE
    out_dir: Path | None = None
    processes: int = 1
    master: bool = False
    expect_workers: int = 0
    master_bind_port: int = 5557
    keep_tokens: bool = False

    def resolved_scale(self) -> Scale:
        base = self.scale or (self.scenario.smoke if self.profile == "smoke" else self.scenario.full)
        if base.citizens == 0 and "registration" in self.scenario.sections:
            base = replace(base, citizens=max(200, int(base.users * base.duration_s / SESSION_SECONDS_PER_CITIZEN)))
        if base.winners == 0 and base.registrants:
            base = replace(base, winners=max(6, base.registrants // 20))
        return base


@dataclass
class RunResult:
    scenario: str
    run_dir: Path
    scale: Scale
    plan: dict[str, Any]
    locust: LocustRun
    stats: dict[str, thresholds.EndpointStats]
    checks: list[thresholds.Check]
    truths: list[truth.Truth]
    acks: Acknowledged
    skipped_sections: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (all(c.ok for c in self.checks) and all(t.ok for t in self.truths)
                and not self.locust.timed_out)

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "ok": self.ok, "scale": asdict(self.scale),
            "command": self.locust.command, "wall_s": round(self.locust.wall_s, 1),
            "locust_exit_code": self.locust.returncode, "timed_out": self.locust.timed_out,
            "cpu_s": {k: round(v, 1) for k, v in self.locust.cpu_s.items()},
            "endpoints": {k: asdict(v) for k, v in self.stats.items()},
            "thresholds": [asdict(c) for c in self.checks],
            "truth": [asdict(t) for t in self.truths],
            "acknowledged": self.acks.counts,
            "distinct_seen": {k: len(v) for k, v in self.acks.seen.items()}, "skipped_sections": self.skipped_sections,
        }


def run_dir_for(target: Target, scenario: str, out_dir: Path | None) -> Path:
    base = out_dir or target.runs_dir or target.settings.state_dir / "load"
    path = base / f"{scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sections(request: RunRequest, preparer: Preparer) -> tuple[list[str], dict[str, str]]:
    scenario = request.scenario
    if not scenario.needs and not scenario.optional:
        return list(scenario.sections), {}
    offered = preparer.schema_paths()

    def has(endpoint: tuple[str, str]) -> bool:
        method, path = endpoint
        return method in offered.get(path, set())

    missing = [f"{m.upper()} {p}" for m, p in scenario.needs if not has((m, p))]
    if missing:
        raise MissingEndpoint(f"scenario {scenario.name} needs {', '.join(missing)}, which this build "
                              "of the API does not offer (see /schema)")
    skipped = {name: f"{m.upper()} {p} not offered" for name, (m, p) in scenario.optional.items()
               if not has((m, p))}
    return [s for s in scenario.sections if s not in skipped], skipped


def prepare_plan(request: RunRequest, target: Target, run_dir: Path, scale: Scale,
                 say: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, str]]:
    preparer = Preparer(target.base_url, target.settings, target.maker_token, target.checker_token,
                        run_dir, say)
    try:
        sections, skipped = _sections(request, preparer)
        generators = max(1, request.processes, request.expect_workers)
        plan: dict[str, Any] = {"scenario": request.scenario.name, "generators": generators,
                                "acks_file": "acks.json", "host": target.base_url}
        if "registration" in sections:
            plan["registration"] = preparer.registration_section(scale.citizens)
        drawn_sections = {"results", "claims", "audit", "redemptions"} & set(sections)
        if drawn_sections:
            registrants = scale.registrants or scale.winners
            drawn = preparer.drawn_campaign("claims" if "results" not in sections else "results",
                                            registrants, scale.winners)
            if "results" in sections:
                plan["results"] = preparer.results_section(drawn)
            if "audit" in sections:
                plan["audit"] = preparer.audit_section(drawn)
            if "redemptions" in sections:
                # Before the claims section: these winners claim in set-up, the others in the run.
                plan["redemptions"] = preparer.redemptions_section(drawn, scale.merchants, scale.claimed)
            if "claims" in sections:
                # In the claim rush every winner claims within the run; in a mix only some do.
                plan["claims"] = {**preparer.claims_section(drawn, skip=scale.claimed if "redemptions" in sections
                                                            else 0),
                                  "every_winner_claims": request.scenario.name == "claim-rush"}
    finally:
        preparer.close()
    return plan, skipped


@dataclass(frozen=True)
class Acknowledged:
    """What the simulated users were told: counts of acknowledgements, distinct values seen."""

    counts: dict[str, int]
    seen: dict[str, list[int]]

    @classmethod
    def read(cls, path: Path) -> Acknowledged:
        if not path.exists():
            return cls({}, {})
        raw = json.loads(path.read_text())
        return cls({k: int(v) for k, v in raw.get("counts", {}).items()},
                   {k: [int(x) for x in v] for k, v in raw.get("seen", {}).items()})


def check_truth(target: Target, plan: dict[str, Any], acks: Acknowledged) -> list[truth.Truth]:
    found: list[truth.Truth] = []
    db = target.database_url
    if "registration" in plan:
        cid = plan["registration"]["campaign_id"]
        found += truth.run_db(db, lambda conn: truth.registrations(conn, cid, acks.counts))
    drawn = plan.get("results") or plan.get("claims")
    if drawn is not None:
        won, lost = acks.seen.get("results_won", []), acks.seen.get("results_lost", [])
        found += truth.run_db(db, lambda conn: truth.results(conn, drawn["campaign_id"], won, lost))
    if "claims" in plan:
        spec = plan["claims"]
        wait_s = max(ISSUANCE_WAIT_MIN_S, acks.counts.get("claims_accepted", 0) / ISSUANCE_FLOOR_PER_S)
        before = plan["redemptions"]["count"] if plan.get("redemptions", {}).get("campaign_id") == spec["campaign_id"] \
            else 0
        found += truth.claims(db, target.bank_url, spec["banks"], spec["campaign_id"], acks.counts, wait_s,
                              spec["count"] if spec.get("every_winner_claims") else None, before)
    if "redemptions" in plan:
        cid = plan["redemptions"]["campaign_id"]
        found += truth.run_db(db, lambda conn: truth.redemptions(conn, cid, acks.counts))
    campaigns = sorted({s["campaign_id"] for s in plan.values() if isinstance(s, dict) and "campaign_id" in s})
    found += truth.run_db(db, lambda conn: truth.ledger_and_log(conn, campaigns))
    return found


def execute(request: RunRequest, target: Target, say: Callable[[str], None]) -> RunResult:
    scenario = request.scenario
    scale = request.resolved_scale()
    run_dir = run_dir_for(target, scenario.name, request.out_dir)
    say(f"{scenario.name}: {scenario.summary}")
    say(f"target {target.base_url} ({'started for this run' if target.started_here else 'running stack'}); "
        f"files in {run_dir}")
    plan, skipped = prepare_plan(request, target, run_dir, scale, say)
    for name, why in skipped.items():
        say(f"population {name!r} left out: {why}")
    plan_path = run_dir / "plan.json"
    plan_path.write_text(json.dumps(plan, indent=2))
    options = LocustOptions(scenario.path, target.base_url, scale.users, scale.duration_s, run_dir,
                            plan_path, processes=request.processes, master=request.master,
                            expect_workers=request.expect_workers,
                            master_bind_port=request.master_bind_port)
    say(f"locust: {scale.users:,} peak users for {scale.duration_s} s (shape {scenario.locustfile})")
    env = {**os.environ, PLAN_ENV: str(plan_path), "PYTHONUNBUFFERED": "1"}
    ran = run_locust(options, env, say, find_watched(target.base_url, target.settings, target.supervisor_pid))
    if not ran.stats_path.exists():
        raise RuntimeError(f"locust wrote no statistics (exit {ran.returncode}); see {ran.log_path}")
    stats = thresholds.read_stats(ran.stats_path)
    limits = thresholds.load(request.thresholds_path, scenario.name, request.profile)
    checks = thresholds.evaluate(limits, stats)
    acks = Acknowledged.read(run_dir / "acks.json")
    truths = check_truth(target, plan, acks)
    if not request.keep_tokens:
        for tokens in run_dir.glob("tokens-*.tsv"):
            tokens.unlink()
    result = RunResult(scenario.name, run_dir, scale, plan, ran, stats, checks, truths, acks, skipped)
    (run_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2, default=str))
    return result
