"""Throughput of the sandbox bank (a measurement, not a test; pytest does not collect it).

    .venv/bin/python -m tests.wallet.bench_sandbox_bank [--seconds 8] [--concurrency 64]

Starts a sandbox bank subprocess on a fresh data dir and drives it from this process with a
raw keep-alive HTTP/1.1 client on uvloop (cheap, so the bank gets most of the CPU), then with
the real `BankClient` (which also verifies every signature). Prints credits/s, latency
percentiles and the CPU each side used; read figures as +-20% on a shared machine.

Measured on the 2-core development machine (3 runs of 6 s, median [range]):

    raw client, 64 connections, 0 ms latency    2,800 [2,670-3,300] credits/s, p99 ~50 ms,
                                                bank 0.9-1.0 core, load generator 0.2 core
    raw client, 64 connections, 20 ms latency   2,000 [1,870-2,070] credits/s (bound by 64
                                                connections / ~30 ms per call)
    raw client, 8 connections x batches of 100  7,900 [7,700-9,200] credits/s, bank 0.85 core
    BankClient, 64 tasks, 0 / 20 ms             ~600 credits/s, bound by the client's own CPU
                                                (~0.9 core: httpx and signature checks)

The bank is bound by its one Python thread (the GIL): about half of it is Ed25519 signing
and granian's ASGI glue. Bulk issuance should use `credit_batch`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psutil
import uvloop

from sandbox.bank import SANDBOX_API_KEY
from tests.wallet.conftest import Admin, RunningBank, credit_request, fast_options, free_port
from wallet_adapter.bank_protocol import BatchCreditRequest
from wallet_adapter.provider import BankClient


@dataclass
class Run:
    name: str
    credits: int
    seconds: float
    latencies_s: list[float]
    statuses: Counter[int]
    bank_cpu_s: float
    bench_cpu_s: float

    def line(self) -> str:
        ordered = sorted(self.latencies_s) or [0.0]
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[int(len(ordered) * 0.99) - 1 if len(ordered) > 1 else 0] * 1000
        return (f"{self.name:<44} {self.credits / self.seconds:>8.0f} credits/s  "
                f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  bank CPU {self.bank_cpu_s / self.seconds:4.2f}"
                f"  bench CPU {self.bench_cpu_s / self.seconds:4.2f}  statuses {dict(self.statuses)}")


async def _raw_worker(port: int, path: bytes, make_body: Callable[[], bytes], per_request: int,
                      stop_at: float, run: Run) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (b"POST " + path + b" HTTP/1.1\r\nHost: bank\r\nAuthorization: Bearer "
            + SANDBOX_API_KEY.encode() + b"\r\nContent-Type: application/json\r\n")
    try:
        while time.monotonic() < stop_at:
            body = make_body()
            started = time.monotonic()
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            response_head = await reader.readuntil(b"\r\n\r\n")
            status = int(response_head[9:12])
            length = 0
            for line in response_head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            run.latencies_s.append(time.monotonic() - started)
            run.statuses[status] += 1
            if status == 200:
                run.credits += per_request
    finally:
        writer.close()


async def raw_run(bank: RunningBank, name: str, seconds: float, concurrency: int,
                  batch: int = 0) -> Run:
    campaign = f"bench-{uuid.uuid4().hex[:8]}"
    counter = itertools.count()

    def single() -> bytes:
        n = next(counter)
        return msgspec.json.encode(credit_request(campaign, f"p{n}", f"W-{n}"))

    def many() -> bytes:
        items = [credit_request(campaign, f"p{n}", f"W-{n}")
                 for n in itertools.islice(counter, batch)]
        return msgspec.json.encode(BatchCreditRequest(items=items))

    path = b"/banks/ICBC/v1/credits" + (b":batch" if batch else b"")
    return await _measure(bank, name, seconds, lambda run, stop_at: [
        _raw_worker(bank.port, path, many if batch else single, batch or 1, stop_at, run)
        for _ in range(concurrency)])


async def client_run(bank: RunningBank, name: str, seconds: float, concurrency: int) -> Run:
    campaign = f"bench-{uuid.uuid4().hex[:8]}"
    counter = itertools.count()
    client = BankClient(bank.url, "ICBC", SANDBOX_API_KEY, bank.public_key,
                        fast_options(max_concurrency=concurrency))

    async def worker(run: Run, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            n = next(counter)
            started = time.monotonic()
            await client.credit(credit_request(campaign, f"p{n}", f"W-{n}"))
            run.latencies_s.append(time.monotonic() - started)
            run.statuses[200] += 1
            run.credits += 1

    try:
        return await _measure(bank, name, seconds,
                              lambda run, stop_at: [worker(run, stop_at)
                                                    for _ in range(concurrency)])
    finally:
        await client.aclose()


async def _measure(bank: RunningBank, name: str, seconds: float,
                   workers: Callable[[Run, float], list[Coroutine[Any, Any, None]]]) -> Run:
    assert bank.process is not None
    server = psutil.Process(bank.process.pid)
    here = psutil.Process()
    warmup = Run(name, 0, 1.0, [], Counter(), 0.0, 0.0)
    await asyncio.gather(*workers(warmup, time.monotonic() + 1.0))
    run = Run(name, 0, seconds, [], Counter(), 0.0, 0.0)
    server_before, here_before = server.cpu_times(), here.cpu_times()
    started = time.monotonic()
    await asyncio.gather(*workers(run, started + seconds))
    run.seconds = time.monotonic() - started
    server_after, here_after = server.cpu_times(), here.cpu_times()
    run.bank_cpu_s = (server_after.user + server_after.system
                      - server_before.user - server_before.system)
    run.bench_cpu_s = (here_after.user + here_after.system
                       - here_before.user - here_before.system)
    return run


async def main(seconds: float, concurrency: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-bank-") as tmp:
        bank = RunningBank(Path(tmp), free_port())
        bank.start()
        admin = Admin(bank)
        try:
            runs = [await raw_run(bank, f"raw, {concurrency} conns, 0 ms", seconds, concurrency)]
            admin.knobs(latency_ms=20)
            runs.append(await raw_run(bank, f"raw, {concurrency} conns, 20 ms", seconds,
                                      concurrency))
            admin.knobs(latency_ms=0)
            runs.append(await raw_run(bank, "raw, 8 conns x batches of 100, 0 ms", seconds, 8,
                                      batch=100))
            runs.append(await client_run(bank, f"BankClient, {concurrency} tasks, 0 ms",
                                         seconds, concurrency))
            admin.knobs(latency_ms=20)
            runs.append(await client_run(bank, f"BankClient, {concurrency} tasks, 20 ms",
                                         seconds, concurrency))
            async with BankClient(bank.url, "ICBC", SANDBOX_API_KEY, bank.public_key) as client:
                books = await client.books()
            for run in runs:
                print(run.line())
            print(f"books: {books.credits} credits, double_credits {books.double_credits}")
        finally:
            bank.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    uvloop.run(main(args.seconds, args.concurrency))
