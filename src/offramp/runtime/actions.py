"""What happens to a message once it has a label.

* ``reply``            a fixed text (e.g. a thumbs-up for thanks)
* ``refuse``           a templated refusal (``{label}`` and ``{text_chars}`` may appear in it)
* ``answer_from_docs`` the best-matching passage of a folder of Markdown docs, with its source
* ``forward``          POST the message and its label as JSON to a webhook
* ``llm``              hand the message to the LLM and return its reply
* ``none``             the label only

Each action is a callable ``(text, label) -> ActionResult``; a failing webhook or LLM is reported
in the result, never raised, so the label still reaches the caller. Actions marked ``egress`` send the
message off the machine: the cascade gives them the text after the privacy guard, and turns
pseudonyms in an LLM's reply back before it reaches the user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from offramp.egress.policy import EgressPolicy, EgressRefused
from offramp.encoders import sentence as enc
from offramp.errors import UsageError
from offramp.estimators.features import NgramFeaturizer
from offramp.llm.client import ChatClient, LLMError
from offramp.runtime.decision import ActionResult


class Action(Protocol):
    """What happens to a labelled message: ``(text, label) -> result``. ``egress`` actions send the
    text off the machine (the cascade hands them masked text); they name their ``endpoint``."""

    egress: bool

    def __call__(self, text: str, label: str) -> ActionResult: ...


@dataclass
class Reply:
    text: str
    egress = False

    def __call__(self, text: str, label: str) -> ActionResult:
        return ActionResult("reply", text=self.text)


@dataclass
class Refuse:
    template: str = "Sorry, I can't help with that here."
    egress = False

    def __call__(self, text: str, label: str) -> ActionResult:
        return ActionResult(
            "refuse", text=self.template.replace("{label}", label).replace("{text_chars}", str(len(text)))
        )


class AnswerFromDocs:
    """Retrieval over Markdown passages (split at headings).

    ``method``: "embeddings" (cosine of MiniLM sentence vectors: matches paraphrases), "tfidf"
    (word + char n-grams: no encoder needed), or "auto" (embeddings when the encoder is installed).
    Below ``min_score`` (default 0.3 for embeddings, 0.1 for TF-IDF) nothing is returned.
    """

    egress = False

    def __init__(self, folder: str | Path, min_score: float | None = None, method: str = "auto"):
        folder = Path(folder)
        if not folder.is_dir():
            raise UsageError(f"docs folder {folder} does not exist", "answer_from_docs needs a folder of .md files")
        self.passages: list[tuple[str, str]] = []  # (source, text)
        for f in sorted(folder.rglob("*.md")):
            body = f.read_text(encoding="utf-8", errors="replace")
            for part in re.split(r"(?m)^(?=#{1,3} )", body):
                part = part.strip()
                if part:
                    heading = part.splitlines()[0].lstrip("# ").strip()
                    self.passages.append((f"{f.relative_to(folder)}#{heading}", part))
        if not self.passages:
            raise UsageError(f"docs folder {folder} has no Markdown passages", "add .md files with # headings")
        if method not in ("auto", "embeddings", "tfidf"):
            raise UsageError(f"answer_from_docs method must be auto, embeddings or tfidf, got {method!r}")
        self.method = ("embeddings" if enc.available() else "tfidf") if method == "auto" else method
        texts = [p for _, p in self.passages]
        if self.method == "embeddings":
            self._enc = enc.SentenceEncoder.shared()
            self._P = self._enc.encode_uncached(texts)
        else:
            self._feat = NgramFeaturizer(min_df=1).fit(texts)
            self._X = self._feat.transform(texts)
        self.min_score = min_score if min_score is not None else (0.3 if self.method == "embeddings" else 0.1)

    def scores(self, text: str) -> np.ndarray:
        if self.method == "embeddings":
            return np.asarray(self._P @ self._enc.encode_uncached([text])[0])
        q = self._feat.transform([text])
        return np.asarray((self._X @ q.T).todense()).ravel() / 2  # two unit-norm blocks: cosine in [0, 1]

    def __call__(self, text: str, label: str) -> ActionResult:
        scores = self.scores(text)
        best = int(scores.argmax())
        if scores[best] < self.min_score:
            return ActionResult("answer_from_docs", found=False, score=round(float(scores[best]), 4))
        source, passage = self.passages[best]
        return ActionResult(
            "answer_from_docs", text=passage, found=True, source=source, score=round(float(scores[best]), 4)
        )


@dataclass
class Forward:
    url: str
    timeout_s: float = 2.0
    policy: EgressPolicy = field(default_factory=EgressPolicy.from_env)
    egress = True
    kind = "forward"

    @property
    def endpoint(self) -> str:
        return self.url

    def __call__(self, text: str, label: str) -> ActionResult:
        import time

        import httpx

        try:
            (text,) = self.policy.check(self.url, [text])
            deadline = time.monotonic() + self.timeout_s
            with httpx.stream("POST", self.url, json={"text": text, "label": label}, timeout=self.timeout_s) as r:
                for _ in r.iter_raw():  # a body dripped byte by byte is cut at the deadline, not read for ever
                    if time.monotonic() > deadline:
                        return ActionResult("forward", delivered=False, error="deadline")
            return ActionResult("forward", delivered=r.is_success, status=r.status_code)
        except EgressRefused as e:
            return ActionResult("forward", delivered=False, sent=False, error=e.message)
        except httpx.HTTPError as e:
            return ActionResult("forward", delivered=False, error=type(e).__name__)


class LLMAction:
    """Hand the message to the LLM (say, to answer an open question) and return its reply."""

    egress = True
    kind = "llm"

    DEFAULT_SYSTEM = "You are a helpful support assistant. Answer briefly."

    def __init__(self, client: ChatClient, system: str = DEFAULT_SYSTEM, max_tokens: int = 256):
        self.client, self.system, self.max_tokens = client, system, max_tokens

    @property
    def timeout_s(self) -> float:
        """The whole call's deadline: the client's timeout (one attempt's worth)."""
        return float(self.client.config.timeout_s)

    @property
    def endpoint(self) -> str:
        return self.client.url

    def __call__(self, text: str, label: str) -> ActionResult:
        try:
            r = self.client.chat(
                [{"role": "system", "content": self.system}, {"role": "user", "content": text}],
                temperature=0,
                max_tokens=self.max_tokens,
            )
        except EgressRefused as e:
            return ActionResult("llm", answered=False, sent=False, error=e.message)
        except LLMError as e:
            return ActionResult("llm", answered=False, error=getattr(e, "message", str(e)))
        return ActionResult("llm", text=r.content, answered=True)


def build_action(
    spec: dict[str, Any], base: Path, llm_client: ChatClient | None = None, policy: EgressPolicy | None = None
) -> Action | None:
    """An action from its YAML description (``type`` plus its fields); paths are relative to ``base``."""
    kind = spec.get("type")
    if kind == "llm":
        if llm_client is None:
            raise UsageError("the llm action needs the pipeline's 'llm:' section (base_url, model)")
        return LLMAction(
            llm_client, str(spec.get("system", LLMAction.DEFAULT_SYSTEM)), int(spec.get("max_tokens", 256))
        )
    if kind == "reply":
        return Reply(str(spec.get("text", "")))
    if kind == "refuse":
        return Refuse(str(spec.get("template", Refuse.template)))
    if kind == "answer_from_docs":
        ms = spec.get("min_score")
        docs = str(spec.get("docs", "docs"))
        folder = (base / docs).resolve()
        if not folder.is_relative_to(base.resolve()):  # its passages are sent to clients
            raise UsageError(
                f"answer_from_docs: docs {docs!r} points outside the pipeline's directory",
                "keep the docs folder beside the pipeline file (or below it)",
            )
        return AnswerFromDocs(folder, float(ms) if ms is not None else None, str(spec.get("method", "auto")))
    if kind == "forward":
        url = str(spec.get("url", ""))
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"forward action needs an http(s) url, got {url!r}")
        return Forward(url, float(spec.get("timeout_s", 2.0)), policy or EgressPolicy.from_env())
    if kind in (None, "none"):
        return None
    raise UsageError(f"unknown action type {kind!r}", "use reply, refuse, answer_from_docs, forward, llm or none")
