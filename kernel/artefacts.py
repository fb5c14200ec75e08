"""Published artefacts: files written once, named by their SHA-256, served from each node's disk.

A published file that never changes once final (the committed registrant list, the signed
bundle) is not re-read from the database per download: that held a pooled connection and
streamed the whole table for every anonymous request. It is written once, in the transaction
that makes it final, as chunked `bytea` rows keyed by the hash of its bytes, and bound to a name
("<campaign>/registrants.csv"). Each API node copies it on first request into its own cache
under the state directory, checks the copy against the hash, and from then on serves it from
disk: no shared filesystem between nodes, and a warm node asks the database nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

CHUNK_BYTES = 1 << 20
READ_BYTES = 1 << 16
NAMES_KEPT = 4096
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
EXTENSIONS = {"text/csv": "csv", "application/x-ndjson": "ndjson", "application/json": "json",
              "application/octet-stream": "bin"}


@dataclass(frozen=True)
class Artefact:
    sha256_hex: str
    size: int
    media_type: str
    path: Path  # this node's verified copy


def file_sha256(path: Path) -> tuple[str, int]:
    """The file's SHA-256 (hex) and size."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def temp_file(folder: Path, prefix: str, data: bytes = b"") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=folder, prefix=prefix)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return Path(name)


def _chunks(sha: bytes, path: Path) -> Iterator[tuple[bytes, int, bytes]]:
    with path.open("rb") as handle:
        number = 0
        while block := handle.read(CHUNK_BYTES):
            yield sha, number, block
            number += 1


async def publish_file(conn: asyncpg.Connection, name: str, path: Path, media_type: str) -> str:
    """Store the file's bytes under their hash (once) and bind `name` to them; returns the hex hash.

    Run it in the transaction that makes the artefact final, so the name exists exactly when the
    thing it names does. Storing bytes that are already stored is a no-op; a name stays bound to
    the first bytes published under it.
    """
    sha_hex, size = await asyncio.to_thread(file_sha256, path)
    sha = bytes.fromhex(sha_hex)
    # A concurrent writer of the same bytes waits on the key here, then finds it present.
    created = await conn.fetchval(
        """INSERT INTO artefacts (sha256, size, media_type) VALUES ($1, $2, $3)
           ON CONFLICT (sha256) DO NOTHING RETURNING true""", sha, size, media_type)
    if created:
        await conn.copy_records_to_table("artefact_chunks", columns=["sha256", "chunk", "data"],
                                         records=_chunks(sha, path))
    await conn.execute("INSERT INTO published_artefacts (name, sha256) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                       name, sha)
    return sha_hex


async def publish_bytes(conn: asyncpg.Connection, name: str, data: bytes, media_type: str, work_dir: Path) -> str:
    path = await asyncio.to_thread(temp_file, work_dir, "artefact-", data)
    try:
        return await publish_file(conn, name, path, media_type)
    finally:
        path.unlink()


class ArtefactCache:
    """This node's copies of published artefacts, under `<state dir>/artefacts/<sha256>.<ext>`.

    A copy is written to a temporary file, checked against its hash and renamed into place, so a
    file under its final name is always whole and right; processes of one node share the folder.
    Names resolved once are remembered: a name never changes what it points to.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._names: dict[str, str] = {}
        self._known: dict[str, Artefact] = {}
        self._filling: dict[str, asyncio.Lock] = {}

    def _on_disk(self, sha_hex: str) -> Artefact | None:
        known = self._known.get(sha_hex)
        if known is not None:
            return known
        for media_type, extension in EXTENSIONS.items():
            path = self.root / f"{sha_hex}.{extension}"
            if path.exists():
                found = Artefact(sha_hex, path.stat().st_size, media_type, path)
                self._known[sha_hex] = found
                return found
        return None

    async def resolve(self, pool: asyncpg.Pool, name: str) -> str | None:
        """The hash a name is bound to, or None while nothing is published under it."""
        sha_hex = self._names.get(name)
        if sha_hex is None:
            sha = await pool.fetchval("SELECT sha256 FROM published_artefacts WHERE name = $1", name)
            if sha is None:
                return None
            if len(self._names) >= NAMES_KEPT:
                self._names.clear()
            sha_hex = self._names[name] = bytes(sha).hex()
        return sha_hex

    async def get(self, pool: asyncpg.Pool, sha_hex: str) -> Artefact | None:
        """This node's copy of the artefact, fetched from the store the first time; None if unknown."""
        found = self._on_disk(sha_hex)
        if found is not None:
            return found
        lock = self._filling.setdefault(sha_hex, asyncio.Lock())
        async with lock:
            found = self._on_disk(sha_hex)
            if found is None:
                found = await self._fill(pool, sha_hex)
        self._filling.pop(sha_hex, None)
        return found

    async def _fill(self, pool: asyncpg.Pool, sha_hex: str) -> Artefact | None:
        sha = bytes.fromhex(sha_hex)
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            row = await conn.fetchrow("SELECT size, media_type FROM artefacts WHERE sha256 = $1", sha)
            if row is None:
                return None
            temporary = await asyncio.to_thread(temp_file, self.root, ".filling-")
            try:
                digest, size = hashlib.sha256(), 0
                with temporary.open("ab") as handle:
                    async for chunk in conn.cursor("SELECT data FROM artefact_chunks WHERE sha256 = $1 ORDER BY chunk",
                                                   sha, prefetch=4):
                        data = bytes(chunk[0])
                        digest.update(data)
                        size += len(data)
                        await asyncio.to_thread(handle.write, data)
                if digest.hexdigest() != sha_hex or size != row["size"]:
                    raise RuntimeError(f"artefact {sha_hex}: the stored chunks do not hash to their name")
                path = self.root / f"{sha_hex}.{EXTENSIONS.get(row['media_type'], 'bin')}"
                temporary.replace(path)
            finally:
                temporary.unlink(missing_ok=True)
        found = Artefact(sha_hex, size, row["media_type"], path)
        self._known[sha_hex] = found
        return found


_caches: dict[Path, ArtefactCache] = {}


def node_cache(state_dir: Path) -> ArtefactCache:
    """This process's view of its node's cache (one per state directory)."""
    cache = _caches.get(state_dir)
    if cache is None:
        cache = _caches[state_dir] = ArtefactCache(state_dir / "artefacts")
    return cache
