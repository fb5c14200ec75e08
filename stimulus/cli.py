"""The `stimulus` command line: the stack, operator actions, the demo and the benchmarks."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import click
import msgspec

from kernel import audit_log, auth
from kernel.command_line import console, run_db
from kernel.servers import migrate_sync, start_stack
from kernel.settings import ConfigurationError, load_settings
from stimulus.stack import api_command, child_env, prepare_metrics_dir

# Domain packages may add command groups; each module exposes `commands: list[click.Command]`.
DOMAIN_CLI_MODULES = ("stimulus.jobs_cli", "lottery.cli", "wallet_adapter.issuance_cli", "merchants.cli", "loadtests.cli")


class _Main(click.Group):
    """Refuses a command whose configuration is incomplete with the settings' one message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Main)
def main() -> None:
    """stimulus: verifiable digital-currency stimulus distribution."""
    from stimulus import actions

    actions.install()  # operator commands request and approve them


@main.command()
def migrate() -> None:
    """Apply pending database migrations (a no-op when up to date)."""
    stack = start_stack(load_settings(), need_redis=False)
    try:
        applied = migrate_sync(stack.settings)
        console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    finally:
        stack.stop()


@main.command()
@click.option("--port", type=int, default=None, help="where the API listens (default STIMULUS_PORT)")
@click.option("--workers", type=int, default=None, help="server processes (default STIMULUS_WORKERS)")
def serve(port: int | None, workers: int | None) -> None:
    """Run the API on this node, against the PostgreSQL and Redis the settings name.

    One per container or host behind a load balancer; `stimulus up` is the one-machine way.
    """
    settings = load_settings()
    if settings.database_url is None or settings.redis_url is None:
        raise click.ClickException("stimulus serve needs DATABASE_URL and REDIS_URL (or REDIS_SENTINELS); "
                                   "`stimulus up` runs embedded servers on one machine")
    # The server processes share one metrics directory; this node's metrics listener reads it.
    env = child_env(settings, {"PROMETHEUS_MULTIPROC_DIR": str(prepare_metrics_dir(settings))})
    command = api_command(settings, port, workers)
    # Replace this process, so the container's signals reach the server itself.
    os.execve(command[0], command, env)


