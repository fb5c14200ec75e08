"""Fetching a drand round from HTTP relays, trusting none of them.

A relay is only a courier: each answer is checked against the pinned chain (the round asked for,
a BLS signature that verifies with the chain's public key) before it is used, so a relay that is
down, slow, broken or lying costs a fall-over to the next one and nothing else. The relays are
asked one at a time, in the configured order, each under its own time limit; the answer names the
relay that gave it, and every refusal before it is kept for the audit log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import msgspec

from lottery import drand

# A drand beacon is ~300 bytes of JSON; anything far larger is not one.
MAX_ANSWER_BYTES = 8 * 1024
DEFAULT_TIMEOUT_S = 5.0


class RoundAnswer(msgspec.Struct, frozen=True):
    """The fields of `GET /{chain}/public/{round}` we read; `randomness` is recomputed, not read."""

    round: int
    signature: str


@dataclass(frozen=True)
class RelayRefusal:
    relay: str
    reason: str


@dataclass(frozen=True)
class VerifiedRound:
    relay: str
    round: int
    signature: bytes
    refusals: tuple[RelayRefusal, ...]


class NoRelayAnswered(Exception):
    """Every relay failed or lied; `refusals` says how, one per relay."""

    def __init__(self, round_number: int, refusals: Sequence[RelayRefusal]) -> None:
        self.refusals = tuple(refusals)
        listed = "; ".join(f"{r.relay}: {r.reason}" for r in refusals) or "no relay is configured"
        super().__init__(f"no relay gave a valid round {round_number}: {listed}")


async def fetch_round(relays: Sequence[str], chain: drand.Chain, round_number: int,
                      timeout_s: float = DEFAULT_TIMEOUT_S, client: httpx.AsyncClient | None = None) -> VerifiedRound:
    """Round `round_number` of `chain`, from the first relay whose answer verifies."""
    refusals: list[RelayRefusal] = []
    async with _client(client) as http:
        for relay in relays:
            try:
                async with asyncio.timeout(timeout_s):
                    signature = await _ask(http, relay, chain, round_number, timeout_s)
            except TimeoutError:
                refusals.append(RelayRefusal(relay, f"no answer within {timeout_s:g} s"))
                continue
            except httpx.HTTPError as exc:
                refusals.append(RelayRefusal(relay, f"{type(exc).__name__}: {exc}"))
                continue
            except _Refused as exc:
                refusals.append(RelayRefusal(relay, str(exc)))
                continue
            # Outside the relay's time limit: the check is our CPU's time (pure Python, under a
            # second), not the relay's, and runs off the event loop.
            if not await asyncio.to_thread(drand.verify_round, round_number, signature, chain.public_key_hex):
                refusals.append(RelayRefusal(relay, "the signature does not verify against the chain's public key"))
                continue
            return VerifiedRound(relay, round_number, signature, tuple(refusals))
    raise NoRelayAnswered(round_number, refusals)


class _Refused(Exception):
    pass


class _client:
    """The caller's client, or one of our own for the duration of a fetch."""

    def __init__(self, given: httpx.AsyncClient | None) -> None:
        self.given = given
        self.owned: httpx.AsyncClient | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        if self.given is not None:
            return self.given
        self.owned = httpx.AsyncClient(follow_redirects=False)
        return self.owned

    async def __aexit__(self, *exc: object) -> None:
        if self.owned is not None:
            await self.owned.aclose()


async def _ask(http: httpx.AsyncClient, relay: str, chain: drand.Chain, round_number: int,
               timeout_s: float) -> bytes:
    url = f"{relay.rstrip('/')}/{chain.chain_hash}/public/{round_number}"
    async with http.stream("GET", url, timeout=timeout_s) as response:
        if response.status_code != 200:
            raise _Refused(f"HTTP {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise _Refused(f"answer longer than {MAX_ANSWER_BYTES} bytes")
    try:
        answer = msgspec.json.decode(bytes(body), type=RoundAnswer)
        signature = bytes.fromhex(answer.signature)
    except (msgspec.DecodeError, ValueError):
        raise _Refused("the answer is not a drand beacon") from None
    if answer.round != round_number:
        raise _Refused(f"answered round {answer.round}")
    if len(signature) != drand.SIGNATURE_SIZE:
        raise _Refused(f"the signature is not {drand.SIGNATURE_SIZE} bytes")
    return signature
