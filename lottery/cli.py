"""`stimulus draw|approve|beacon|ceremony|worker notifications|worker beacons`: the draw from the command line.

Operator commands identify the operator by their bearer token (`--token` or STIMULUS_TOKEN), so
maker-checker holds on the command line exactly as over HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import asyncpg
import click
import msgspec

from kernel import approvals
from kernel.command_line import (
    echo_json,
    exit_for,
    follow,
    require_operator,
    run,
    run_until_stopped,
    token_option,
    worker_pool,
    worker_settings,
)
from kernel.settings import load_settings
from kernel.signing import SigningKey
from lottery import actions, beacon, campaigns, ceremony, commitment, draw, registrant_list
from lottery.statements import ceremony_commit_statement, ceremony_reveal_statement


@click.group("draw")
def draw_group() -> None:
    """Commit the registrant list, run the draw, export its evidence."""


@draw_group.command("commit")
@click.argument("campaign_id")
@token_option
def draw_commit(campaign_id: str, token: str) -> None:
    """Request the commitment of a closed campaign's list (a second operator approves)."""
    async def go(conn: asyncpg.Connection) -> approvals.Approval:
        maker = await require_operator(conn, token)
        return await approvals.request(conn, actions.COMMIT, campaign_id, {}, maker.actor)
    echo_json(run(go))


@draw_group.command("run")
@click.argument("campaign_id")
@token_option
def draw_run(campaign_id: str, token: str) -> None:
    """Request the draw (a second operator approves with `stimulus approve`)."""
    async def go(conn: asyncpg.Connection) -> approvals.Approval:
        maker = await require_operator(conn, token)
        return await approvals.request(conn, actions.RUN, campaign_id, {}, maker.actor)
    echo_json(run(go))


@draw_group.command("status")
@click.argument("campaign_id")
def draw_status(campaign_id: str) -> None:
    """Campaign state, commitment, ceremony and beacon at a glance."""
    async def go(conn: asyncpg.Connection) -> dict[str, Any]:
        found = await campaigns.fetch(conn, campaign_id)
        out: dict[str, Any] = {"state": found.state,
                               "ceremony": msgspec.to_builtins(await ceremony.ceremony_status(conn, found))}
        if found.state not in ("draft", "open", "closed"):
            out["commitment"] = msgspec.to_builtins(await commitment.fetch_commitment(conn, campaign_id))
        out["beacon"] = await conn.fetchval("SELECT record FROM beacons WHERE campaign_id = $1", campaign_id)
        return out
    echo_json(run(go))


@draw_group.command("bundle")
@click.argument("campaign_id")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def draw_bundle(campaign_id: str, out: Path) -> None:
    """Write the signed proof bundle, byte for byte as published."""
    out.write_bytes(run(lambda conn: draw.signed_bundle(conn, campaign_id)))
    click.echo(f"wrote {out}")


@draw_group.command("registrants")
@click.argument("campaign_id")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), default="csv", show_default=True)
def draw_registrants(campaign_id: str, out: Path, fmt: str) -> None:
    """Write the committed registrant list (ticket, pseudonym, stratum)."""
    line = registrant_list.csv_line if fmt == "csv" else registrant_list.ndjson_line

    async def go(conn: asyncpg.Connection) -> int:
        await commitment.fetch_commitment(conn, campaign_id)
        count = 0
        with out.open("w", encoding="utf-8") as handle:
            if fmt == "csv":
                handle.write(registrant_list.CSV_HEADER + "\n")
            async with conn.transaction(readonly=True):
                async for r in conn.cursor("""SELECT ticket, pseudonym, stratum FROM committed_registrants
                                              WHERE campaign_id = $1 ORDER BY leaf_index""", campaign_id,
                                           prefetch=50_000):
                    handle.write(line(r[0], r[1], r[2]))
                    count += 1
        return count
    click.echo(f"wrote {run(go)} registrants to {out}")


@click.command("approve")
@click.argument("approval_id", type=int)
@token_option
@click.option("--no-wait", is_flag=True, help="answer once the job is queued, without following it")
def approve_command(approval_id: int, token: str, no_wait: bool) -> None:
    """Approve a pending request (commitment, draw, issuance) as a second operator; a jobs worker
    runs it, and this follows its progress until it ends."""
    async def go(conn: asyncpg.Connection) -> tuple[approvals.Approval, Any]:
        checker = await require_operator(conn, token)
        approval = await approvals.approve(conn, approval_id, checker.actor)
        if no_wait or approval.job_id is None:
            return approval, None
        job = await follow(conn, approval.job_id)
        return await approvals.fetch(conn, approval_id), job
    approval, job = run(go)
    echo_json(approval)
    if job is not None:
        exit_for(job)


@click.command("approvals")
@click.option("--status", type=click.Choice(["pending", "approved", "executed", "rejected", "failed"]))
def approvals_command(status: str | None) -> None:
    """List approval requests."""
    echo_json(run(lambda conn: approvals.list_recent(conn, status)))


