"""A circuit breaker for calls that leave the machine (the LLM, another offramp service).

After ``failure_threshold`` failures in a row the breaker opens for ``reset_after_s`` seconds:
callers skip the call (one timeout, not one per message, while the other side is down), then try
again. A success closes it and starts the count over.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class Breaker:
    def __init__(
        self, failure_threshold: int = 3, reset_after_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failure_threshold, self.reset_after_s, self.clock = failure_threshold, reset_after_s, clock
        self._failures, self._open_until = 0, 0.0
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return bool(self.clock() < self._open_until)

    def failed(self) -> None:
        """One more failure in a row; the one that reaches the threshold opens the breaker."""
        with self._lock:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open_until = self.clock() + self.reset_after_s
                self._failures = 0

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0
