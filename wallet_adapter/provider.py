"""The client our issuance workers use to call one operator bank (`bank_protocol` over HTTP).

The rule this module exists for: a packet is credited at most once. Every credit carries the
one idempotency key derived from its packet (`idempotency_key_for`); an ambiguous outcome (a
timeout, a dropped connection, any 5xx: the bank may have committed) is resolved by asking the
bank for the credit under that key before anything is sent again. Only the bank's signed
"credit_not_found" allows a re-send; a credit it reports is the result.

Around that: every response body's Ed25519 signature is checked against the bank's pinned key
(`BadSignature` otherwise) and every body must echo what it answers; a semaphore bounds the
calls in flight per bank; failed attempts are retried with capped exponential backoff and full
jitter (429 waits its `Retry-After`), within an attempt budget and a deadline; a circuit breaker
refuses calls at once (`CircuitOpen`) while a bank keeps failing and lets a probe through after
a cool-down.

What a caller gets:
* a result struct (`CreditResult`, `CreditRecord`, ...): done;
* `PermanentFailure(code)`: the bank refused the request for good (unknown or frozen wallet,
  idempotency conflict, overspend...); do not retry it as it is;
* `BankUnavailable` (and its subclass `CircuitOpen`): not now; `outcome_unknown` says whether an
  attempt may have taken effect. Calling `credit` again later with the same request is always
  safe: the bank answers a repeated key with the original credit;
* `BadSignature`, `ProtocolError`, `RequestRejected`: something is wrong with the bank, our
  configuration or our code; alert, do not mark the packet failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TypeVar
from urllib.parse import urlencode

import certifi
import httpx
import msgspec

from kernel.signing import key_id_for, verify_signature
from wallet_adapter.backoff import Backoff
from wallet_adapter.bank_protocol import (
    IDEMPOTENCY_KEY_PATTERN,
    KEY_ID_HEADER,
    MAX_BATCH_ITEMS,
    SIGNATURE_HEADER,
    BatchCreditRequest,
    BatchCreditResponse,
    BatchStatusRequest,
    BatchStatusResponse,
    Books,
    CreditRecord,
    CreditRefused,
    CreditRequest,
    CreditResult,
    Problem,
    ReclaimResult,
    RefundRequest,
    RefundResult,
    SettlementFile,
    SettlementLine,
    SettlementRecord,
    SettlementTrailer,
    SpendRequest,
    SpendResult,
    idempotency_key_for,
)
from wallet_adapter.circuit_breaker import BreakerOpen, BreakerOptions, BreakerState, CircuitBreaker

log = logging.getLogger("wallet_adapter.provider")

T = TypeVar("T")

PERMANENT_STATUSES = frozenset({409, 422})
_KEY_FORMAT = re.compile(IDEMPOTENCY_KEY_PATTERN)


class BankError(Exception):
    """Anything that went wrong talking to a bank; `code` is stable and machine-readable."""

    code: str = "bank_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class PermanentFailure(BankError):
    """The bank refused this request for good (409 / 422 / unknown credit): do not retry it."""

    def __init__(self, code: str, detail: str = "", status: int = 422) -> None:
        super().__init__(f"{code}: {detail}" if detail else code, code=code)
        self.detail = detail
        self.status = status


class BankUnavailable(BankError):
    """The call did not complete now. `outcome_unknown`: an attempt may have taken effect."""

    code = "bank_unavailable"

    def __init__(self, message: str, *, outcome_unknown: bool) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class CircuitOpen(BankUnavailable):
    """The bank's circuit breaker is open: refused without calling the bank."""

    code = "circuit_open"

    def __init__(self, bank_code: str, retry_after_s: float, *, outcome_unknown: bool = False):
        super().__init__(f"circuit for bank {bank_code} is open; probe in {retry_after_s:.2f}s",
                         outcome_unknown=outcome_unknown)
        self.bank_code = bank_code
        self.retry_after_s = retry_after_s


class BadSignature(BankError):
    """A response was not signed by the pinned bank key. If it answered a credit, the credit
    may have happened: treat the outcome as unknown and alert."""

    code = "bad_signature"


class ProtocolError(BankError):
    """A signed response that does not fit the protocol or does not answer what was asked."""

    code = "protocol_error"