@click.group("beacon")
def beacon_group() -> None:
    """Record the draw's beacon: fetched from the drand relays, or submitted by hand."""


@beacon_group.command("fetch")
@click.argument("campaign_id")
@click.option("--fallback", is_flag=True, help="the next round, because the declared one never appeared")
@token_option
def beacon_fetch(campaign_id: str, fallback: bool, token: str) -> None:
    """Ask the drand relays (STIMULUS_DRAND_RELAYS) for the campaign's round, verify and record it."""
    settings = load_settings()

    async def go(conn: asyncpg.Connection) -> dict[str, Any]:
        operator = await require_operator(conn, token)
        return await beacon.fetch_and_record(conn, settings, campaign_id, operator.actor, fallback=fallback)
    echo_json(run(go))


@beacon_group.command("submit")
@click.argument("campaign_id")
@click.option("--round", "round_number", type=int, required=True, help="the drand round")
@click.option("--signature", "signature_hex", required=True, help="the round's BLS signature (hex)")
@click.option("--fallback", is_flag=True, help="the next round, because the declared one never appeared")
@token_option
def beacon_submit(campaign_id: str, round_number: int, signature_hex: str, fallback: bool, token: str) -> None:
    """Verify and record a round pasted by hand, for when no relay can be reached."""
    settings = load_settings()

    async def go(conn: asyncpg.Connection) -> dict[str, Any]:
        operator = await require_operator(conn, token)
        kind = (await campaigns.fetch(conn, campaign_id)).beacon.kind
        submission = beacon.BeaconSubmission(kind=kind, round=round_number, signature_hex=signature_hex,
                                             fallback=fallback)
        return await beacon.record(conn, settings, campaign_id, submission, operator.actor)
    echo_json(run(go))


@click.group("ceremony")
def ceremony_group() -> None:
    """Participant tools: keys, commitments and reveals (sign locally, submit over HTTP)."""


@ceremony_group.command("keygen")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def ceremony_keygen(out: Path) -> None:
    """Create a participant's Ed25519 key (raw seed, hex) and print the public key for the campaign."""
    key = SigningKey.generate()
    out.write_text(key.seed_bytes().hex() + "\n")
    out.chmod(0o600)
    click.echo(json.dumps({"public_key_hex": key.public_bytes.hex(), "key_id": key.key_id}))


def _load_key(path: Path) -> SigningKey:
    return SigningKey.from_seed(bytes.fromhex(path.read_text().strip()))


@ceremony_group.command("commit")
@click.argument("campaign_id")
@click.argument("participant_id")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--secret-out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="where to keep the fresh secret until the reveal")
def ceremony_commit(campaign_id: str, participant_id: str, key_file: Path, secret_out: Path) -> None:
    """Draw a 32-byte secret, keep it, and print the signed commitment request body."""
    secret = secrets.token_bytes(32)
    secret_out.write_text(secret.hex() + "\n")
    secret_out.chmod(0o600)
    commitment_hex = hashlib.sha256(secret).hexdigest()
    signature = _load_key(key_file).sign(ceremony_commit_statement(campaign_id, participant_id, commitment_hex))
    click.echo(json.dumps({"commitment_hex": commitment_hex, "signature_hex": signature.hex()}))


@ceremony_group.command("reveal")
@click.argument("campaign_id")
@click.argument("participant_id")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--secret", "secret_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--root", "root_hex", required=True, help="the committed root, from GET .../commitment")
@click.option("--size", "tree_size", type=int, required=True, help="the committed tree size")
def ceremony_reveal(campaign_id: str, participant_id: str, key_file: Path, secret_file: Path, root_hex: str,
                    tree_size: int) -> None:
    """Print the signed reveal request body, binding the secret to the committed root and size."""
    secret_hex = secret_file.read_text().strip()
    signature = _load_key(key_file).sign(
        ceremony_reveal_statement(campaign_id, participant_id, secret_hex, root_hex, tree_size))
    click.echo(json.dumps({"secret_hex": secret_hex, "signature_hex": signature.hex()}))


@click.command("notifications")
def notifications_worker() -> None:
    """Deliver the notification outbox (sandbox SMS gateway) until interrupted."""
    from lottery import notifications

    settings = worker_settings()

    async def main(stop: asyncio.Event) -> None:
        async with worker_pool(settings, 2) as pool:
            await notifications.run_forever(pool, stop=stop)
    run_until_stopped(main)
    sys.exit(0)


@click.command("beacons")
def beacons_worker() -> None:
    """Fetch each committed campaign's beacon from the drand relays once its round is out."""
    from lottery import beacon_worker

    settings = worker_settings()

    async def main(stop: asyncio.Event) -> None:
        async with worker_pool(settings, 2) as pool:
            await beacon_worker.run_forever(pool, settings, stop=stop)
    run_until_stopped(main)
    sys.exit(0)


commands = [draw_group, approve_command, approvals_command, beacon_group, ceremony_group]
worker_subcommands = [notifications_worker, beacons_worker]
