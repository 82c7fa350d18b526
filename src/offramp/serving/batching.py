"""Micro-batching on the event loop: messages of requests that arrive together share one model call."""

from __future__ import annotations

import asyncio
from typing import Any, Callable


class MicroBatcher:
    """Collects the messages of requests that are ready at the same moment and hands them to
    ``work`` in one call, on the event loop.

    A message waits for no timer: the batch is whatever has arrived by the next turn of the event
    loop, so a lone request is answered at once, and under load the requests parsed while the
    previous batch ran go together. ``work(items) -> results`` must be quick and CPU-bound (it runs
    on the event loop); a failure fails every message of its batch.
    """

    def __init__(self, work: Callable[[list[Any]], list[Any]], max_size: int = 64):
        self.work, self.max_size = work, max_size
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._scheduled = False

    def submit(self, item: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((item, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
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
