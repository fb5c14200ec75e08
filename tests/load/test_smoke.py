"""Each load scenario, small and short, end to end: set-up, locust, thresholds, the truth checks.

Locust runs as a child process (it monkey-patches with gevent); the set-up and the checks run
here against the session's stack. A scenario whose endpoint this build lacks is skipped with
the endpoint's name.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from loadtests import report
from loadtests.orchestrate import MissingEndpoint, RunRequest, RunResult, execute
from loadtests.scenarios import SCENARIOS
from loadtests.target import Target
from tests.conftest import Stack
from tests.issuance.helpers import start_issuance_processes, start_process, stop_processes
from tests.wallet.conftest import RunningBank
from tests.wallet.conftest import bank as bank  # the session's sandbox bank, as a fixture here


@pytest.fixture(scope="module")
def pipeline(stack: Stack, bank: RunningBank, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """The issuance dispatcher and a worker, as `stimulus up` runs them, crediting the sandbox bank."""
    if importlib.util.find_spec("wallet_adapter.issuance_worker") is None:
        yield None
        return
    workers = start_issuance_processes(stack.database_url, stack.redis_url, stack.settings.state_dir, bank.url,
                                       tmp_path_factory.mktemp("pipeline"))
    try:
        yield bank.url
    finally:
        stop_processes(workers)


@pytest.fixture(scope="module")
def jobs_worker(stack: Stack, bank: RunningBank, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`stimulus worker jobs`, as `stimulus up` runs it: the set-up's approved commitment and draw run there."""
    env = {**os.environ, "DATABASE_URL": stack.database_url, "REDIS_URL": stack.redis_url,
           "STIMULUS_STATE_DIR": str(stack.settings.state_dir), "STIMULUS_ENV": "development",
           "STIMULUS_BANK_URL": bank.url, "STIMULUS_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    worker = start_process("jobs", ["worker", "jobs"], env, tmp_path_factory.mktemp("jobs"))
    try:
        yield
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def target(stack: Stack, api_url: str, operator_token: str, second_operator_token: str,
           pipeline: str | None, jobs_worker: None) -> Target:
    return Target(api_url, stack.settings, pipeline, started_here=False,
                  maker_token=operator_token, checker_token=second_operator_token)


def _explain(result: RunResult) -> str:
    console = Console(record=True, width=160, file=open(os.devnull, "w"))  # noqa: SIM115
    report.print_result(result, console)
    log = result.locust.log_path.read_text()[-3000:]
    return console.export_text() + "\nlocust.log (tail):\n" + log


def _smoke(name: str, target: Target, tmp_path: Path) -> RunResult:
    try:
        result = execute(RunRequest(SCENARIOS[name], profile="smoke", out_dir=tmp_path), target, say=lambda _: None)
    except MissingEndpoint as exc:
        pytest.skip(str(exc))
    assert result.ok, _explain(result)
    assert (result.run_dir / "report.html").exists() and (result.run_dir / "locust_stats.csv").exists()
    return result


def test_result_spike(target: Target, tmp_path: Path) -> None:
    result = _smoke("result-spike", target, tmp_path)
    assert result.acks.seen.get("results_lost"), "some citizens were told they did not win"


def test_claim_rush(target: Target, tmp_path: Path) -> None:
    result = _smoke("claim-rush", target, tmp_path)
    assert result.acks.counts.get("claims_accepted", 0) >= 10
    assert any(t.name == "packets issued == bank credits" and t.ok for t in result.truths)


def test_redemption_steady(target: Target, tmp_path: Path) -> None:
    _smoke("redemption-steady", target, tmp_path)


def test_soak(target: Target, tmp_path: Path) -> None:
    result = _smoke("soak", target, tmp_path)
    assert {"registration", "results", "audit"} <= set(result.plan)


def test_registration_surge_through_the_command(stack: Stack, api_url: str, tmp_path: Path) -> None:
    """`stimulus load` itself, as an operator runs it: exit code, files, verdict."""
    env = {**os.environ, "STIMULUS_ENV": "development", "STIMULUS_STATE_DIR": str(stack.settings.state_dir),
           "DATABASE_URL": stack.database_url, "REDIS_URL": stack.redis_url, "COLUMNS": "160"}
    done = subprocess.run([sys.executable, "-m", "stimulus.cli", "load", "registration-surge", "--profile", "smoke",
                           "--host", api_url, "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ok"] and summary["acknowledged"]["registrations_created"] > 0
    assert "PASS" in done.stderr
    assert not list(run_dir.glob("tokens-*")), "identity tokens are removed after the run"
