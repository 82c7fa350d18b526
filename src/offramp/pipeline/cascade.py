"""The cascade a message goes through when served: guard -> classify -> route -> act.

Each step is a plain object with one method, so the privacy guard, the LLM fallback and the
per-label actions plug in without touching the others:

* ``guard(text) -> text``          what may leave the machine (identity until a guard is configured)
* ``model.predict_one(text)``      the small model: label and calibrated confidence
* ``fallback(text) -> label``      an LLM asked only when the small model is unsure; any failure
                                   (down, slow, circuit open) keeps the local answer, flagged
* ``actions[label](text, label)``  what to do with the answer (none configured: label only)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol


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


@dataclass
class Cascade:
    """The small model, optionally backed by an LLM for low-confidence messages.

    ``thresholds`` maps a label to the confidence under which that label's answers go to the
    fallback (``"*"`` for every label). Without a fallback every answer stays local.
    """

    model: Any
    fallback: Fallback | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    guard: Callable[[str], str] | None = None
    actions: dict[str, Callable[[str, str], Any]] = field(default_factory=dict)
    top_k: int = 3

    def __post_init__(self) -> None:
        # the label the model answers when it does not know, if it is not one of its classes
        reject = getattr(self.model, "reject_label_", None)
        self._refusal = reject if reject is not None and reject not in set(map(str, self.model.classes_)) else None

    def threshold_for(self, label: str) -> float | None:
        return self.thresholds.get(label, self.thresholds.get("*"))

    def run(self, text: str) -> Decision:
        label, conf, proba = self.model.predict_one(text)
        order = proba.argsort()[::-1][: self.top_k]
        top = [{"label": str(self.model.classes_[i]), "score": round(float(proba[i]), 6)} for i in order]
        d = Decision(label, conf, "refused" if label == self._refusal else "local", top=top)
        limit = self.threshold_for(label)
        if limit is not None and conf < limit:
            if self.fallback is None:
                d.flags.append("low_confidence_no_fallback")
            else:
                try:
                    outgoing = self.guard(text) if self.guard else text
                    d.label, d.route = self.fallback(outgoing), "llm"
                except Exception as e:  # the LLM is down, slow or refusing: keep the local answer
                    d.flags.append("llm_circuit_open" if type(e).__name__ == "CircuitOpen" else "fallback_failed")
        act = self.actions.get(d.label)
        if act is not None:
            d.action = act(text, d.label)
        return d