@main.command()
@click.option("--workers", type=int, default=None, help="API server processes (default STIMULUS_WORKERS)")
@click.option("--port", type=int, default=None)
@click.option("--no-bank", is_flag=True, help="do not start the sandbox operator bank")
def up(workers: int | None, port: int | None, no_bank: bool) -> None:
    """Start PostgreSQL, Redis, migrations, the API, workers and the sandbox servers; Ctrl-C stops all."""
    from stimulus.supervisor import Supervisor

    settings = load_settings()
    supervisor = Supervisor(settings, api_port=port, api_workers=workers, with_bank=not no_bank)
    stop = {"now": False}

    def _stop(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        supervisor.start()
        for line in supervisor.describe():
            console.print(line)
        console.print("[bold]Ctrl-C to stop[/bold]")
        while not stop["now"]:
            supervisor.watch()
            time.sleep(0.5)
    finally:
        console.print("stopping...")
        supervisor.stop()
        console.print("stopped")


@main.group()
def admin() -> None:
    """Operator and auditor tokens."""


DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType[timedelta, Any]):
    """`90s`, `30m`, `12h`, `7d` or plain seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().lower()
        unit = DURATION_UNITS_S.get(text[-1:])
        number = text[:-1] if unit else text
        if not number.isdigit():
            self.fail(f"{value!r} is not a duration like 90s, 30m, 12h or 7d", param, ctx)
        return timedelta(seconds=int(number) * (unit or 1))


@admin.command("create-token")
@click.option("--role", type=click.Choice(list(auth.ROLES)), required=True)
@click.option("--name", default="cli", show_default=True, help="who holds the token")
@click.option("--ttl", type=Duration(), default="12h", show_default=True,
              help=f"how long the token is valid (at most {auth.MAX_TTL.days}d)")
def create_token(role: str, name: str, ttl: timedelta) -> None:
    """Create a bearer token; it is shown once and stored only as a hash."""
    if not timedelta(seconds=1) <= ttl <= auth.MAX_TTL:
        raise click.BadParameter(f"between 1s and {auth.MAX_TTL.days}d", param_hint="--ttl")
    token = run_db(lambda conn: auth.create_token(conn, name, role, ttl))
    click.echo(token)


@admin.command("tokens")
@click.option("--all", "include_inactive", is_flag=True, help="also expired and revoked tokens")
def list_tokens(include_inactive: bool) -> None:
    """List operator and auditor tokens (never the tokens themselves)."""
    records = run_db(lambda conn: auth.list_tokens(conn, include_inactive))
    now = datetime.now(UTC)
    click.echo(f"{'id':>6}  {'name':<20} {'role':<9} {'state':<8} {'created (UTC)':<20} expires (UTC)")
    for record in records:
        click.echo(f"{record.id:>6}  {record.name:<20} {record.role:<9} {record.state(now):<8} "
                   f"{record.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  "
                   f"{record.expires_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}")


@admin.command("revoke")
@click.argument("token_ids", nargs=-1, type=int)
@click.option("--name", default=None, help="revoke every active token of this holder")
@click.option("--by", "actor", default="cli:operator", show_default=True, help="who revokes (audit log)")
def revoke(token_ids: tuple[int, ...], name: str | None, actor: str) -> None:
    """Revoke tokens by id (see `stimulus admin tokens`) or by holder; effective on the next request."""
    if not token_ids and name is None:
        raise click.UsageError("give token ids or --name")
    revoked = run_db(lambda conn: auth.revoke_tokens(conn, actor=actor, ids=list(token_ids), name=name))
    for record in revoked:
        click.echo(f"revoked {record.id} ({record.role} {record.name})")
    if not revoked:
        raise click.ClickException("no active token matched")


@main.group()
def campaign() -> None:
    """Create, open, close and show campaigns."""


@campaign.command("create")
@click.option("--file", "spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sample", "sample_id", help="create a sample campaign with this id")
@click.option("--winners", type=int, default=3000, show_default=True, help="with --sample")
def campaign_create(spec_file: Path | None, sample_id: str | None, winners: int) -> None:
    """Create a campaign from a JSON spec (see docs) or a sample one."""
    from kernel.sample import sample_campaign
    from lottery import campaigns

    if (spec_file is None) == (sample_id is None):
        raise click.UsageError("give exactly one of --file or --sample")
    raw = spec_file.read_bytes() if spec_file else json.dumps(sample_campaign(str(sample_id), winners)).encode()
    try:
        spec = msgspec.json.decode(raw, type=campaigns.CampaignSpec)
    except msgspec.ValidationError as exc:
        raise click.ClickException(f"invalid campaign spec: {exc}") from exc
    created = run_db(lambda conn: campaigns.create(conn, spec, "cli:operator"))
    click.echo(msgspec.json.format(msgspec.json.encode(created)).decode())


def _transition(campaign_id: str, target: str, expected: str) -> None:
    from lottery import campaigns

    updated = run_db(lambda conn: campaigns.transition(conn, campaign_id, target, "cli:operator",
                                                       expected=expected))
    click.echo(f"{updated.id}: {updated.state}")


@campaign.command("open")
@click.argument("campaign_id")
def campaign_open(campaign_id: str) -> None:
    """Open registration (draft -> open)."""
    _transition(campaign_id, "open", "draft")


@campaign.command("close")
@click.argument("campaign_id")
def campaign_close(campaign_id: str) -> None:
    """Close registration (open -> closed)."""
    _transition(campaign_id, "closed", "open")


@campaign.command("show")
@click.argument("campaign_id")
def campaign_show(campaign_id: str) -> None:
    """Show a campaign, its registration count and ledger balances."""
    from kernel import ledger
    from lottery import campaigns, registration_counts

    async def show(conn: asyncpg.Connection) -> dict[str, Any]:
        found = await campaigns.fetch(conn, campaign_id)
        count = await registration_counts.live_count(conn, campaign_id)
        return {"campaign": msgspec.to_builtins(found), "registrations": count,
                "ledger_fen": await ledger.balances(conn, campaign_id)}

    click.echo(json.dumps(run_db(show), indent=2, default=str))


@main.group()
def idp() -> None:
    """The sandbox identity provider."""


@idp.command("token")
@click.option("--citizen", "first", type=int, default=0, help="first synthetic citizen number")
@click.option("--count", type=int, default=1)
@click.option("--ttl", "ttl_s", type=int, default=3600)
def idp_token(first: int, count: int, ttl_s: int) -> None:
    """Print identity tokens for synthetic citizens, one per line, from the running sandbox provider."""
    settings = load_settings()
    if not settings.sandbox:
        raise click.ClickException("the sandbox identity provider exists only with STIMULUS_ENV=development")
    import httpx

    batch = 1000  # the provider's limit per request
    for start in range(first, first + count, batch):
        try:
            response = httpx.post(f"{settings.idp_issuer}/tokens", timeout=30, json={
                "first": start, "count": min(batch, first + count - start),
                "audience": settings.idp_audience, "ttl_s": ttl_s})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise click.ClickException(f"the sandbox identity provider at {settings.idp_issuer} "
                                       f"did not answer ({exc}); is `stimulus up` running?") from exc
        for token in response.json()["tokens"]:
            click.echo(token)


@main.group()
def audit() -> None:
    """Check the audit log and the ledger."""


@audit.command("log")
def audit_log_check() -> None:
    """Verify the audit log's hash chain; exit 1 on the first break."""
    result = run_db(audit_log.verify_chain)
    if result.ok:
        click.echo(f"audit log OK: {result.rows} entries, chain intact")
    else:
        click.echo(f"audit log BROKEN at seq {result.first_break}: {result.reason}")
        sys.exit(1)


