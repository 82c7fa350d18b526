"""The cascade a message goes through when served: guard -> classify -> route -> act.

Each step is an object with a small typed interface, so the privacy guard, the LLM fallback and
the per-label actions plug in without touching the others:

* :class:`Guard` — ``find`` counts personal data for the audit record; ``mask`` replaces it before
  text leaves the machine (LLM fallback, ``llm`` and ``forward`` actions); ``reveal`` turns
  pseudonyms in an LLM's reply back before it reaches the user
* the small model — ``predict_one`` / ``predict_and_proba``: label and calibrated confidence
* :class:`Fallback` — an LLM asked only when the small model is unsure; a known failure (down,
  slow, circuit open, egress refused) keeps the local answer, flagged by its type
* :class:`~offramp.runtime.actions.Action` — what to do with the answer, per label

An unexpected exception in a step is logged with the request id, counted in ``Cascade.errors`` and
flagged ``internal_error``; the local answer still goes back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from offramp.egress.policy import EgressRefused
from offramp.egress.pool import EgressBusy, EgressDeadline, EgressPool, run
from offramp.estimators.base import TextClassifier, top_labels
from offramp.llm.client import LLMError
from offramp.privacy.guard import neutralise_tokens
from offramp.runtime.actions import Action
from offramp.runtime.fallback import CircuitOpen

log = logging.getLogger("offramp.cascade")


class Span(Protocol):
    @property
    def entity(self) -> str: ...


class MaskResult(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def counts(self) -> dict[str, int]: ...


class Guard(Protocol):
    """The privacy guard's interface (see :class:`offramp.privacy.guard.PrivacyGuard`)."""

    @property
    def ner(self) -> bool: ...

    def find(self, text: str) -> Sequence[Span]: ...

    def mask(self, text: str, conversation: str | None = None) -> MaskResult: ...

    def reveal(self, text: str, conversation: str | None = None) -> str: ...


class Fallback(Protocol):
    """An LLM asked for a label: ``fallback(text) -> label``; raises an :class:`LLMError` on failure."""

    @property
    def endpoint(self) -> str: ...

    def __call__(self, text: str) -> str: ...


@dataclass
class Decision:
    label: str
    confidence: float
    route: str  # "local", "llm" or "refused"
    flags: list[str] = field(default_factory=list)
    action: Any = None
    top: list[dict[str, Any]] = field(default_factory=list)
    pii: dict[str, int] = field(default_factory=dict)  # personal data found, by type
    endpoints: list[str] = field(default_factory=list)  # where (masked) text was sent, if anywhere
    local_label: str = ""  # the small model's own answer (before any fallback)
    local_confidence: float = 0.0
    shadow: dict[str, str] | None = None  # llm_first: {"local": ..., "llm": ...}, both answers compared
    labels: list[str] | None = None  # a multi-label model: every label over its threshold
    scores: dict[str, float] | None = None  # a multi-label model: every label's probability
    label_sep: str = "|"
    unsure: list[str] | None = None  # a multi-label model: labels whose probability fell in their unsure band


def _failure_flag(e: Exception) -> str:
    """The flag a failed fallback leaves on the decision, by the failure's type."""
    if isinstance(e, CircuitOpen):
        return "llm_circuit_open"
    if isinstance(e, EgressRefused):
        return "egress_refused"
    if isinstance(e, EgressBusy):
        return "egress_busy"
    if isinstance(e, EgressDeadline):
        return "llm_deadline"
    return "fallback_failed"


_NOT_SENT = {"llm_circuit_open", "egress_refused", "egress_busy", "internal_error"}


