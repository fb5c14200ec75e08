"""The operator banks we issue through: their codes, endpoints, pinned keys and one client each.

Codes and URLs come from the settings (`STIMULUS_BANKS`, `STIMULUS_BANK_URL`); each bank's
response-signing key is pinned from `STIMULUS_BANK_PUBLIC_KEYS`. Only in sandbox mode may a
missing key be read from the sandbox bank's `GET /keys` (trust on first use, logged): a real
bank's key is configured out of band, never fetched from the server it is meant to check.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from kernel.settings import Settings
from wallet_adapter.backoff import Backoff
from wallet_adapter.circuit_breaker import BreakerOptions
from wallet_adapter.provider import BankClient, BankClientOptions, fetch_sandbox_public_key

log = logging.getLogger("wallet_adapter.banks")

# Short cool-downs: a bank back from an outage is probed within seconds, not a minute later.
ISSUANCE_BREAKER = BreakerOptions(consecutive_failures=10, window_size=50, window_min_calls=20,
                                  failure_rate=0.5, cool_down_s=2.0, max_cool_down_s=8.0)


def issuance_client_options(concurrency: int = 8, timeout_s: float = 5.0,
                            deadline_s: float = 30.0) -> BankClientOptions:
    """Client options for the issuance path: a few wide calls in flight, a bounded wait each."""
    return BankClientOptions(max_concurrency=concurrency, timeout_s=timeout_s,
                             deadline_s=deadline_s, max_attempts=8,
                             backoff=Backoff(0.05, 1.0), breaker=ISSUANCE_BREAKER)


@dataclass(frozen=True)
class BankEndpoint:
    code: str
    url: str
    public_key: bytes


def configured_codes(settings: Settings) -> tuple[str, ...]:
    return settings.bank_codes


async def resolve_endpoints(settings: Settings) -> list[BankEndpoint]:
    """Every configured bank with its URL and pinned key; raises if one cannot be pinned."""
    endpoints: list[BankEndpoint] = []
    fetched: dict[str, bytes] = {}
    for code in settings.bank_codes:
        url = settings.bank_urls.get(code) or settings.bank_url
        if url is None:
            raise RuntimeError(f"bank {code} has no URL (STIMULUS_BANK_URL or STIMULUS_BANKS)")
        key = settings.bank_public_keys.get(code)
        if key is None:
            if not settings.sandbox:
                raise RuntimeError(f"bank {code} has no pinned key (STIMULUS_BANK_PUBLIC_KEYS)")
            if url not in fetched:
                fetched[url] = await fetch_sandbox_public_key(url)
                log.warning("sandbox: trusting the key %s served by %s", fetched[url].hex()[:16], url)
            key = fetched[url]
        endpoints.append(BankEndpoint(code, url, key))
    return endpoints


class BankRegistry:
    """One `BankClient` per configured bank, for one event loop."""

    def __init__(self, clients: dict[str, BankClient]) -> None:
        self._clients = clients

    @classmethod
    async def open(cls, settings: Settings, options: BankClientOptions | None = None,
                   codes: tuple[str, ...] | None = None) -> BankRegistry:
        api_key = settings.bank_api_key.reveal().decode()
        clients = {
            endpoint.code: BankClient(endpoint.url, endpoint.code, api_key, endpoint.public_key,
                                      options or issuance_client_options())
            for endpoint in await resolve_endpoints(settings)
            if codes is None or endpoint.code in codes
        }
        return cls(clients)

    def client(self, bank_code: str) -> BankClient:
        try:
            return self._clients[bank_code]
        except KeyError:
            raise KeyError(f"no client for bank {bank_code}") from None

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(self._clients)

    def __iter__(self) -> Iterator[BankClient]:
        return iter(self._clients.values())

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
