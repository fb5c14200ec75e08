"""`stimulus merchant ...` and `stimulus campaign accept`, mounted by stimulus.cli.

    stimulus merchant create --id ID --name N --category MCC --district D --account A --token T
    stimulus merchant import FILE --keys-out KEYS.csv --token T   all of the file or none of it
    stimulus merchant suspend|activate ID --token T [--reason R]
    stimulus merchant list [--status S] [--district D] [--category MCC] [--after ID] [--limit N]
    stimulus merchant show ID
    stimulus campaign accept CAMPAIGN --category MCC ... --district D ... --token T
    stimulus campaign acceptance CAMPAIGN

Private keys are shown once: `create` prints the seed (or writes it to `--key-out`), `import`
writes them to the file the operator names, which must not exist yet and is created readable by
its owner only, before the merchants are committed (a failed write stores no merchant).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import click

from kernel.command_line import (
    domain_errors_refused,
    echo_json,
    require_operator,
    run_db,
    token_option,
)
from merchants import csv_import, reconcile_cli, registry, report_cli
from merchants.registry import Acceptance, IssuedKey, MerchantSpec


def _run(fn: Any) -> Any:
    return _run_check(lambda: run_db(fn))


def _run_check(fn: Any) -> Any:
    with domain_errors_refused(), _bad_lines_listed():
        return fn()


@contextmanager
def _bad_lines_listed() -> Iterator[None]:
    """A refused import lists its bad lines before the command fails with its code."""
    try:
        yield
    except csv_import.ImportRefused as exc:
        for error in exc.extra.get("errors", []):
            click.echo(f"line {error['line']}: {error['error']}", err=True)
        raise


def _create_private(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise click.ClickException(f"{path} exists; keys are written once, to a new file") from exc


def _write_all(fd: int, text: str) -> None:
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


@click.group("merchant")
def merchant_group() -> None:
    """Register, import, suspend and list merchants."""


@merchant_group.command("create")
@click.option("--id", "merchant_id", required=True)
@click.option("--name", required=True)
@click.option("--category", required=True, help="four-digit merchant category code (MCC)")
@click.option("--district", required=True)
@click.option("--account", "settlement_account", required=True, help="settlement account")
@click.option("--key-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the private key seed here (a new file) instead of printing it")
@token_option
def merchant_create(merchant_id: str, name: str, category: str, district: str, settlement_account: str,
                    key_out: Path | None, token: str) -> None:
    """Register one merchant; its private key seed (hex) is shown this once."""
    spec = MerchantSpec(merchant_id, name, category, district, settlement_account)
    fd = _create_private(key_out) if key_out else None

    async def go(conn: asyncpg.Connection) -> tuple[registry.Merchant, IssuedKey]:
        return await registry.create(conn, spec, (await require_operator(conn, token)).actor)

    try:
        merchant, key = _run(go)
    except BaseException:
        if fd is not None and key_out is not None:
            os.close(fd)
            key_out.unlink()
        raise
    echo_json(registry.view(merchant))
    if fd is not None:
        _write_all(fd, key.private_key_seed_hex + "\n")
        click.echo(f"private key seed written to {key_out}", err=True)
    else:
        click.echo(f"private key seed (shown once): {key.private_key_seed_hex}")


@merchant_group.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--keys-out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="a new file for merchant_id,key_id,private_key_seed_hex (mode 0600)")
@token_option
def merchant_import(csv_file: Path, keys_out: Path, token: str) -> None:
    """Register every merchant in a CSV file (id,name,category,district,settlement_account) or none."""
    raw = csv_file.read_bytes()
    _run_check(lambda: csv_import.parse(raw))  # refuse a bad file before any key file exists
    fd = _create_private(keys_out)
    written = {"done": False}

    async def write_keys(keys: list[IssuedKey]) -> None:
        lines = ["merchant_id,key_id,private_key_seed_hex", *(f"{k.merchant_id},{k.key_id},"
                                                              f"{k.private_key_seed_hex}" for k in keys)]
        await asyncio.to_thread(_write_all, fd, "\n".join(lines) + "\n")
        written["done"] = True

    async def go(conn: asyncpg.Connection) -> csv_import.ImportResult:
        actor = (await require_operator(conn, token)).actor
        return await csv_import.import_merchants(conn, raw, actor, before_commit=write_keys)

    try:
        result = _run(go)
    except BaseException:
        if not written["done"]:
            os.close(fd)
        keys_out.unlink(missing_ok=True)
        raise
    click.echo(f"imported {result.imported} merchants (file sha256 {result.file_sha256}); "
               f"keys written to {keys_out}")


def _status_command(name: str, status: str, help_text: str) -> click.Command:
    @merchant_group.command(name, help=help_text)
    @click.argument("merchant_id")
    @click.option("--reason", default="", help="recorded in the audit log")
    @token_option
    def command(merchant_id: str, reason: str, token: str) -> None:
        async def go(conn: asyncpg.Connection) -> registry.Merchant:
            actor = (await require_operator(conn, token)).actor
            return await registry.set_status(conn, merchant_id, status, actor, reason)
        merchant = _run(go)
        click.echo(f"{merchant.id}: {merchant.status}")

    return command


_status_command("suspend", registry.SUSPENDED, "Suspend a merchant: its signed requests are refused.")
_status_command("activate", registry.ACTIVE, "Re-activate a suspended merchant.")


@merchant_group.command("list")
@click.option("--status", type=click.Choice(registry.STATUSES), default=None)
@click.option("--district", default=None)
@click.option("--category", default=None)
@click.option("--after", default="", help="list ids after this one (paging)")
@click.option("--limit", type=click.IntRange(1, registry.MAX_PAGE), default=100, show_default=True)
def merchant_list(status: str | None, district: str | None, category: str | None, after: str, limit: int) -> None:
    """Merchants in id order, one per line: id, status, category, district, name."""
    found = _run(lambda conn: registry.list_page(conn, after=after, limit=limit, status=status,
                                                 district=district, category=category))
    for m in found:
        click.echo(f"{m.id}\t{m.status}\t{m.category}\t{m.district}\t{m.name}")


@merchant_group.command("show")
@click.argument("merchant_id")
def merchant_show(merchant_id: str) -> None:
    """One merchant as JSON (its public key, never a private one)."""
    echo_json(registry.view(_run(lambda conn: registry.fetch(conn, merchant_id))))


@click.command("accept")
@click.argument("campaign_id")
@click.option("--category", "categories", multiple=True, help="an accepted MCC (repeat for more)")
@click.option("--district", "districts", multiple=True, help="an accepted district (repeat for more)")
@click.option("--any", "anywhere", is_flag=True, help="clear the rules: every merchant accepts the packets")
@token_option
def campaign_accept(campaign_id: str, categories: tuple[str, ...], districts: tuple[str, ...],
                    anywhere: bool, token: str) -> None:
    """Set where the campaign's packets may be spent (replaces the rules; no --category: any category)."""
    if anywhere == bool(categories or districts):
        raise click.UsageError("give --category/--district values, or --any")
    rules = Acceptance(list(categories), list(districts))

    async def go(conn: asyncpg.Connection) -> Acceptance:
        actor = (await require_operator(conn, token)).actor
        return await registry.set_acceptance(conn, campaign_id, rules, actor)
    echo_json(_run(go))


@click.command("acceptance")
@click.argument("campaign_id")
def campaign_acceptance(campaign_id: str) -> None:
    """Show where the campaign's packets may be spent (empty lists: anywhere)."""
    echo_json(_run(lambda conn: registry.acceptance(conn, campaign_id)))


commands = [merchant_group, *report_cli.commands, *reconcile_cli.commands]
worker_subcommands = reconcile_cli.worker_subcommands
campaign_subcommands = [campaign_accept, campaign_acceptance]
