"""Micro-batching on the event loop: messages of requests that arrive together share one model call."""

from __future__ import annotations

import asyncio
from typing import Callable, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    """Collects the messages of requests that are ready at the same moment and hands them to
    ``work`` in one call, on the event loop.

    A message waits for no timer: the batch is whatever has arrived by the next turn of the event
    loop, so a lone request is answered at once, and under load the requests parsed while the
    previous batch ran go together. ``work(items) -> results`` must be quick and CPU-bound (it runs
    on the event loop); a failure fails every message of its batch.
    """

    # under load (the last batch held at least BUSY messages), a batch waits up to WAIT more turns
    # of the loop while messages keep arriving: a request that came in meanwhile (its data read, its
    # task started, its body parsed) joins the call, which costs the model far less per message;
    # a lone request never waits
    BUSY, WAIT = 4, 2

    def __init__(self, work: Callable[[list[Item]], list[Result]], max_size: int = 64):
        self.work, self.max_size = work, max_size
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._scheduled = False
        self._last = 0  # messages in the last batch
        self._waited = 0
        self._seen = 0

    def submit(self, item: Item) -> asyncio.Future[Result]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((item, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        return fut

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        n = len(self._pending)
        if self._last >= self.BUSY and self._waited < self.WAIT and n < self.max_size and n > self._seen:
            self._waited += 1
            self._seen = n
            loop.call_soon(self._flush, loop)
            return
        self._scheduled = False
        self._waited = self._seen = 0
        self._last = n
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.max_size):
            chunk = [(item, fut) for item, fut in pending[start : start + self.max_size] if not fut.done()]
            if not chunk:
                continue
            try:
                results = self.work([item for item, _ in chunk])
            except Exception as e:
                for _, fut in chunk:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), result in zip(chunk, results):
                if not fut.done():
                    fut.set_result(result)
