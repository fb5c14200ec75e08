"""The draw's published files, written once when final: the registrant list and the signed bundle.

The list (CSV and NDJSON, the bytes docs/draw-spec.md §12 pins) is written in the commitment's
transaction, the bundle in the draw's: each is stored content-addressed (kernel.artefacts) and
named after its campaign, so downloads are served from the API nodes' disks, not re-queried.
A campaign committed or drawn before these were stored gets them on its first download.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from kernel import artefacts
from lottery import registrant_list

FORMATS = {"ndjson": "application/x-ndjson", "csv": "text/csv"}
LIST_BATCH = 20_000
_LIST_QUERY = """SELECT ticket, pseudonym, stratum FROM committed_registrants WHERE campaign_id = $1
                 ORDER BY leaf_index"""


def list_name(campaign_id: str, format: str) -> str:
    return f"{campaign_id}/registrants.{format}"


def bundle_name(campaign_id: str) -> str:
    return f"{campaign_id}/bundle.json"


async def publish_lists(conn: asyncpg.Connection, work_dir: Path, campaign_id: str) -> dict[str, str]:
    """Write the committed list in both spellings from one pass over it; returns format -> SHA-256 hex.
    Needs a transaction (the cursor), normally the commitment's own."""
    paths = {format: await asyncio.to_thread(artefacts.temp_file, work_dir, f"list-{format}-") for format in FORMATS}
    try:
        with paths["csv"].open("wb") as csv_file, paths["ndjson"].open("wb") as ndjson_file:
            csv_file.write((registrant_list.CSV_HEADER + "\n").encode())
            csv_lines: list[str] = []
            ndjson_lines: list[str] = []

            def flush() -> None:
                csv_file.write("".join(csv_lines).encode())
                ndjson_file.write("".join(ndjson_lines).encode())
            async for r in conn.cursor(_LIST_QUERY, campaign_id, prefetch=LIST_BATCH):
                csv_lines.append(registrant_list.csv_line(r[0], r[1], r[2]))
                ndjson_lines.append(registrant_list.ndjson_line(r[0], r[1], r[2]))
                if len(csv_lines) >= LIST_BATCH:
                    await asyncio.to_thread(flush)
                    csv_lines.clear()
                    ndjson_lines.clear()
            flush()
        return {format: await artefacts.publish_file(conn, list_name(campaign_id, format), path, FORMATS[format])
                for format, path in paths.items()}
    finally:
        for path in paths.values():
            path.unlink()


async def publish_bundle(conn: asyncpg.Connection, work_dir: Path, campaign_id: str, signed: bytes) -> str:
    return await artefacts.publish_bytes(conn, bundle_name(campaign_id), signed, "application/json", work_dir)


async def backfill_lists(pool: asyncpg.Pool, work_dir: Path, campaign_id: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await publish_lists(conn, work_dir, campaign_id)


async def backfill_bundle(pool: asyncpg.Pool, work_dir: Path, campaign_id: str, signed: bytes) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await publish_bundle(conn, work_dir, campaign_id, signed)
