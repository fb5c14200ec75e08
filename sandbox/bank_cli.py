"""The sandbox operator bank's command line: `python -m sandbox.bank ...`.

Kept apart from `sandbox.bank` so the options can be read without loading the server. Its defaults give a slightly unreliable bank on purpose (20 ms median latency, 1 %
transient errors, 0.5 % commit-then-timeout), so every run of the stack exercises the issuance
workers' recovery paths; pass zeros for a well-behaved one.
"""

from __future__ import annotations

from pathlib import Path

import click

from kernel.settings import DEVELOPMENT_BANK_API_KEY


@click.command("sandbox-bank")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8100, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="where the bank keeps its SQLite books and its signing key")
@click.option("--banks", default="ICBC,CCB,BOC", show_default=True,
              help="comma-separated bank codes served under /banks/{code}/v1")
@click.option("--api-key", envvar="STIMULUS_BANK_API_KEY", default=DEVELOPMENT_BANK_API_KEY,
              show_default=True, help="the bearer key requests must carry")
@click.option("--latency-ms", type=click.FloatRange(0, 60_000), default=20.0, show_default=True,
              help="median added latency (log-normal jitter)")
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="share of requests answered 503 before anything is done")
@click.option("--commit-timeout-rate", type=click.FloatRange(0, 1), default=0.005,
              show_default=True, help="share of writes committed and then answered too late")
@click.option("--hang-ms", type=click.IntRange(0, 600_000), default=30_000, show_default=True,
              help="how long a commit-then-timeout answer is held")
@click.option("--duplicate-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="share of repeated credits answered as fresh (duplicate: false)")
@click.option("--rate-limit", type=click.IntRange(0), default=0, show_default=True,
              help="requests per second per bank above which the bank answers 429 (0: none)")
@click.option("--seed", type=int, default=None, help="seed of the fault dice, for repeatable runs")
def sandbox_bank_command(host: str, port: int, data_dir: Path, banks: str, api_key: str,
                         latency_ms: float, error_rate: float, commit_timeout_rate: float,
                         hang_ms: int, duplicate_rate: float, rate_limit: int,
                         seed: int | None) -> None:
    """Run the sandbox operator bank (a stand-in for the e-CNY operator banks)."""
    import logging

    from sandbox.bank import Knobs, SandboxConfig, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    knobs = Knobs(latency_ms=latency_ms, error_rate=error_rate,
                  commit_timeout_rate=commit_timeout_rate, hang_ms=hang_ms,
                  duplicate_rate=duplicate_rate, rate_limit=rate_limit)
    codes = tuple(code.strip() for code in banks.split(",") if code.strip())
    if not codes:
        raise click.BadParameter("at least one bank code", param_hint="--banks")
    config = SandboxConfig(data_dir=data_dir.resolve(), banks=codes, api_key=api_key,
                           knobs=knobs, seed=seed)
    click.echo(f"sandbox bank on http://{host}:{port} serving {', '.join(codes)}", err=True)
    run(config, host, port)

