"""The cascade a message goes through when served: guard -> classify -> route -> act.

Each step is a plain object with one method, so the privacy guard, the LLM fallback and the
per-label actions plug in without touching the others:

* ``guard.mask(text, conversation)`` personal data replaced before text leaves the machine (LLM
                                   fallback, ``llm`` and ``forward`` actions); the counts go in the
                                   decision for the audit log; pseudonyms in an LLM's reply are
                                   turned back before it reaches the user
* ``model.predict_one(text)``      the small model: label and calibrated confidence
* ``fallback(text) -> label``      an LLM asked only when the small model is unsure; any failure
                                   (down, slow, circuit open) keeps the local answer, flagged
* ``actions[label](text, label)``  what to do with the answer (none configured: label only)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol


_FAILURE_FLAGS = {"CircuitOpen": "llm_circuit_open", "EgressRefused": "egress_refused"}
_NOT_SENT = {"llm_circuit_open", "egress_refused"}


class Fallback(Protocol):
    def __call__(self, text: str) -> str: ...


@dataclass
class Decision:
    label: str
    confidence: float
    route: str  # "local", "llm" or "refused"
    flags: list[str] = field(default_factory=list)
    action: Any = None
    top: list[dict] = field(default_factory=list)
    pii: dict[str, int] = field(default_factory=dict)  # personal data found, by type
    endpoints: list[str] = field(default_factory=list)  # where (masked) text was sent, if anywhere


@dataclass
class Cascade:
    """The small model, optionally backed by an LLM for low-confidence messages.

    ``thresholds`` maps a label to the confidence under which that label's answers go to the
    fallback (``"*"`` for every label). Without a fallback every answer stays local.
    """

    model: Any
    fallback: Fallback | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    guard: Any = None  # a PrivacyGuard, or any callable text -> text
    actions: dict[str, Callable[[str, str], Any]] = field(default_factory=dict)
    top_k: int = 3

    def __post_init__(self) -> None:
        # the label the model answers when it does not know, if it is not one of its classes
        reject = getattr(self.model, "reject_label_", None)
        self._refusal = reject if reject is not None and reject not in set(map(str, self.model.classes_)) else None

    def threshold_for(self, label: str) -> float | None:
        return self.thresholds.get(label, self.thresholds.get("*"))

    @property
    def may_block(self) -> bool:
        """True when a message can wait on the network (an LLM fallback, a webhook, an LLM action)."""
        return self.fallback is not None or any(getattr(a, "egress", False) for a in self.actions.values())

    def _outgoing(self, text: str, conversation: str | None, d: Decision) -> str:
        if self.guard is None:
            return text
        if hasattr(self.guard, "mask"):
            m = self.guard.mask(text, conversation)
            d.pii = m.counts
            return m.text
        return self.guard(text)

    def run(self, text: str, conversation: str | None = None) -> Decision:
        label, conf, proba = self.model.predict_one(text)
        return self._after_model(text, conversation, label, conf, proba)

    def run_many(self, texts: list[str], conversations: list[str | None]) -> list[Decision]:
        """``run`` for several messages, the small model called once for all of them (a batch costs
        the model far less per message than one call per message)."""
        if len(texts) == 1:
            return [self.run(texts[0], conversations[0])]
        labels, proba = self.model.predict_and_proba(texts)
        conf = proba.max(axis=1)
        return [self._after_model(t, c, str(label), float(p), row)
                for t, c, label, p, row in zip(texts, conversations, labels, conf, proba)]

    def _after_model(self, text: str, conversation: str | None, label: str, conf: float, proba) -> Decision:
        """Route and act on one message, given the small model's answer."""
        order = proba.argsort()[::-1][: self.top_k]
        top = [{"label": str(self.model.classes_[i]), "score": round(float(proba[i]), 6)} for i in order]
        d = Decision(label, conf, "refused" if label == self._refusal else "local", top=top)
        masked: list[str] = []

        def outgoing() -> str:  # masked once, when something is about to leave
            if not masked:
                masked.append(self._outgoing(text, conversation, d))
            return masked[0]

        if hasattr(self.guard, "find") and not getattr(self.guard, "ner", False):
            # the fast path costs microseconds: count personal data in every message for the audit
            # log (nothing is written to the pseudonym vault unless the text is about to leave)
            for span in self.guard.find(text):
                d.pii[span.entity] = d.pii.get(span.entity, 0) + 1
        limit = self.threshold_for(label)
        if limit is not None and conf < limit:
            if self.fallback is None:
                d.flags.append("low_confidence_no_fallback")
            else:
                try:
                    d.label, d.route = self.fallback(outgoing()), "llm"
                except Exception as e:  # the LLM is down, slow or refusing: keep the local answer
                    d.flags.append(_FAILURE_FLAGS.get(type(e).__name__, "fallback_failed"))
                if not set(d.flags) & _NOT_SENT:  # the request went out (even if no answer came back)
                    d.endpoints.append(getattr(self.fallback, "endpoint", "llm"))
        act = self.actions.get(d.label)
        if act is not None:
            if getattr(act, "egress", False):
                d.action = act(outgoing(), d.label)
                if d.action.get("sent", True):
                    d.endpoints.append(getattr(act, "endpoint", "webhook"))
                if self.guard is not None and hasattr(self.guard, "reveal") and isinstance(d.action.get("text"), str):
                    d.action["text"] = self.guard.reveal(d.action["text"], conversation)
            else:
                d.action = act(text, d.label)
        return d
