"""Coalescing: the calls of concurrent requests in one process share one round trip.

A round trip through redis-py costs the API process far more CPU than the command costs Redis, and
a hot endpoint pays one or more per request. A `Coalescer` queues each caller's item and one
flusher task sends whatever is queued in one go (a Redis pipeline, say), then the next batch.
Under light load a batch is one item and nothing waits; under heavy load one round trip answers
many requests, as the registration group commit does for INSERTs.

The sender answers each item with its result or with the exception for that item alone; if the
sender itself raises (the connection failed), every item of the batch fails with that error, as
each caller's own call would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class Coalescer(Generic[ItemT, ResultT]):
    def __init__(self, send: Callable[[list[ItemT]], Awaitable[Sequence[ResultT | BaseException]]], *,
                 max_batch: int, name: str) -> None:
        self._send = send
        self._max_batch = max_batch
        self._name = name
        self._queue: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def submit(self, item: ItemT) -> asyncio.Future[ResultT]:
        """The item's answer, once the batch it joins has been sent."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[ResultT] = loop.create_future()
        self._queue.append((item, answer))
        # A task of its own, not the first caller: a cancelled request must not strand the others.
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            # (a coalescer outliving its event loop, as in tests, forgets what that loop queued)
            self._queue = [queued for queued in self._queue if queued[1].get_loop() is loop]
            self._flusher = loop.create_task(self._flush(), name=self._name)
        return answer

    async def _flush(self) -> None:
        while self._queue:
            batch = self._queue[:self._max_batch]
            del self._queue[:self._max_batch]
            results: Sequence[ResultT | BaseException]
            try:
                results = await self._send([item for item, _ in batch])
            except Exception as exc:  # the connection failed: every item in the batch fails with it
                results = [exc] * len(batch)
            for (_, answer), result in zip(batch, results, strict=True):
                if answer.done():
                    continue
                if isinstance(result, BaseException):
                    answer.set_exception(result)
                else:
                    answer.set_result(result)