class RequestRejected(BankError):
    """A 4xx that is about us, not the packet (bad request, bad API key, unknown bank)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}", code=code)
        self.status = status


class SettlementNotReady(BankError):
    """The bank has no file for that day yet: a temporary condition, ask again later."""

    code = "settlement_not_ready"


@dataclass(frozen=True)
class BankClientOptions:
    max_concurrency: int = 64  # calls in flight to this bank, one connection each
    connect_timeout_s: float = 2.0
    timeout_s: float = 5.0  # read/write/pool: past it an answer counts as lost
    # Failed HTTP calls per operation, failed status queries included; a status query that finds
    # no credit is an answer, not a failure, so a credit makes at most 2 x max_attempts calls.
    max_attempts: int = 8
    deadline_s: float = 30.0  # wall time per operation, sleeps included
    max_retry_after_s: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)
    breaker: BreakerOptions = field(default_factory=BreakerOptions)


class _Transient(Exception):
    """One attempt failed in a way worth retrying; `maybe_applied`: the bank may have acted."""

    def __init__(self, reason: str, *, maybe_applied: bool, retry_after_s: float | None = None,
                 unhealthy: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.maybe_applied = maybe_applied
        self.retry_after_s = retry_after_s
        self.unhealthy = unhealthy  # counts against the bank in the circuit breaker


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes


def _retry_after_s(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


class BankClient:
    """The client of one operator bank (`bank_code`) at `base_url`. Use on one event loop."""

    def __init__(self, base_url: str, bank_code: str, api_key: str, public_key: bytes,
                 options: BankClientOptions | None = None, *,
                 rng: random.Random | None = None) -> None:
        if len(public_key) != 32:
            raise ValueError("public_key must be a raw 32-byte Ed25519 key")
        self.bank_code = bank_code
        self.options = opts = options or BankClientOptions()
        self.public_key = public_key
        self.key_id = key_id_for(public_key)
        self.breaker = CircuitBreaker(f"bank:{bank_code}", opts.breaker)
        self.stats: Counter[str] = Counter()
        self._prefix = f"/banks/{bank_code}/v1"
        self._rng = rng or random.Random()
        # The concurrency limit is a pool of lanes, each an httpx client with one connection:
        # httpx's own pool spends CPU quadratic in its waiting requests and connections (64
        # requests on one 64-connection client: ~100 calls/s here; on 64 lanes: ~1,200/s).
        tls = ssl.create_default_context(cafile=certifi.where())  # loaded once, for all lanes
        self._lanes: asyncio.LifoQueue[httpx.AsyncClient] = asyncio.LifoQueue()
        self._all_lanes = [httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json",
                     "Content-Type": "application/json"},
            timeout=httpx.Timeout(opts.timeout_s, connect=opts.connect_timeout_s),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            verify=tls,
        ) for _ in range(opts.max_concurrency)]
        for lane in self._all_lanes:
            self._lanes.put_nowait(lane)

    async def aclose(self) -> None:
        for lane in self._all_lanes:
            await lane.aclose()

    async def __aenter__(self) -> BankClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def circuit_state(self) -> BreakerState:
        return self.breaker.state

    # -- credits -------------------------------------------------------------------------------

    async def credit(self, request: CreditRequest) -> CreditResult:
        """Credit a packet exactly once; safe to call again with the same request at any time."""
        _check_key(request)
        body = msgspec.json.encode(request)
        deadline = time.monotonic() + self.options.deadline_s
        attempt = 0
        unresolved = False  # an attempt may have credited: ask before sending again
        while True:
            try:
                if unresolved:
                    record = await self._status_once(request.idempotency_key)
                    if record is not None:
                        self.stats["resolved_by_status"] += 1
                        return _result_from_record(request, record)
                    unresolved = False
                reply = await self._attempt("POST", self._prefix + "/credits", body)
                return self._credit_outcome(request, reply)
            except _Transient as exc:
                unresolved = unresolved or exc.maybe_applied
                attempt += 1
                await self._pause(exc, attempt, deadline, "credit", request.idempotency_key,
                                  outcome_unknown=unresolved)
            except CircuitOpen as exc:
                raise CircuitOpen(self.bank_code, exc.retry_after_s,
                                  outcome_unknown=unresolved) from None

    async def credit_batch(self, requests: Sequence[CreditRequest]
                           ) -> list[CreditResult | CreditRefused]:
        """Credit many packets, `MAX_BATCH_ITEMS` per call; results in request order.

        Each item ends as a `CreditResult` or, refused for good, a `CreditRefused`; an ambiguous
        call is resolved by one batch status query, each item judged exactly as `credit` judges one.
        """
        keys = [r.idempotency_key for r in requests]
        if len(set(keys)) != len(keys):
            raise ValueError("a packet appears twice in one batch")
        for request in requests:
            _check_key(request)
        outcomes: dict[str, CreditResult | CreditRefused] = {}
        for start in range(0, len(requests), MAX_BATCH_ITEMS):
            await self._credit_chunk(list(requests[start:start + MAX_BATCH_ITEMS]), outcomes)
        return [outcomes[key] for key in keys]

    async def _credit_chunk(self, chunk: list[CreditRequest],
                            outcomes: dict[str, CreditResult | CreditRefused]) -> None:
        deadline = time.monotonic() + self.options.deadline_s
        attempt = 0
        to_send = chunk
        unknown: list[CreditRequest] = []  # may have been credited: resolve before sending
        while to_send or unknown:
            try:
                if unknown:
                    await self._resolve(unknown, outcomes, to_send)
                    unknown = []
                if to_send:
                    body = msgspec.json.encode(BatchCreditRequest(items=to_send))
                    reply = await self._attempt("POST", self._prefix + "/credits:batch", body)
                    self._batch_outcome(to_send, reply, outcomes)
                    to_send = []
            except _Transient as exc:
                if exc.maybe_applied:
                    unknown, to_send = unknown + to_send, []
                attempt += 1
                await self._pause(exc, attempt, deadline, "credit_batch", f"{len(chunk)} items",
                                  outcome_unknown=bool(unknown))
            except CircuitOpen as exc:
                raise CircuitOpen(self.bank_code, exc.retry_after_s,
                                  outcome_unknown=bool(unknown)) from None

    async def _resolve(self, unknown: list[CreditRequest],
                       outcomes: dict[str, CreditResult | CreditRefused],
                       to_send: list[CreditRequest]) -> None:
        """Ask about the uncertain items in one status query; found ones are done, absent ones
        join `to_send`. A failed query leaves them all uncertain (`_Transient` or `CircuitOpen`)."""
        records = await self._status_many_once([r.idempotency_key for r in unknown])
        for request in unknown:
            record = records[request.idempotency_key]
            if record is None:
                to_send.append(request)
                continue
            self.stats["resolved_by_status"] += 1
            try:
                outcomes[request.idempotency_key] = _result_from_record(request, record)
            except PermanentFailure as exc:
                outcomes[request.idempotency_key] = CreditRefused(
                    idempotency_key=request.idempotency_key, status=exc.status,
                    code=exc.code, detail=exc.detail)

    def _credit_outcome(self, request: CreditRequest, reply: _Reply) -> CreditResult:
        if reply.status == 200:
            result = _decode(reply.body, CreditResult)
            _check_echo(request, result)
            return result
        problem = _problem(reply)
        if reply.status in PERMANENT_STATUSES:
            if problem.idempotency_key != request.idempotency_key:
                raise ProtocolError("a refusal that does not name this credit")
            raise PermanentFailure(problem.code, problem.detail, reply.status)
        raise RequestRejected(reply.status, problem.code, problem.detail)

    def _batch_outcome(self, sent: list[CreditRequest], reply: _Reply,
                       outcomes: dict[str, CreditResult | CreditRefused]) -> None:
        if reply.status != 200:
            problem = _problem(reply)
            raise RequestRejected(reply.status, problem.code, problem.detail)
        results = _decode(reply.body, BatchCreditResponse).results
        if [r.idempotency_key for r in results] != [r.idempotency_key for r in sent]:
            raise ProtocolError("the batch answer does not list the items sent, in order")
        for request, item in zip(sent, results, strict=True):
            if item.result is not None:
                _check_echo(request, item.result)
                outcomes[request.idempotency_key] = item.result
            elif item.error is not None and item.error.status in PERMANENT_STATUSES:
                outcomes[request.idempotency_key] = item.error
            else:
                raise ProtocolError(f"batch item {request.idempotency_key} has no valid outcome")

    # -- other operations (all idempotent at the bank, so plain retries are safe) --------------

    async def status(self, idempotency_key: str) -> CreditRecord | None:
        """The credit under this key, or None if the bank never made it."""
        _check_key_format(idempotency_key)
        return await self._retrying("status", idempotency_key,
                                    lambda: self._status_once(idempotency_key))

    async def reclaim(self, idempotency_key: str) -> ReclaimResult:
        """Take back the unspent balance (at expiry); repeating it answers the same figures."""
        return await self._on_credit(
            idempotency_key, "reclaim", b"", ReclaimResult, idempotency_key, "credit",
            lambda r: r.idempotency_key == idempotency_key)

    async def spend(self, idempotency_key: str, request: SpendRequest) -> SpendResult:
        """Sandbox helper: a citizen pays a merchant from the packet (idempotent by spend id)."""
        return await self._on_credit(
            idempotency_key, "spend", msgspec.json.encode(request), SpendResult, request.spend_id, "spend",
            lambda r: (r.spend_id, r.idempotency_key) == (request.spend_id, idempotency_key))

    async def refund(self, idempotency_key: str, request: RefundRequest) -> RefundResult:
        """A merchant refunds (part of) a spend of the packet (idempotent by refund id)."""
        return await self._on_credit(
            idempotency_key, "refund", msgspec.json.encode(request), RefundResult, request.refund_id, "refund",
            lambda r: (r.refund_id, r.spend_id, r.idempotency_key) == (
                request.refund_id, request.spend_id, idempotency_key))

    async def _on_credit(self, idempotency_key: str, action: str, body: bytes, kind: type[T], subject: str,
                         names: str, echoes: Callable[[T], bool]) -> T:
        """`POST /credits/{key}/{action}`, retried: the bank makes each of these idempotent. An
        answer that does not echo what was asked is a `ProtocolError`."""
        _check_key_format(idempotency_key)
        path = f"{self._prefix}/credits/{idempotency_key}/{action}"

        async def once() -> T:
            result = self._expect(await self._attempt("POST", path, body), kind)
            if not echoes(result):
                raise ProtocolError(f"the {action} answer names another {names}")
            return result
        return await self._retrying(action, subject, once)

    async def settlement(self, settlement_date: date) -> SettlementFile:
        """The bank's settlement file for a day, parsed and checked against its trailer."""
        return self._parse_settlement(await self._settlement_body(settlement_date), settlement_date)

    async def settlement_csv(self, settlement_date: date) -> bytes:
        """The bank's settlement file for a day as CSV, its signature checked; the caller parses
        it (strictly, line by line) and keeps the bytes it was given."""
        return await self._settlement_body(settlement_date, "?format=csv")

    async def _settlement_body(self, settlement_date: date, query: str = "") -> bytes:
        async def once() -> bytes:
            path = f"{self._prefix}/settlements/{settlement_date.isoformat()}{query}"
            reply = await self._attempt("GET", path)
            if reply.status == 404 and _problem(reply).code == "settlement_not_ready":
                raise SettlementNotReady(f"{self.bank_code} has no file for {settlement_date}")
            if reply.status != 200:
                problem = _problem(reply)
                raise RequestRejected(reply.status, problem.code, problem.detail)
            return reply.body
        return await self._retrying("settlement", settlement_date.isoformat(), once)

    async def books(self, campaign_id: str | None = None) -> Books:
        """The bank's own totals (for one campaign if given)."""
        async def once() -> Books:
            path = self._prefix + "/books"
            if campaign_id is not None:
                path += "?" + urlencode({"campaign_id": campaign_id})
            books = self._expect(await self._attempt("GET", path), Books)
            if books.bank_code != self.bank_code or books.campaign_id != campaign_id:
                raise ProtocolError("the books answer is about another bank or campaign")
            return books
        return await self._retrying("books", campaign_id or "*", once)

    # -- machinery -----------------------------------------------------------------------------

    async def _status_once(self, idempotency_key: str) -> CreditRecord | None:
        reply = await self._attempt("GET", f"{self._prefix}/credits/{idempotency_key}")
        if reply.status == 200:
            record = _decode(reply.body, CreditRecord)
            if record.idempotency_key != idempotency_key:
                raise ProtocolError("the status answer names another credit")
            return record
        problem = _problem(reply)
        if reply.status == 404 and problem.code == "credit_not_found":
            if problem.idempotency_key != idempotency_key:
                raise ProtocolError("a credit_not_found that does not name this credit")
            return None
        raise RequestRejected(reply.status, problem.code, problem.detail)

    async def _status_many_once(self, keys: list[str]) -> dict[str, CreditRecord | None]:
        """One batch status query (at most `MAX_BATCH_ITEMS` keys): each key's credit or None."""
        body = msgspec.json.encode(BatchStatusRequest(idempotency_keys=keys))
        reply = await self._attempt("POST", self._prefix + "/credits:status", body)
        if reply.status != 200:
            problem = _problem(reply)
            raise RequestRejected(reply.status, problem.code, problem.detail)
        items = _decode(reply.body, BatchStatusResponse).items
        if [item.idempotency_key for item in items] != keys:
            raise ProtocolError("the status answer does not list the keys asked, in order")
        for item in items:
            if item.record is not None and item.record.idempotency_key != item.idempotency_key:
                raise ProtocolError("the status answer names another credit")
        return {item.idempotency_key: item.record for item in items}

    def _expect(self, reply: _Reply, kind: type[T]) -> T:
        if reply.status == 200:
            return _decode(reply.body, kind)
        problem = _problem(reply)
        if reply.status in PERMANENT_STATUSES or problem.code == "credit_not_found":
            raise PermanentFailure(problem.code, problem.detail, reply.status)
        raise RequestRejected(reply.status, problem.code, problem.detail)

    async def _retrying(self, operation: str, subject: str,
                        once: Callable[[], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self.options.deadline_s
        attempt = 0
        maybe_applied = False
        while True:
            try:
                return await once()
            except _Transient as exc:
                maybe_applied = maybe_applied or exc.maybe_applied
                attempt += 1
                await self._pause(exc, attempt, deadline, operation, subject,
                                  outcome_unknown=maybe_applied)

    async def _pause(self, exc: _Transient, attempt: int, deadline: float, operation: str,
                     subject: str, *, outcome_unknown: bool) -> None:
        """Sleep before the next attempt, or give up with `BankUnavailable`."""
        delay_s = self.options.backoff.delay_s(attempt - 1, self._rng)
        if exc.retry_after_s is not None:
            delay_s = max(delay_s, min(exc.retry_after_s, self.options.max_retry_after_s))
        if attempt >= self.options.max_attempts or time.monotonic() + delay_s > deadline:
            self.stats["gave_up"] += 1
            raise BankUnavailable(
                f"{operation} {subject} at {self.bank_code}: gave up after {attempt} attempts "
                f"({exc.reason})", outcome_unknown=outcome_unknown)
        self.stats["retries"] += 1
        log.info("bank %s %s %s: %s; retry %d in %.3fs", self.bank_code, operation, subject,
                 exc.reason, attempt, delay_s)
        await asyncio.sleep(delay_s)

    async def _attempt(self, method: str, path: str, body: bytes | None = None) -> _Reply:
        """One HTTP call through the concurrency limit and the breaker; verified or `_Transient`."""
        lane = await self._lanes.get()  # LIFO: the most recently used connection is warm
        try:
            try:
                permit = self.breaker.acquire()
            except BreakerOpen as exc:
                self.stats["circuit_open"] += 1
                raise CircuitOpen(self.bank_code, exc.retry_after_s) from None
            verdict: bool | None = None  # None: tells nothing about the bank's health
            try:
                self.stats["attempts"] += 1
                reply = await self._exchange(lane, method, path, body)
                verdict = True
                return reply
            except _Transient as exc:
                verdict = False if exc.unhealthy else None
                raise
            except BadSignature:
                verdict = False
                raise
            finally:
                if verdict is True:
                    self.breaker.record_success(permit)
                elif verdict is False:
                    self.breaker.record_failure(permit)
                else:
                    self.breaker.record_neutral(permit)
        finally:
            self._lanes.put_nowait(lane)

    async def _exchange(self, lane: httpx.AsyncClient, method: str, path: str,
                        body: bytes | None) -> _Reply:
        try:
            response = await lane.request(method, path, content=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}", maybe_applied=False) from exc
        except httpx.TransportError as exc:  # sent, and then the answer was lost
            self.stats["ambiguous"] += 1
            raise _Transient(f"{type(exc).__name__}: {exc}", maybe_applied=True) from exc
        if response.status_code >= 500:  # signed or not, it may come after a commit
            # Retry-After is not honoured here: backoff spaces the retries and the breaker
            # stops them if the bank stays down, without parking the caller for the outage.
            self.stats["ambiguous"] += 1
            raise _Transient(f"HTTP {response.status_code}", maybe_applied=True)
        if response.status_code == 429:
            signed = self._signed(response)
            raise _Transient("HTTP 429 rate limited", maybe_applied=not signed,
                             retry_after_s=_retry_after_s(response) or 1.0, unhealthy=not signed)
        if not self._signed(response):
            self.stats["bad_signature"] += 1
            raise BadSignature(f"{method} {path}: HTTP {response.status_code} is not signed by "
                               f"the pinned key {self.key_id} of bank {self.bank_code}")
        return _Reply(response.status_code, response.content)

    def _signed(self, response: httpx.Response) -> bool:
        if response.headers.get(KEY_ID_HEADER) != self.key_id:
            return False
        try:
            signature = bytes.fromhex(response.headers.get(SIGNATURE_HEADER, ""))
        except ValueError:
            return False
        return verify_signature(self.public_key, signature, response.content)

    def _parse_settlement(self, body: bytes, settlement_date: date) -> SettlementFile:
        decoder = msgspec.json.Decoder(SettlementRecord)
        try:
            records = [decoder.decode(line) for line in body.splitlines() if line.strip()]
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"bad settlement file: {exc}") from exc
        if not records or not isinstance(records[-1], SettlementTrailer):
            raise ProtocolError("the settlement file has no trailer (truncated?)")
        trailer = records[-1]
        lines = tuple(r for r in records[:-1] if isinstance(r, SettlementLine))
        if len(lines) != len(records) - 1:
            raise ProtocolError("a trailer in the middle of the settlement file")
        if (trailer.bank_code, trailer.settlement_date) != (self.bank_code, settlement_date):
            raise ProtocolError("the settlement file is for another bank or day")
        if trailer.line_count != len(lines) or trailer.total_fen != sum(
                line.amount_fen for line in lines):
            raise ProtocolError("the settlement file does not add up to its trailer")
        return SettlementFile(bank_code=trailer.bank_code, settlement_date=settlement_date,
                              complete=trailer.complete, lines=lines, total_fen=trailer.total_fen)


def _check_key_format(idempotency_key: str) -> None:
    if not _KEY_FORMAT.match(idempotency_key):  # it goes into a URL path
        raise ValueError(f"not an idempotency key: {idempotency_key!r}")


def _check_key(request: CreditRequest) -> None:
    expected = idempotency_key_for(request.campaign_id, request.packet_id)
    if request.idempotency_key != expected:
        raise ValueError(f"packet {request.packet_id} must use idempotency key {expected}")


def _check_echo(request: CreditRequest, result: CreditResult) -> None:
    if (result.idempotency_key, result.wallet_id, result.amount_fen) != (
            request.idempotency_key, request.wallet_id, request.amount_fen):
        raise ProtocolError(f"the credit answer does not match {request.idempotency_key}")


def _result_from_record(request: CreditRequest, record: CreditRecord) -> CreditResult:
    """A credit the bank already holds, as the result of this request (or a conflict)."""
    if (record.wallet_id, record.amount_fen, record.campaign_id, record.packet_id) != (
            request.wallet_id, request.amount_fen, request.campaign_id, request.packet_id):
        raise PermanentFailure("idempotency_conflict",
                               "the bank holds another credit under this packet's key", 409)
    return CreditResult(status="credited", credit_id=record.credit_id,
                        idempotency_key=record.idempotency_key, wallet_id=record.wallet_id,
                        amount_fen=record.amount_fen, credited_at=record.credited_at,
                        duplicate=True)


def _decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"unexpected {kind.__name__} body: {exc}") from exc


def _problem(reply: _Reply) -> Problem:
    try:
        return msgspec.json.decode(reply.body, type=Problem)
    except msgspec.DecodeError:
        return Problem(status=reply.status, code=f"http_{reply.status}")


async def fetch_sandbox_public_key(base_url: str, timeout_s: float = 5.0) -> bytes:
    """The sandbox bank's public key from its `/keys` (trust on first use: sandbox only; a real
    bank's key is configured out of band)."""
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s) as http:
        response = await http.get("/keys")
        response.raise_for_status()
    keys = msgspec.json.decode(response.content, type=dict[str, str])
    if len(keys) != 1:
        raise ProtocolError("expected exactly one sandbox bank key")
    ((key_id, public_hex),) = keys.items()
    public_key = bytes.fromhex(public_hex)
    if key_id_for(public_key) != key_id:
        raise ProtocolError("the key id does not match the key")
    return public_key
