"""The console's review queue: recent messages worth a person's look, masked.

Three kinds are kept: ``unsure`` (the small model's confidence under its routing threshold, or
under 0.7 without one), ``disagreed`` (the LLM gave another label in shadow mode) and ``rejected``
(the "don't know" rule answered). Each item holds the text **masked** by the pipeline's guard,
the model's top labels and the LLM's answer when there is one. The queue is bounded (the oldest
items leave first) and items expire after ``ttl_s`` (the capture pool's feedback window), since a
correction can only be stored while the request is remembered.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Callable

from offramp.types import JSONDict

SOURCES = ("unsure", "disagreed", "rejected")


@dataclass
class ReviewItem:
    request_id: str
    time: float
    text: str  # masked
    source: str
    label: str  # the small model's
    confidence: float
    top: list[JSONDict] = field(default_factory=list)
    llm: str | None = None


class ReviewQueue:
    def __init__(self, max_items: int = 2000, ttl_s: float = 3600.0, clock: Callable[[], float] = time.time):
        self.max_items, self.ttl_s, self._clock = max_items, ttl_s, clock
        self._items: OrderedDict[str, ReviewItem] = OrderedDict()
        self._lock = threading.Lock()
        self.reviewed = 0

    def offer(self, item: ReviewItem) -> None:
        with self._lock:
            old = self._items.pop(item.request_id, None)
            if old is not None and old.source == "disagreed" and item.source != "disagreed":
                item.source, item.llm = old.source, old.llm  # a disagreement is the stronger reason
            self._items[item.request_id] = item
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def _expire(self) -> None:
        cut = self._clock() - self.ttl_s
        while self._items and next(iter(self._items.values())).time < cut:
            self._items.popitem(last=False)

    def get(self, request_id: str) -> ReviewItem | None:
        with self._lock:
            self._expire()
            return self._items.get(request_id)

    def remove(self, request_id: str) -> None:
        with self._lock:
            if self._items.pop(request_id, None) is not None:
                self.reviewed += 1

    def items(
        self,
        label: str | None = None,
        source: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[JSONDict]:
        """Waiting items, the strongest reasons first (disagreed, rejected, then the least sure)."""
        with self._lock:
            self._expire()
            chosen = [
                it
                for it in self._items.values()
                if (label is None or it.label == label or it.llm == label)
                and (source is None or it.source == source)
                and (since is None or it.time >= since)
            ]
        order = {"disagreed": 0, "rejected": 1, "unsure": 2}
        chosen.sort(key=lambda it: (order[it.source], it.confidence))
        return [asdict(it) for it in chosen[:limit]]

    def counts(self) -> dict[str, int]:
        with self._lock:
            self._expire()
            out = {s: 0 for s in SOURCES}
            for it in self._items.values():
                out[it.source] += 1
        out["total"] = sum(out.values())
        out["reviewed"] = self.reviewed
        return out
