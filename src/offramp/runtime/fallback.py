"""The LLM fallback: ask the LLM for a label when the small model is unsure, behind a circuit breaker.

The answer must be one of the model's labels (matched case-insensitively, quotes and punctuation
around it ignored); anything else is a failure, never a guess. For a multi-label model the LLM is
asked for every label that applies, as ``{"labels": [...]}``, and the answer is those labels
joined by the model's separator ("" for none). After ``failure_threshold`` failures
in a row the breaker opens and calls are skipped for ``reset_after_s`` seconds, so a slow or dead
LLM costs one timeout, not one per message; the next call after that tries again.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from offramp.egress.breaker import Breaker
from offramp.llm.client import ChatClient, LLMBadResponse, LLMError
from offramp.llm.label import TaskSpec, read_labels
from offramp.llm.prompts import label_prompt, parse_label


class CircuitOpen(LLMError):
    """The LLM failed repeatedly; calls are skipped until the breaker's timer runs out."""


class LLMFallback:
    def __init__(
        self,
        client: ChatClient,
        labels: Sequence[str] | np.ndarray,
        descriptions: dict[str, str] | None = None,
        failure_threshold: int = 3,
        reset_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        multi_label: bool = False,
        label_sep: str = "|",
    ) -> None:
        self.client, self.labels = client, [str(x) for x in labels]
        self.multi_label, self.label_sep = multi_label, label_sep
        if multi_label:
            spec = TaskSpec({lab: (descriptions or {}).get(lab, "") for lab in self.labels}, multi_label=True)
            self.system = spec.system_prompt()
        else:
            self.system = label_prompt(self.labels, descriptions)
        self.breaker = Breaker(failure_threshold, reset_after_s, clock)

    @property
    def endpoint(self) -> str:
        return self.client.url

    @property
    def is_open(self) -> bool:
        return self.breaker.is_open

    def record_failure(self) -> None:
        """A failure seen by the caller (a call past its deadline): counts toward opening the breaker."""
        self.breaker.failed()

    def __call__(self, text: str) -> str:
        if self.is_open:
            raise CircuitOpen("the LLM failed repeatedly; skipping it for now")
        try:
            r = self.client.chat(
                [{"role": "system", "content": self.system}, {"role": "user", "content": text}],
                temperature=0,
                max_tokens=16 + (16 * len(self.labels) if self.multi_label else 0),
            )
            if self.multi_label:
                label = read_labels(r.content.strip(), self.labels, self.label_sep)
            else:
                label = parse_label(r.content, self.labels)
            if label is None:
                raise LLMBadResponse(f"the LLM answered outside the label set: {r.content[:80]!r}")
        except LLMError:
            self.breaker.failed()
            raise
        self.breaker.succeeded()
        return label
