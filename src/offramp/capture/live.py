"""Capture on live traffic: the LLM's answers and people's corrections go to the pool, masked.

:class:`Capture` sits beside the cascade. For each decision the service hands it, it keeps the
LLM's answer (a fallback's, or the shadow's) in the pool, and remembers the request's masked text
for ``ttl_s`` seconds so that a correction (``POST /v1/feedback``) can be stored with it. Nothing
raw is kept: the text is masked by the pipeline's guard before it is remembered or written.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Iterable

from offramp.capture.pool import Pool
from offramp.errors import OfframpError


class UnknownRequest(OfframpError):
    """Feedback for a request id this service does not know (never seen, or forgotten after ttl_s)."""


class NotYourRequest(OfframpError):
    """Feedback from an API key other than the one that made the request (and not an admin)."""


class UnknownLabel(OfframpError):
    """Feedback naming a label the model lacks (without capture.allow_new_labels)."""


class InvalidLabel(OfframpError):
    """A correction whose label cannot be read: empty for a single-label model, an empty part of a set."""


def feedback_labels(label: str, sep: str | None) -> list[str]:
    """The labels a correction names. One label (``sep`` None): it must not be empty. Several
    (``sep``, the model's separator): the set, sorted; ``""`` is the empty set (none of the labels),
    and an empty part (``"A|"``, ``"|"``, ``"A||B"``) is refused rather than guessed at."""
    if sep is None:
        if not label.strip():
            raise InvalidLabel("the label is empty", "send the right label for the message")
        return [label.strip()]
    if not label.strip():
        return []
    parts = [p.strip() for p in label.split(sep)]
    if any(not p for p in parts):
        raise InvalidLabel(
            f"the label {label[:80]!r} has an empty part",
            f'join labels with {sep!r} without empty parts; send "" for none of the labels',
        )
    return sorted(set(parts))


class Capture:
    def __init__(
        self,
        pool: Pool,
        mask: Callable[[str], str],
        labels: Iterable[str],
        *,
        sources: Iterable[str] = ("llm", "shadow", "feedback"),
        ttl_s: float = 3600.0,
        allow_new_labels: bool = False,
        max_requests: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        label_sep: str | None = None,
    ):
        self.pool, self._mask = pool, mask
        self.labels = set(map(str, labels))
        self.sources = set(sources)
        self.ttl_s, self.allow_new_labels, self.max_requests = ttl_s, allow_new_labels, max_requests
        self._clock = clock
        # a multi-label model: a row's label is a set, joined by the model's separator
        self.label_sep = label_sep
        # request id -> (time, masked text, local label, confidence, version, the caller's key hash)
        self._recent: OrderedDict[str, tuple[float, str, str, float, str | None, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def mask(self) -> Callable[[str], str]:
        """The guard every text the capture keeps is masked with."""
        return self._mask

    def llm_answer(
        self,
        request_id: str,
        text: str,
        label: str,
        local_label: str,
        confidence: float,
        version: str | None,
        labels: list[str] | None = None,
    ) -> None:
        """Keep the LLM's answer to one message (for a multi-label model its whole label set, ``labels``)."""
        if labels is not None and self.label_sep is not None:
            label = self.label_sep.join(sorted(labels))
        if "llm" in self.sources:
            self.pool.add(
                "llm",
                text,
                label,
                local_label=local_label,
                confidence=confidence,
                model_version=version,
                request_id=request_id,
            )

    def remember(self, requests: list[tuple[str, str, str, float, str | None, str | None]]) -> None:
        """Remember a batch of requests for feedback: (request id, masked text, local label,
        confidence, version, the caller's key hash or None) each, under one lock."""
        if "feedback" not in self.sources or not requests:
            return
        now = self._clock()
        with self._lock:
            for rid, masked, local_label, confidence, version, caller in requests:
                self._recent[rid] = (now, masked, local_label, confidence, version, caller)
            self._expire(now)

    def after(
        self,
        request_id: str,
        text: str,
        route: str,
        label: str,
        local_label: str,
        confidence: float,
        version: str | None,
        labels: list[str] | None = None,
        caller: str | None = None,
    ) -> None:
        """Keep what one decision has to give: the LLM's answer (route ``llm``), and the request
        for feedback (its text masked here)."""
        if route == "llm":
            self.llm_answer(request_id, text, label, local_label, confidence, version, labels)
        self.remember([(request_id, self._mask(text), local_label, confidence, version, caller)])

    def shadow(
        self, request_id: str, text: str, local_label: str, confidence: float, llm_label: str, version: str | None
    ) -> None:
        """Keep the LLM's answer given beside the small model's."""
        if "shadow" in self.sources:
            self.pool.add(
                "shadow",
                text,
                llm_label,
                local_label=local_label,
                confidence=confidence,
                model_version=version,
                request_id=request_id,
            )

    def feedback(self, request_id: str, label: str, *, caller: str | None = None, admin: bool = False) -> None:
        """Store a person's correction of a recent request; UnknownRequest / UnknownLabel /
        NotYourRequest otherwise. A request made with an API key is corrected only by that key
        (``caller``) or an admin. A later correction of the same request replaces the earlier one.

        For a multi-label model ``label`` is the corrected set joined by the model's separator;
        the empty set is the empty string (none of the labels), and an empty part (``"A|"``,
        ``"|"``) is refused."""
        parts = feedback_labels(label, self.label_sep)
        label = self.label_sep.join(parts) if self.label_sep is not None else parts[0]
        for part in parts:
            if part not in self.labels and not self.allow_new_labels:
                raise UnknownLabel(
                    f"the model has no label {part!r}",
                    f"use one of: {', '.join(sorted(self.labels))} (or set capture.allow_new_labels: true)"
                    + (f"; join several with {self.label_sep!r}" if self.label_sep is not None else ""),
                )
        now = self._clock()
        with self._lock:
            self._expire(now)
            seen = self._recent.get(request_id)
        if seen is None:
            raise UnknownRequest(
                f"no recent request with id {request_id!r}",
                f"feedback is taken for {self.ttl_s:g} s after a request",
            )
        _, masked, local_label, confidence, version, owner = seen
        if owner is not None and caller != owner and not admin:
            raise NotYourRequest(
                f"request {request_id!r} was made with another API key",
                "send the correction with the key that made the request, or from the console as an admin",
            )
        self.pool.add(
            "feedback",
            masked,
            label,
            local_label=local_label,
            confidence=confidence,
            model_version=version,
            request_id=request_id,
        )

    def adopt(self, other: Capture) -> None:
        """Take over the requests ``other`` remembers (at a reload), so their feedback is still taken."""
        with other._lock:
            recent = list(other._recent.items())
        with self._lock:
            for rid, row in recent:
                self._recent.setdefault(rid, row)
            self._recent = OrderedDict(sorted(self._recent.items(), key=lambda kv: kv[1][0]))

    def close(self) -> None:
        self.pool.close()

    def _expire(self, now: float) -> None:
        recent = self._recent
        while recent and (now - next(iter(recent.values()))[0] > self.ttl_s or len(recent) > self.max_requests):
            recent.popitem(last=False)
