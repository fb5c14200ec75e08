"""Cheap client-side load for the demo and set-up steps: a lean HTTP/1.1 client.

A general HTTP client spends more CPU per request than our API does to serve it, and on a small
machine the two share cores; this client writes requests and parses responses directly on
keep-alive connections, so most of the machine stays with the server being exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection; requests on it are sequential."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        parts = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        return cls(reader, writer, parts.netloc)

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: Sequence[tuple[str, str]] = ()) -> Reply:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        if body:
            lines.append("Content-Type: application/json")
        lines.extend(f"{k}: {v}" for k, v in headers)
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return Reply(status, await self.reader.readexactly(length) if length else b"")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


# A 503 says "not now": the API gave up on a busy dependency and stored nothing it acknowledged.
# The app tries the same request again, as a citizen's app does, and a registration or claim
# that did land meanwhile answers with what it holds.
UNAVAILABLE_RETRIES = 20
UNAVAILABLE_PAUSE_S = 0.5


async def post_each(base_url: str, path: str, tokens: Sequence[str], body: bytes | Sequence[bytes] = b"{}",
                    concurrency: int = 48, on_reply: Callable[[Reply], None] | None = None) -> list[Reply]:
    """POST to `path` once per bearer token, `concurrency` connections at a time.

    `body` is one body for every request or one per token. A 503 is tried again after a pause."""
    if not isinstance(body, bytes) and len(body) != len(tokens):
        raise ValueError("one body per token")
    replies: list[Reply | None] = [None] * len(tokens)
    position = 0

    async def lane() -> None:
        nonlocal position
        connection = await Connection.open(base_url)
        try:
            while position < len(tokens):
                index = position
                position += 1
                for attempt in range(UNAVAILABLE_RETRIES + 1):
                    reply = await connection.request("POST", path, body if isinstance(body, bytes) else body[index],
                                                     [("Authorization", f"Bearer {tokens[index]}")])
                    if reply.status != 503 or attempt == UNAVAILABLE_RETRIES:
                        break
                    await asyncio.sleep(UNAVAILABLE_PAUSE_S)
                replies[index] = reply
                if on_reply is not None:
                    on_reply(reply)
        finally:
            await connection.close()

    await asyncio.gather(*[lane() for _ in range(min(concurrency, max(1, len(tokens))))])
    return [r for r in replies if r is not None]
