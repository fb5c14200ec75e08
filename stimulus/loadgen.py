"""Cheap client-side load for the demo and set-up steps: tokens made in processes, a lean HTTP/1.1 client.

A general HTTP client spends more CPU per request than our API does to serve it, and on a small
machine the two share cores; this client writes requests and parses responses directly on
keep-alive connections, so most of the machine stays with the server being exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from stimulus.sandbox_idp import synthetic_citizen, token_for
from stimulus.signing import SigningKey


def _tokens(seed: bytes, issuer: str, audience: str, first: int, count: int, ttl_s: int) -> list[str]:
    key = SigningKey.from_seed(seed)
    return [token_for(key, synthetic_citizen(n), issuer=issuer, audience=audience, ttl_s=ttl_s)
            for n in range(first, first + count)]


def make_tokens(key: SigningKey, issuer: str, audience: str, first: int, count: int,
                workers: int = 2, ttl_s: int = 6 * 3600) -> list[str]:
    """Identity tokens for synthetic citizens first..first+count-1, signed in `workers` processes."""
    if count < 2000 or workers <= 1:
        return _tokens(key.seed_bytes(), issuer, audience, first, count, ttl_s)
    step = -(-count // (workers * 4))
    starts = list(range(first, first + count, step))
    with ProcessPoolExecutor(workers) as pool:
        parts = pool.map(_tokens, [key.seed_bytes()] * len(starts), [issuer] * len(starts),
                         [audience] * len(starts), starts,
                         [min(step, first + count - s) for s in starts], [ttl_s] * len(starts))
        return [token for part in parts for token in part]


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


async def post_each(base_url: str, path: str, tokens: Sequence[str], body: bytes | Sequence[bytes] = b"{}",
                    concurrency: int = 48, on_reply: Callable[[Reply], None] | None = None) -> list[Reply]:
    """POST to `path` once per bearer token, `concurrency` connections at a time.

    `body` is one body for every request or one per token."""
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
                reply = await connection.request("POST", path, body if isinstance(body, bytes) else body[index],
                                                 [("Authorization", f"Bearer {tokens[index]}")])
                replies[index] = reply
                if on_reply is not None:
                    on_reply(reply)
        finally:
            await connection.close()

    await asyncio.gather(*[lane() for _ in range(min(concurrency, max(1, len(tokens))))])
    return [r for r in replies if r is not None]
