"""`MerchantClient`: what a merchant's till runs to talk to the signed merchant API.

Every request is signed with the merchant's Ed25519 key (`merchants.signing`), with a fresh nonce
and the current time; the body is serialised once and the signature covers exactly those bytes.
Tests, the demo, the load tests and the benches use it, so they exercise the scheme a real
merchant would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
import msgspec

from kernel.signing import SigningKey
from merchants.signing import signed_headers


@dataclass(frozen=True)
class Prepared:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]


class MerchantClient:
    def __init__(self, base_url: str, merchant_id: str, private_key_seed_hex: str, *,
                 timeout_s: float = 30.0, http: httpx.AsyncClient | None = None) -> None:
        self.merchant_id = merchant_id
        self.key = SigningKey.from_seed(bytes.fromhex(private_key_seed_hex))
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout_s)

    async def __aenter__(self) -> MerchantClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    def headers_for(self, method: str, path: str, body: bytes = b"", **overrides: Any) -> dict[str, str]:
        """The signed headers for one request; `timestamp=` / `nonce=` pin them (for tests)."""
        return signed_headers(self.key, self.merchant_id, method, path, body, **overrides)

    def prepare(self, method: str, path: str, payload: Any = None, **overrides: Any) -> Prepared:
        """A signed request ready to send by any HTTP client (valid for the skew window)."""
        body = b"" if payload is None else msgspec.json.encode(payload)
        headers = self.headers_for(method, path, body, **overrides)
        if body:
            headers["Content-Type"] = "application/json"
        return Prepared(method, path, body, headers)

    async def request(self, method: str, path: str, payload: Any = None, **overrides: Any) -> httpx.Response:
        """Sign and send; `path` is the full path with any query string, as signed."""
        prepared = self.prepare(method, path, payload, **overrides)
        return await self.http.request(method, path, content=prepared.body, headers=prepared.headers)

    def redemption(self, merchant_txn_id: str, payment_reference: str, amount_fen: int, occurred_at: datetime,
                   *, bank_reference: str | None = None, basket_fen: int | None = None) -> Prepared:
        """A signed redemption notice, to send now (`redeem`) or later by a leaner client (the bench)."""
        payload: dict[str, Any] = {"merchant_txn_id": merchant_txn_id, "payment_reference": payment_reference,
                                   "amount_fen": amount_fen, "occurred_at": occurred_at}
        if bank_reference is not None:
            payload["bank_reference"] = bank_reference
        if basket_fen is not None:
            payload["basket_fen"] = basket_fen
        return self.prepare("POST", f"{self.base_path}/redemptions", payload)

    @property
    def base_path(self) -> str:
        return f"/v1/merchants/{self.merchant_id}"

    async def redeem(self, merchant_txn_id: str, payment_reference: str, amount_fen: int,
                     occurred_at: datetime, *, bank_reference: str | None = None,
                     basket_fen: int | None = None) -> httpx.Response:
        """A redemption notice: 202 pending (new), 200 (the same again), or a problem."""
        prepared = self.redemption(merchant_txn_id, payment_reference, amount_fen, occurred_at,
                                   bank_reference=bank_reference, basket_fen=basket_fen)
        return await self.http.request("POST", prepared.path, content=prepared.body, headers=prepared.headers)

    async def reverse(self, payment_txn_id: str, merchant_txn_id: str, amount_fen: int,
                      occurred_at: datetime, *, bank_reference: str | None = None) -> httpx.Response:
        """Refund (part of) an earlier payment notice, under the reversal's own txn id."""
        payload: dict[str, Any] = {"merchant_txn_id": merchant_txn_id, "amount_fen": amount_fen,
                                   "occurred_at": occurred_at}
        if bank_reference is not None:
            payload["bank_reference"] = bank_reference
        return await self.request("POST", f"{self.base_path}/redemptions/{payment_txn_id}/reversals", payload)

    async def status(self, merchant_txn_id: str) -> httpx.Response:
        return await self.request("GET", f"{self.base_path}/redemptions/{merchant_txn_id}")

    async def me(self) -> httpx.Response:
        return await self.request("GET", self.base_path)
