"""Answering for a published artefact over HTTP: strong ETag, If-None-Match, one byte range.

The ETag is the artefact's SHA-256, so it is the same on every node and never goes stale; a CDN
or the load balancer may keep the bytes forever (`immutable`) under the content-addressed URL.
One range is served as 206; several ranges get the whole body (RFC 9110 allows it), an
unsatisfiable one gets 416 with the size. Bodies are read from this node's disk in blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from litestar import Response
from litestar.response import Stream

from kernel.artefacts import Artefact

IMMUTABLE = "public, max-age=31536000, immutable"
# A name (a campaign's list) may still be unpublished a moment before, so caches revalidate it.
REVALIDATE = "public, no-cache"
BLOCK = 1 << 20


def etag(artefact: Artefact) -> str:
    return f'"{artefact.sha256_hex}"'


def _matches(if_none_match: str, tag: str) -> bool:
    candidates = [c.strip() for c in if_none_match.split(",")]
    return "*" in candidates or any(c.removeprefix("W/") == tag for c in candidates)


def byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(first, last) inclusive for one satisfiable range; None to send everything (no range, several
    ranges, a malformed one); "unsatisfiable" for a range wholly past the end."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash:
        return None
    if not first_text:  # a suffix: the last N bytes
        if not last_text.isdigit():
            return None
        length = int(last_text)
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(size - length, 0), size - 1
    if not first_text.isdigit() or (last_text and not last_text.isdigit()):
        return None
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size:
        return "unsatisfiable"
    if last < first:
        return None
    return first, min(last, size - 1)


async def _blocks(path: Path, first: int, length: int) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(handle.seek, first)
        while length > 0:
            block = await asyncio.to_thread(handle.read, min(BLOCK, length))
            if not block:
                break
            length -= len(block)
            yield block
    finally:
        handle.close()


def respond(artefact: Artefact, request_headers: Mapping[str, str], cache_control: str,
            headers: Mapping[str, str] | None = None) -> Response[bytes] | Stream:
    tag = etag(artefact)
    common = {"ETag": tag, "Cache-Control": cache_control, "Accept-Ranges": "bytes", **(headers or {})}
    if_none_match = request_headers.get("if-none-match")
    if if_none_match is not None and _matches(if_none_match, tag):
        return Response(b"", status_code=304, headers=common)
    size = artefact.size
    wanted: tuple[int, int] | str | None = None
    range_header = request_headers.get("range")
    if_range = request_headers.get("if-range")
    if range_header is not None and (if_range is None or if_range.strip() == tag):
        wanted = byte_range(range_header, size)
    if wanted == "unsatisfiable":
        return Response(b"", status_code=416, headers={**common, "Content-Range": f"bytes */{size}"})
    if isinstance(wanted, tuple):
        first, last = wanted
        return Stream(_blocks(artefact.path, first, last - first + 1), status_code=206, media_type=artefact.media_type,
                      headers={**common, "Content-Range": f"bytes {first}-{last}/{size}",
                               "Content-Length": str(last - first + 1)})
    return Stream(_blocks(artefact.path, 0, size), media_type=artefact.media_type,
                  headers={**common, "Content-Length": str(size)})