@dataclass
class Cascade:
    """The small model, optionally backed by an LLM for low-confidence messages.

    ``thresholds`` maps a label to the confidence under which that label's answers go to the
    fallback (``"*"`` for every label). Without a fallback every answer stays local.

    A multi-label model (several labels per message) is routed by ``bands`` instead: a label is
    unsure when its probability lies within ``bands[label]`` (or ``bands["*"]``) of that label's
    decision threshold, and a message with any unsure label goes to the fallback, which answers
    the whole label set. Its actions run for each predicted label, in ``action_order`` (then in
    the model's label order); an action keyed by labels joined with ``+`` ("GRATITUDE+SUPPORT")
    runs instead of theirs when all of them are predicted.

    Example
    -------
    >>> from offramp import Cascade, train
    >>> texts = ["reset my pin", "thanks a lot", "how do I reset the pin", "thank you!"] * 5
    >>> labels = ["SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE"] * 5
    >>> model, _ = train(texts, labels, quality="fast", time_limit=None)
    >>> Cascade(model).run("thanks!").label
    'GRATITUDE'
    """

    model: TextClassifier
    fallback: Fallback | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    guard: Guard | None = None
    actions: dict[str, Action] = field(default_factory=dict)
    top_k: int = 3
    llm_first: bool = False  # shadow mode, phase one: the LLM answers every message, the small model is measured
    # calls that leave the machine run in their own bounded pools under whole-call deadlines
    llm_pool: EgressPool | None = None
    action_pool: EgressPool | None = None
    llm_deadline_s: float = 5.0
    action_deadline_s: float = 10.0
    bands: dict[str, float] = field(default_factory=dict)  # multi-label: unsure band around each threshold
    action_order: list[str] = field(default_factory=list)  # multi-label: the order actions run in

    def __post_init__(self) -> None:
        # the label the model answers when it does not know, if it is not one of its classes
        reject = self.model.reject_label_
        self._refusal = reject if reject is not None and reject not in set(map(str, self.model.classes_)) else None
        self._errors = 0
        self._lock = threading.Lock()

    @property
    def errors(self) -> int:
        """Unexpected exceptions caught (and logged) in the cascade's steps so far."""
        return self._errors

    def threshold_for(self, label: str) -> float | None:
        return self.thresholds.get(label, self.thresholds.get("*"))

    def band_for(self, label: str) -> float | None:
        return self.bands.get(label, self.bands.get("*"))

    def _unsure(self, proba: np.ndarray) -> list[str]:
        """A multi-label model's labels whose probability lies inside their unsure band."""
        if not self.bands:
            return []
        out = []
        for c, p, t in zip(self.model.classes_, proba, self.model.thresholds_):
            band = self.band_for(str(c))
            if band is not None and abs(float(p) - float(t)) < band:
                out.append(str(c))
        return out

    def action_plan(self, labels: list[str]) -> list[str]:
        """Which actions run for a multi-label answer, in order: combination actions ("A+B") whose
        labels were all predicted (the larger first) in place of their labels' own, then each
        remaining label's action; ordered by ``action_order``, then by the model's label order."""
        chosen = set(labels)
        covered: set[str] = set()
        plan: list[str] = []
        combos = [k for k in self.actions if "+" in k]
        for key in sorted(combos, key=lambda k: -len(k.split("+"))):
            parts = set(key.split("+"))
            if parts <= chosen and not parts & covered:
                plan.append(key)
                covered |= parts
        plan += [lab for lab in labels if lab not in covered and lab in self.actions]
        order = {lab: i for i, lab in enumerate(self.action_order)}
        classes = {str(c): i for i, c in enumerate(self.model.classes_)}

        def rank(key: str) -> tuple[int, int]:
            parts = key.split("+")
            return min(order.get(p, len(order)) for p in parts), min(classes.get(p, len(classes)) for p in parts)

        return sorted(plan, key=rank)

    @property
    def may_block(self) -> bool:
        """True when a message can wait on the network (an LLM fallback, a webhook, an LLM action)."""
        return self.fallback is not None or any(getattr(a, "egress", False) for a in self.actions.values())

    def run(self, text: str, conversation: str | None = None, request_id: str | None = None) -> Decision:
        label, conf, proba = self.model.predict_one(text)
        return self._after_model(text, conversation, label, conf, proba, request_id)

    def run_many(
        self, texts: list[str], conversations: list[str | None], request_ids: list[str | None] | None = None
    ) -> list[Decision]:
        """``run`` for several messages, the small model called once for all of them (a batch costs
        the model far less per message than one call per message)."""
        ids = request_ids or [None] * len(texts)
        if len(texts) == 1:
            return [self.run(texts[0], conversations[0], ids[0])]
        labels, proba = self.model.predict_and_proba(texts)
        conf = proba.max(axis=1)
        return [
            self._after_model(t, c, str(label), float(p), row, rid)
            for t, c, label, p, row, rid in zip(texts, conversations, labels, conf, proba, ids)
        ]

    def _unexpected(self, d: Decision, step: str, request_id: str | None) -> None:
        log.exception("cascade step %s failed for request %s", step, request_id or "-")
        with self._lock:
            self._errors += 1
        d.flags.append("internal_error")

    def _after_model(
        self,
        text: str,
        conversation: str | None,
        label: str,
        conf: float,
        proba: np.ndarray,
        request_id: str | None = None,
    ) -> Decision:
        """Route and act on one message, given the small model's answer."""
        d = Decision(
            label,
            conf,
            "refused" if label == self._refusal else "local",
            top=top_labels(self.model.classes_, proba, self.top_k),
            local_label=label,
            local_confidence=conf,
        )
        if getattr(self.model, "multi_label", False):
            thresholds = self.model.thresholds_
            d.labels = [str(c) for c, p, t in zip(self.model.classes_, proba, thresholds) if p >= t]
            d.scores = {str(c): round(float(p), 6) for c, p in zip(self.model.classes_, proba)}
            d.label_sep = self.model.label_sep_
        guard = self.guard
        masked: list[str] = []
        if getattr(guard, "operator", None) == "pseudonym":
            # a client's own pseudonym-shaped text ("<EMAIL_ADDRESS_1>") must never be turned back into
            # a value: its brackets are swapped for look-alikes the vault does not issue
            text = neutralise_tokens(text)

        def outgoing() -> str:  # masked once, when something is about to leave
            if guard is None:
                return text
            if not masked:
                m = guard.mask(text, conversation)
                d.pii = dict(m.counts)
                masked.append(m.text)
            return masked[0]

        if guard is not None and not guard.ner:
            # the fast path costs microseconds: count personal data in every message for the audit
            # log (nothing is written to the pseudonym vault unless the text is about to leave)
            for span in guard.find(text):
                d.pii[span.entity] = d.pii.get(span.entity, 0) + 1
        if d.labels is not None:
            d.unsure = self._unsure(proba)
            ask = bool(d.unsure) or (self.llm_first and self.fallback is not None)
        else:
            limit = self.threshold_for(label)
            if self.llm_first and self.fallback is not None:
                limit = 2.0  # every message goes to the LLM; the local answer is kept in the shadow
            ask = limit is not None and conf < limit
        if ask:
            if self.fallback is None:
                d.flags.append("low_confidence_no_fallback")
            else:
                fallback, out = self.fallback, outgoing()
                try:
                    answer = run(self.llm_pool, lambda: fallback(out), self.llm_deadline_s)
                    if d.labels is not None:  # the LLM names the whole label set
                        local = d.label_sep.join(d.labels)
                        d.labels = [x for x in answer.split(d.label_sep) if x]
                        scores = d.scores or {}
                        if d.labels:
                            d.label = max(d.labels, key=lambda x: scores.get(x, 0.0))
                        d.route = "llm"
                        if self.llm_first:
                            d.shadow = {"local": local, "llm": answer}
                    else:
                        d.label, d.route = answer, "llm"
                        if self.llm_first:
                            d.shadow = {"local": label, "llm": d.label}
                except (LLMError, EgressRefused, EgressBusy, EgressDeadline) as e:  # down, slow, busy or refusing
                    d.flags.append(_failure_flag(e))
                    if isinstance(e, EgressDeadline) and hasattr(fallback, "record_failure"):
                        fallback.record_failure()  # a call past its deadline counts toward the breaker
                except Exception:  # a bug, not a known failure: logged and counted
                    self._unexpected(d, "fallback", request_id)
                if not set(d.flags) & _NOT_SENT:  # the request went out (even if no answer came back)
                    d.endpoints.append(self.fallback.endpoint)
        if d.labels is not None:
            plan = self.action_plan(d.labels)
            results = []
            for key in plan:
                r = self._act(d, self.actions[key], key, text, outgoing, conversation, request_id)
                if r is not None:
                    results.append({"label": key, **r})
            if results:
                texts = [r["text"] for r in results if isinstance(r.get("text"), str) and r["text"]]
                d.action = {"type": "multi", "actions": results, **({"text": "\n\n".join(texts)} if texts else {})}
            return d
        act = self.actions.get(d.label)
        if act is not None:
            d.action = self._act(d, act, d.label, text, outgoing, conversation, request_id)
        return d

    def _act(
        self,
        d: Decision,
        act: Action,
        label: str,
        text: str,
        outgoing: Callable[[], str],
        conversation: str | None,
        request_id: str | None,
    ) -> Any:
        """One action's result (None if it failed unexpectedly, which is logged and flagged)."""
        guard = self.guard
        try:
            if act.egress:
                out = outgoing()
                deadline = float(getattr(act, "timeout_s", self.action_deadline_s))
                try:
                    result = run(self.action_pool, lambda: act(out, label), deadline)
                except EgressBusy:
                    result = {"type": getattr(act, "kind", "action"), "sent": False, "error": "egress busy"}
                    d.flags.append("egress_busy")
                except EgressDeadline:
                    result = {"type": getattr(act, "kind", "action"), "error": f"no answer within {deadline:g} s"}
                    d.flags.append("action_deadline")
                if result.get("sent", True):
                    d.endpoints.append(getattr(act, "endpoint", "webhook"))
                if guard is not None and isinstance(result.get("text"), str):
                    result["text"] = guard.reveal(result["text"], conversation)
                return result
            return act(text, label)
        except Exception:
            self._unexpected(d, "action", request_id)
            return None
