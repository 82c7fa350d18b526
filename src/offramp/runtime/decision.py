"""What the cascade answers for one message (:class:`Decision`), what an action did
(:class:`ActionResult`), and the small interfaces its steps plug in through."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol, Sequence

from offramp.types import JSONDict


class Span(Protocol):
    """One piece of personal data found in a text."""

    @property
    def entity(self) -> str: ...

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


class MaskResult(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def counts(self) -> dict[str, int]: ...


class Guard(Protocol):
    """The privacy guard's interface (see :class:`offramp.privacy.guard.PrivacyGuard`): ``find``
    locates personal data; ``mask`` replaces it (given the spans already found, it does not scan
    again); ``reveal`` turns pseudonyms in an LLM's reply back."""

    @property
    def ner(self) -> bool: ...

    @property
    def operator(self) -> str: ...

    def find(self, text: str) -> Sequence[Span]: ...

    def mask(self, text: str, conversation: str | None = None, spans: Sequence[Any] | None = None) -> MaskResult: ...

    def reveal(self, text: str, conversation: str | None = None) -> str: ...


class Fallback(Protocol):
    """An LLM asked for a label: ``fallback(text) -> label``; raises an LLMError on failure."""

    @property
    def endpoint(self) -> str: ...

    def __call__(self, text: str) -> str: ...


@dataclass
class ActionResult:
    """What an action did with a labelled message (JSON: the fields that are set).

    ``type`` names the action (reply, refuse, answer_from_docs, forward, llm; ``multi`` for the
    actions of a multi-label answer, listed in ``actions``); ``text`` is what to say back.
    """

    type: str
    text: str | None = None
    label: str | None = None  # in a multi-label answer's list: the label (or "A+B") it ran for
    found: bool | None = None  # answer_from_docs: a passage scored above its minimum
    source: str | None = None  # answer_from_docs: the passage's file and heading
    score: float | None = None
    delivered: bool | None = None  # forward: the webhook answered 2xx
    status: int | None = None  # forward: the webhook's status code
    answered: bool | None = None  # llm: the LLM replied
    sent: bool | None = None  # False: nothing left the machine (refused by the egress policy, or shed)
    error: str | None = None
    actions: list[ActionResult] | None = None  # multi

    def to_dict(self) -> JSONDict:
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = [a.to_dict() for a in value] if f.name == "actions" else value
        return out


@dataclass
class Decision:
    """The cascade's answer for one message.

    ``route`` is ``local`` (the small model answered), ``llm`` (the fallback did) or ``refused``
    (the model's "don't know"). ``flags`` name what went differently (``low_confidence_no_fallback``,
    ``llm_circuit_open``, ``egress_refused``, ``internal_error``, ...). ``spans`` are the personal
    data the guard found in the text, found once and reused by every step that masks.
    """

    label: str
    confidence: float
    route: str  # "local", "llm" or "refused"
    flags: list[str] = field(default_factory=list)
    action: ActionResult | None = None
    top: list[dict[str, object]] = field(default_factory=list)
    pii: dict[str, int] = field(default_factory=dict)  # personal data found, by type
    endpoints: list[str] = field(default_factory=list)  # where (masked) text was sent, if anywhere
    local_label: str = ""  # the small model's own answer (before any fallback)
    local_confidence: float = 0.0
    shadow: dict[str, str] | None = None  # llm_first: {"local": ..., "llm": ...}, both answers compared
    labels: list[str] | None = None  # a multi-label model: every label over its threshold
    scores: dict[str, float] | None = None  # a multi-label model: every label's probability
    label_sep: str = "|"
    unsure: list[str] | None = None  # a multi-label model: labels whose probability fell in their unsure band
    path: list[dict[str, object]] | None = None  # a chain: each stage's label, confidence, route and version
    spans: Sequence[Span] = field(default_factory=tuple, repr=False)
    masked: str | None = field(default=None, repr=False)  # the text as masked for egress, once masked
