"""The sandbox drand relay: an HTTP server speaking the drand relay API, for demos and tests.

It serves two chains at the paths a public relay uses (`/chains`, `/{chain_hash}/info`,
`/{chain_hash}/public/latest`, `/{chain_hash}/public/{round}`):

* the sandbox chain (`lottery.drand.SANDBOX`), whose rounds it signs on request with the key
  `sandbox.drand_chain` publishes, and only once their time has come, as a real relay would;
* drand quicknet, from a handful of recorded real rounds (`quicknet_rounds.json`), so the
  production chain's path can be exercised over HTTP without the internet.

Under `/fault/{fault}/...` the same routes misbehave the way a broken or hostile relay does, so a
test names several "relays" on one server: `garbage` (200 with a body that is not a beacon),
`other-round` (a valid beacon of the next round), `bad-signature` (the requested round with the
next round's signature), `error` (500) and `slow` (answers after `--slow-ms`).

Run it as `python -m sandbox.drand_relay --host 127.0.0.1 --port 8200`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from importlib import resources
from typing import Any

import click
from litestar import Litestar, get
from litestar.exceptions import HTTPException, NotFoundException
from litestar.response import Response

from lottery import drand
from sandbox import drand_chain

FAULTS = ("garbage", "other-round", "bad-signature", "error", "slow")
DEFAULT_SLOW_MS = 5000


def _recorded_quicknet() -> dict[int, str]:
    data = json.loads(resources.files("sandbox").joinpath("quicknet_rounds.json").read_text())
    assert data["chain_hash"] == drand.QUICKNET.chain_hash
    return {int(r["round"]): r["signature"] for r in data["rounds"]}


QUICKNET_ROUNDS = _recorded_quicknet()
CHAINS = {drand.SANDBOX.chain_hash: drand.SANDBOX, drand.QUICKNET.chain_hash: drand.QUICKNET}


def _chain(chain_hash: str) -> drand.Chain:
    chain = CHAINS.get(chain_hash)
    if chain is None:
        raise NotFoundException(f"unknown chain {chain_hash[:80]}")
    return chain


def _info(chain: drand.Chain) -> dict[str, Any]:
    return {"public_key": chain.public_key_hex, "period": chain.period_seconds, "genesis_time": chain.genesis_time,
            "hash": chain.chain_hash, "groupHash": chain.genesis_seed_hex, "schemeID": drand.SCHEME,
            "metadata": {"beaconID": chain.beacon_id}}


def _current_round(chain: drand.Chain) -> int:
    if chain is drand.QUICKNET:
        return max(QUICKNET_ROUNDS)
    return max(1, (int(time.time()) - chain.genesis_time) // chain.period_seconds + 1)


def _signature(chain: drand.Chain, round_number: int) -> bytes:
    if chain is drand.QUICKNET:
        recorded = QUICKNET_ROUNDS.get(round_number)
        if recorded is None:
            raise NotFoundException(f"round {round_number} is not among the recorded quicknet rounds")
        return bytes.fromhex(recorded)
    if round_number > _current_round(chain):
        raise NotFoundException("Requested future beacon")
    return drand_chain.sign_round(round_number)


def _another_round(chain: drand.Chain, round_number: int) -> tuple[int, bytes]:
    """A genuine round of the same chain other than `round_number` (a hostile relay's best lie)."""
    if chain is drand.QUICKNET:
        other = next(r for r in sorted(QUICKNET_ROUNDS) if r != round_number)
        return other, bytes.fromhex(QUICKNET_ROUNDS[other])
    return round_number + 1, drand_chain.sign_round(round_number + 1)


def _beacon(round_number: int, signature: bytes) -> dict[str, Any]:
    return {"round": round_number, "randomness": drand.randomness(signature).hex(), "signature": signature.hex()}


def _round_number(raw: str, chain: drand.Chain) -> int:
    if raw == "latest":
        return _current_round(chain)
    if not raw.isdigit() or not 0 < int(raw) < 2**64:
        raise HTTPException(status_code=400, detail="round must be a positive integer")
    return int(raw)


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/chains", sync_to_thread=False)
def chains() -> list[str]:
    return list(CHAINS)


@get("/{chain_hash:str}/info", sync_to_thread=False)
def info(chain_hash: str) -> dict[str, Any]:
    return _info(_chain(chain_hash))


@get("/{chain_hash:str}/public/{round_ref:str}", sync_to_thread=False)
def public_round(chain_hash: str, round_ref: str) -> dict[str, Any]:
    chain = _chain(chain_hash)
    round_number = _round_number(round_ref, chain)
    return _beacon(round_number, _signature(chain, round_number))


@get("/fault/{fault:str}/{chain_hash:str}/public/{round_ref:str}")
async def faulty_round(fault: str, chain_hash: str, round_ref: str, slow_ms: int) -> Response[Any]:
    chain = _chain(chain_hash)
    round_number = _round_number(round_ref, chain)
    if fault == "garbage":
        return Response(b"<html>relay maintenance</html>", media_type="application/json")
    if fault == "error":
        return Response({"error": "internal"}, status_code=500)
    if fault == "other-round":
        return Response(_beacon(*_another_round(chain, round_number)))
    if fault == "bad-signature":
        return Response(_beacon(round_number, _another_round(chain, round_number)[1]))
    if fault == "slow":
        await asyncio.sleep(slow_ms / 1000)
        return Response(_beacon(round_number, _signature(chain, round_number)))
    raise NotFoundException(f"faults are {', '.join(FAULTS)}")


def create_app(slow_ms: int = DEFAULT_SLOW_MS) -> Litestar:
    from litestar.di import Provide

    return Litestar([health, chains, info, public_round, faulty_round],
                    dependencies={"slow_ms": Provide(lambda: slow_ms, sync_to_thread=False)})


async def _serve(host: str, port: int, slow_ms: int) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(create_app(slow_ms), address=host, port=port, interface=Interfaces.ASGI,
                    http=HTTPModes.http1, websockets=False, log_level=LogLevels.warning, log_access=False)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)  # type: ignore[no-untyped-call]
    await server.serve()


@click.command("sandbox-drand-relay")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8200, show_default=True)
@click.option("--slow-ms", type=int, default=DEFAULT_SLOW_MS, show_default=True,
              help="how long the `slow` fault holds an answer")
def main(host: str, port: int, slow_ms: int) -> None:
    """Serve the sandbox drand relay until interrupted."""
    import uvloop

    uvloop.run(_serve(host, port, slow_ms))


if __name__ == "__main__":
    main()
