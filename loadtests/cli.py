"""`stimulus load SCENARIO`: a bounded, headless locust run with set-up, thresholds and truth checks.

Mounted on `stimulus` by stimulus.cli. Nothing here imports locust: it runs as a child process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console

from loadtests.scenarios import SCENARIOS

# Tables are wide; when the output is not a terminal, do not fold them to 80 columns.
console = Console(stderr=True, width=None if sys.stderr.isatty() else int(os.environ.get("COLUMNS", 160)))


def _say(line: str) -> None:
    console.print(line, highlight=False)


@click.command("load")
@click.argument("scenario", type=click.Choice(sorted(SCENARIOS)), required=False)
@click.option("--list", "list_only", is_flag=True, help="list the scenarios and exit")
@click.option("--users", type=click.IntRange(1, 100_000), help="peak simulated users")
@click.option("--duration", "duration_s", type=click.IntRange(1, 24 * 3600), help="run time in seconds")
@click.option("--host", help="API base URL (default: the running `stimulus up`, else a stack started for the run)")
@click.option("--fresh-stack", is_flag=True, help="start a stack for the run even if one is running")
@click.option("--profile", type=click.Choice(["full", "smoke"]), default="full", show_default=True,
              help="scale and thresholds: the full run or the short smoke run")
@click.option("--citizens", type=click.IntRange(1), help="fresh identities for registration")
@click.option("--registrants", type=click.IntRange(1), help="citizens registered and drawn before the run")
@click.option("--winners", type=click.IntRange(1), help="winners among them (claims)")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="locust processes on this machine")
@click.option("--master", is_flag=True, help="run the locust master only; workers connect to it")
@click.option("--expect-workers", type=click.IntRange(1), default=1, show_default=True,
              help="with --master: worker processes to wait for")
@click.option("--master-bind-port", type=int, default=5557, show_default=True)
@click.option("--worker", is_flag=True, help="run a locust worker for a prepared plan (with --plan)")
@click.option("--master-host", default="127.0.0.1", show_default=True, help="with --worker")
@click.option("--master-port", type=int, default=5557, show_default=True, help="with --worker")
@click.option("--plan", "plan_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="with --worker: the plan.json of the master's run directory (copied with its tokens)")
@click.option("--generators", type=click.IntRange(1), help="with --worker: total worker processes")
@click.option("--thresholds", "thresholds_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="where run directories go (default: <state dir>/load)")
@click.option("--keep-tokens", is_flag=True, help="keep the identity token files after the run")
def load_command(scenario: str | None, list_only: bool, users: int | None, duration_s: int | None,
                 host: str | None, fresh_stack: bool, profile: str, citizens: int | None,
                 registrants: int | None, winners: int | None, processes: int, master: bool,
                 expect_workers: int, master_bind_port: int, worker: bool, master_host: str,
                 master_port: int, plan_path: Path | None, generators: int | None,
                 thresholds_path: Path | None, out_dir: Path | None, keep_tokens: bool) -> None:
    """Run a load SCENARIO headless, bounded in users and time, then check thresholds and truth.

    Exits 0 when every threshold and check holds, 1 when one misses, 2 when the scenario cannot
    run against this build (an endpoint it drives is missing).
    """
    if list_only or scenario is None:
        for s in SCENARIOS.values():
            click.echo(f"{s.name:<20} {s.full.users:>6,} users {s.full.duration_s:>6,} s   {s.summary}")
        return
    chosen = SCENARIOS[scenario]
    if worker:
        sys.exit(_worker(chosen.path, master_host, master_port, plan_path, generators))
    from loadtests import orchestrate, report, thresholds
    from loadtests.prepare import SetupError
    from loadtests.target import TargetError, attach

    request = orchestrate.RunRequest(
        chosen, profile=profile, thresholds_path=thresholds_path or thresholds.DEFAULT_FILE,
        out_dir=out_dir, processes=processes, master=master,
        expect_workers=expect_workers if master else 0, master_bind_port=master_bind_port,
        keep_tokens=keep_tokens or master)
    base = chosen.smoke if profile == "smoke" else chosen.full
    overrides = {k: v for k, v in {"users": users, "duration_s": duration_s, "citizens": citizens,
                                   "registrants": registrants, "winners": winners}.items() if v is not None}
    request.scale = replace(base, **overrides)
    if master:
        _say(f"master: waiting for {expect_workers} worker process(es) once the plan is ready; start each with\n"
             f"  stimulus load {scenario} --worker --master-host <this host> --plan <run dir>/plan.json "
             f"--generators {expect_workers}")
    try:
        with attach(host, fresh=fresh_stack) as target:
            result = orchestrate.execute(request, target, _say)
    except orchestrate.MissingEndpoint as exc:
        _say(f"[red]{exc}")
        sys.exit(2)
    except (TargetError, SetupError, thresholds.ThresholdFileError) as exc:
        raise click.ClickException(str(exc)) from exc
    report.print_result(result, console)
    sys.exit(0 if result.ok else 1)


def _worker(locustfile: Path, master_host: str, master_port: int, plan_path: Path | None,
            generators: int | None) -> int:
    from loadtests.orchestrate import PLAN_ENV
    from loadtests.runner import run_worker

    if plan_path is None:
        raise click.UsageError("--worker needs --plan: the plan.json of the master's run")
    env = {**os.environ, PLAN_ENV: str(plan_path.resolve())}
    if generators is not None:
        env["STIMULUS_LOAD_GENERATORS"] = str(generators)
    return run_worker(locustfile, master_host, master_port, env)


commands = [load_command]
