"""Calls that leave the machine, each under a whole-call deadline, in their own bounded pool.

``timeout_s`` in an HTTP client bounds each read, not the call: a server that drips one byte a
second keeps a call alive indefinitely. An :class:`EgressPool` runs the call on one of its own
threads and waits at most ``deadline_s`` for the whole of it; past that the caller goes on with a
flag (the local answer stands). Each kind of egress (the LLM fallback, per-label actions) has its
own pool with a bound on calls in flight and waiting: when it is full a call is shed at once
(``EgressBusy``), so a slow webhook can neither hold the LLM fallback up nor queue local answers
behind it.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Callable, TypeVar

T = TypeVar("T")


class EgressBusy(Exception):
    """The pool's calls in flight and waiting are at their bound: this one was not made."""


class EgressDeadline(Exception):
    """The call did not finish within its deadline (it may still finish, unseen, on its thread)."""


class EgressPool:
    def __init__(self, name: str, workers: int = 16, waiting: int = 64):
        self.name = name
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=f"offramp-egress-{name}")
        self.capacity = workers + waiting  # callers it lets in at once (in flight and waiting)
        self._slots = threading.BoundedSemaphore(self.capacity)
        self.shed = 0
        self.late = 0

    def call(self, fn: Callable[[], T], deadline_s: float) -> T:
        if not self._slots.acquire(blocking=False):
            self.shed += 1
            raise EgressBusy(f"the {self.name} egress pool is full")
        try:
            fut = self._executor.submit(fn)
        except RuntimeError:  # shut down (a reload retired this cascade)
            self._slots.release()
            raise EgressBusy(f"the {self.name} egress pool is closed") from None
        fut.add_done_callback(lambda _: self._slots.release())
        try:
            return fut.result(timeout=deadline_s)
        except concurrent.futures.TimeoutError:
            self.late += 1
            raise EgressDeadline(f"no answer within {deadline_s:g} s") from None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def run(pool: EgressPool | None, fn: Callable[[], T], deadline_s: float) -> T:
    """``fn()`` in ``pool`` under ``deadline_s``; without a pool, directly."""
    return fn() if pool is None else pool.call(fn, deadline_s)
