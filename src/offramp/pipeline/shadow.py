"""Shadow mode, phase two (``local_first``): a sample of the small model's local answers is also
sent to the LLM, off the request path, to keep measuring how often the two agree.

Messages wait in a bounded queue for one worker thread; when the LLM is slower than the traffic the
queue fills and further messages are dropped and counted, never waited for. The text is masked
before it is queued, so only masked text sits in memory or leaves the machine.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from dataclasses import dataclass
from typing import Callable

from offramp.teacher.client import LLMError
from offramp.teacher.egress import EgressRefused

log = logging.getLogger("offramp.shadow")


@dataclass
class ShadowResult:
    request_id: str
    text: str  # masked
    local_label: str
    confidence: float
    llm_label: str
    version: str | None


class ShadowSampler:
    def __init__(
        self,
        ask: Callable[[str], str],
        mask: Callable[[str], str],
        sample: float = 1.0,
        max_queue: int = 1000,
        seed: int | None = None,
    ):
        self._ask, self._mask, self.sample = ask, mask, sample
        self._queue: queue.Queue[tuple[str, str, str, float, str | None] | None] = queue.Queue(max_queue)
        self._rng = random.Random(seed)
        self.on_result: Callable[[ShadowResult], None] | None = None
        self.sent = self.dropped = self.failed = 0
        self._thread = threading.Thread(target=self._run, name="offramp-shadow", daemon=True)
        self._thread.start()

    def offer(self, request_id: str, text: str, local_label: str, confidence: float, version: str | None) -> bool:
        """Maybe (by the sample rate) queue a local answer for the LLM; False if it was not queued."""
        if self.sample <= 0 or (self.sample < 1 and self._rng.random() >= self.sample):
            return False
        try:
            self._queue.put_nowait((request_id, self._mask(text), local_label, confidence, version))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:  # the worker is busy with a full queue: it is a daemon thread, let it go
            pass

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                rid, masked, local, conf, version = item
                try:
                    answer = self._ask(masked)
                except (LLMError, EgressRefused):
                    self.failed += 1
                    continue
                self.sent += 1
                if self.on_result is not None:
                    try:
                        self.on_result(ShadowResult(rid, masked, local, conf, answer, version))
                    except Exception:  # a bug in the consumer: logged, the worker keeps going
                        log.exception("shadow result handler failed for request %s", rid)
            finally:
                self._queue.task_done()