@audit.command("ledger")
@click.option("--campaign", "campaign_id", default=None, help="only this campaign's accounts and packets")
def audit_ledger_check(campaign_id: str | None) -> None:
    """Check the ledger's invariants; exit 1 naming every break."""
    from stimulus.ledger_audit import audit as audit_ledger

    breaks = run_db(lambda conn: audit_ledger(conn, campaign_id))
    for found in breaks:
        click.echo(f"BREAK {found.check}: {found.detail}")
    if breaks:
        sys.exit(1)
    click.echo("ledger OK: postings balanced, budgets respected, packet histories match their postings")


@main.command()
@click.option("--citizens", type=click.IntRange(min=200), default=100_000, show_default=True)
@click.option("--serve", is_flag=True, help="keep the stack running after the demo")
def demo(citizens: int, serve: bool) -> None:
    """Run a campaign end to end on the embedded stack."""
    from stimulus.demo import run_demo

    sys.exit(run_demo(citizens=citizens, serve=serve))


@main.group()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Background workers (`stimulus up` runs them; start more for scale-out). With
    STIMULUS_WORKER_HTTP_PORT set, each answers /health, /ready and /metrics on that port."""
    settings = load_settings()
    if settings.worker_http_port and ctx.invoked_subcommand:
        from kernel import worker_listener

        dsn = settings.database_url
        ready = (worker_listener.database_answers(dsn, settings.db_pooler) if dsn else lambda: False)
        worker_listener.start(ctx.invoked_subcommand, settings.metrics_host, settings.worker_http_port, ready)


def _mount_domain_commands() -> None:
    """Domain modules expose `commands` (top-level), `worker_subcommands` (under `worker`) and
    `campaign_subcommands` (under `campaign`)."""
    for name in DOMAIN_CLI_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        for command in getattr(module, "commands", []):
            main.add_command(command)
        for command in getattr(module, "worker_subcommands", []):
            worker.add_command(command)
        for command in getattr(module, "campaign_subcommands", []):
            campaign.add_command(command)


_mount_domain_commands()

if __name__ == "__main__":
    main()
