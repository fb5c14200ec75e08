"""Fixtures for the wallet tests: a real sandbox bank in a subprocess, clients pinned to its key.

One bank serves the whole session (tests keep apart by using their own campaign id, and reset
the knobs they turn); tests that kill the bank start their own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import msgspec
import pytest

from sandbox.bank import SANDBOX_API_KEY
from wallet_adapter.backoff import Backoff
from wallet_adapter.bank_protocol import (
    CreditRequest,
    Restrictions,
    idempotency_key_for,
)
from wallet_adapter.circuit_breaker import BreakerOptions
from wallet_adapter.provider import BankClient, BankClientOptions

AUTH = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
QUIET_KNOBS = ["--latency-ms", "0", "--error-rate", "0", "--commit-timeout-rate", "0",
               "--duplicate-rate", "0", "--rate-limit", "0"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningBank:
    """A sandbox bank subprocess; `start` again on the same data dir and port after a kill."""

    data_dir: Path
    port: int
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    public_key: bytes = b""
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir / "bank.log", "ab")  # noqa: SIM115 - closed in stop/kill
        command = [sys.executable, "-m", "sandbox.bank", "--host", "127.0.0.1",
                   "--port", str(self.port), "--data-dir", str(self.data_dir),
                   "--banks", "ICBC,CCB,BOC", *QUIET_KNOBS, *self.extra_args]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the sandbox bank exited: {self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox bank did not come up: {self.tail()}")
            time.sleep(0.05)
        keys = msgspec.json.decode(httpx.get(self.url + "/keys").content, type=dict[str, str])
        (public_hex,) = keys.values()
        self.public_key = bytes.fromhex(public_hex)

    def tail(self) -> str:
        path = self.data_dir / "bank.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what was answered must already be on disk."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._close_log()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class Admin:
    """The sandbox's admin endpoints: fault knobs and counters."""

    def __init__(self, bank: RunningBank) -> None:
        self.bank = bank

    def knobs(self, **changes: Any) -> dict[str, Any]:
        response = httpx.post(self.bank.url + "/admin/knobs", json=changes, headers=AUTH)
        response.raise_for_status()
        return dict(response.json())

    def stats(self, bank_code: str) -> dict[str, int]:
        response = httpx.get(self.bank.url + "/admin/stats", headers=AUTH)
        response.raise_for_status()
        return dict(response.json()[bank_code])

    def reset(self) -> None:
        self.knobs(reset=True)


@pytest.fixture(scope="session")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBank]:
    running = RunningBank(tmp_path_factory.mktemp("bank"), free_port(), ["--seed", "7"])
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def admin(bank: RunningBank) -> Iterator[Admin]:
    helper = Admin(bank)
    helper.reset()
    try:
        yield helper
    finally:
        helper.reset()


@pytest.fixture
def campaign_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def fast_options(**changes: Any) -> BankClientOptions:
    """Options for tests: short timeouts and backoff, a breaker that opens only when told."""
    base: dict[str, Any] = {
        "timeout_s": 2.0, "connect_timeout_s": 1.0, "max_attempts": 10, "deadline_s": 15.0,
        "backoff": Backoff(0.01, 0.1),
        "breaker": BreakerOptions(consecutive_failures=1000, window_size=1000,
                                  window_min_calls=1000),
    }
    base.update(changes)
    return BankClientOptions(**base)


ClientFactory = Callable[..., BankClient]


@pytest.fixture
async def make_client(bank: RunningBank) -> AsyncIterator[ClientFactory]:
    clients: list[BankClient] = []

    def factory(bank_code: str = "ICBC", *, url: str | None = None,
                public_key: bytes | None = None, **option_changes: Any) -> BankClient:
        client = BankClient(url or bank.url, bank_code, SANDBOX_API_KEY,
                            public_key if public_key is not None else bank.public_key,
                            fast_options(**option_changes))
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        for client in clients:
            await client.aclose()


def credit_request(campaign_id: str, packet_id: str, wallet_id: str = "W-0001",
                   amount_fen: int = 20_000, *, expires_in: timedelta = timedelta(days=10),
                   categories: tuple[str, ...] = ()) -> CreditRequest:
    return CreditRequest(
        idempotency_key=idempotency_key_for(campaign_id, packet_id), wallet_id=wallet_id,
        amount_fen=amount_fen, expires_at=datetime.now(UTC) + expires_in,
        restrictions=Restrictions(merchant_categories=categories, region="luohu"),
        campaign_id=campaign_id, packet_id=packet_id)
