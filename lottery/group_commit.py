"""Group commit: many concurrent single-row writes become one statement, acknowledged after commit.

A flush takes whatever is queued (up to `max_batch`) the moment a flush slot is free; while the
slots are busy, new items pile up and go together in the next flush. So batching costs no timer
and no added latency when the load is light, and saves round trips and commits when it is heavy.

With `wait_s`, a submitter waits at most that long (the API's database deadline), whether its item
is still queued behind hung flushes or in one: it gets TimeoutError (503) and its future is
cancelled. A queued item whose submitter gave up is dropped from the next flush; one already in a
flush may still commit, and is then never acknowledged to that submitter: a caller who was refused
may or may not have been stored, and retries (registration is idempotent per person).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("lottery.group_commit")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

MAX_QUEUE = 50_000


class GroupCommitter(Generic[ItemT, ResultT]):
    def __init__(self, flush: Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT | BaseException]]],
                 max_batch: int = 256, max_inflight: int = 3, wait_s: float | None = None) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._wait_s = wait_s
        self._queue: asyncio.Queue[tuple[ItemT, asyncio.Future[ResultT]]] = asyncio.Queue(MAX_QUEUE)
        self._slots = asyncio.Semaphore(max_inflight)
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def submit(self, item: ItemT) -> ResultT:
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        if self._wait_s is None:
            return await future
        async with asyncio.timeout(self._wait_s):  # cancels the future itself when it fires
            return await future

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            await self._slots.acquire()
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [entry for entry in batch if not entry[1].done()]  # their submitters gave up
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._flush_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush_batch(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except BaseException as exc:
            log.warning("group commit flush of %d failed: %r", len(batch), exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._slots.release()
