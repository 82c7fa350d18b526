"""Limits on what labelling sends: a request rate and a dollar budget.

Both live in the process that decides what is sent (the labeller), so they are global whatever
carries the requests (threads here, or Ray actors on other machines): every request passes
through :meth:`RateLimit.wait` and :meth:`Budget.reserve` first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from offramp.errors import OfframpError


class OverBudget(OfframpError):
    """Sending one more request could spend more than the budget."""


class RateLimit:
    """At most ``per_second`` requests a second, on average, with no burst above one second's worth."""

    def __init__(
        self,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not per_second > 0:
            raise ValueError("the rate must be above 0")
        self.interval = 1.0 / per_second
        self._clock, self._sleep = clock, sleep
        self._next = clock()
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until this request's turn (turns are handed out in order, ``interval`` apart)."""
        with self._lock:
            now = self._clock()
            turn = max(self._next, now)
            self._next = turn + self.interval
        if turn > now:
            self._sleep(turn - now)


class Budget:
    """Dollars that may be spent: a request reserves its estimate first, then settles its real cost."""

    def __init__(self, max_usd: float):
        if not max_usd > 0:
            raise ValueError("the budget must be above 0")
        self.max_usd = max_usd
        self.spent = 0.0  # settled
        self._reserved = 0.0
        self.refused = 0  # requests not sent because the budget would be exceeded
        self._lock = threading.Lock()

    def reserve(self, usd: float) -> None:
        with self._lock:
            if self.spent + self._reserved + usd > self.max_usd:
                self.refused += 1
                raise OverBudget(f"the budget of ${self.max_usd:g} is spent (${self.spent:.4f} so far)")
            self._reserved += usd

    def settle(self, reserved: float, actual: float) -> None:
        with self._lock:
            self._reserved -= reserved
            self.spent += actual
