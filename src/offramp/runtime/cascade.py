"""The cascade a message goes through when served: guard -> classify -> route -> act; and the one
place its parts are wired (:func:`build`, :meth:`Cascade.from_pipeline`).

Each step is an object with a small typed interface (:mod:`offramp.runtime.decision`), so the
privacy guard, the LLM fallback and the per-label actions plug in without touching the others:

* the guard finds personal data once per message; the spans travel on the :class:`Decision`, and
  every step that masks (the LLM fallback, ``llm`` and ``forward`` actions, the review queue, the
  capture pool) masks with them instead of scanning again; ``reveal`` turns pseudonyms in an
  LLM's reply back before it reaches the user
* the small model — ``predict_one`` / ``predict_and_proba``: label and calibrated confidence
* the fallback — an LLM asked only when the small model is unsure; a known failure (down, slow,
  circuit open, egress refused) keeps the local answer, flagged by its type
* the actions — what to do with the answer, per label

What depends only on the wiring (which labels go to the LLM under which confidence, whether a
message can wait on the network) is worked out once, when the cascade is built, not per message.
An unexpected exception in a step is logged with the request id, counted in ``Cascade.errors`` and
flagged ``internal_error``; the local answer still goes back.

:func:`build` turns resolved :class:`~offramp.runtime.config.Settings` into a ready cascade: the
CLI's ``serve``, the service's start-up and its reloads all come through it, so a pipeline's
``privacy:`` guard is the one the cascade masks with *and* the one its LLM client and webhooks
apply at egress, and a reload starts from the file's current settings (nothing is kept in module
globals).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence, TypedDict

import numpy as np

from offramp.capture.live import Capture
from offramp.capture.pool import Pool
from offramp.data.io import read_dataset
from offramp.data.multilabel import parse_label_sets
from offramp.egress.policy import EgressPolicy, EgressRefused
from offramp.egress.pool import EgressBusy, EgressDeadline, EgressPool, run
from offramp.errors import UsageError
from offramp.estimators.base import TextClassifier
from offramp.estimators.multilabel import indicator
from offramp.llm.client import ChatClient, LLMConfig, LLMError
from offramp.modeldir.store import model_version, read_model_json
from offramp.monitoring.drift import DriftReference
from offramp.monitoring.shadow import ShadowSampler
from offramp.privacy.guard import PrivacyGuard, build_guard, neutralise_tokens
from offramp.proxy.task import ProxyTask, read_task
from offramp.registry.records import load, resolve_model_dir
from offramp.runtime.actions import Action, build_action
from offramp.runtime.config import LLMSpec, PipelineSpec, Settings
from offramp.runtime.decision import ActionResult, Decision, Fallback, Guard
from offramp.runtime.fallback import CircuitOpen, LLMFallback
from offramp.runtime.routing import Fitted, fit_bands, fit_thresholds

log = logging.getLogger("offramp.cascade")


def failure_flag(e: Exception) -> str:
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


NOT_SENT = {"llm_circuit_open", "egress_refused", "egress_busy", "internal_error"}


def ask_fallback(
    fallback: Fallback, text: str, pool: EgressPool | None, deadline_s: float
) -> tuple[str | None, str | None]:
    """(the LLM's answer for ``text``, already masked, None) — or (None, the failure's flag) when
    the LLM is down, slow, busy or refusing; a call past its deadline counts toward the breaker.
    A bug is not caught."""
    try:
        return run(pool, lambda: fallback(text), deadline_s), None
    except (LLMError, EgressRefused, EgressBusy, EgressDeadline) as e:
        if isinstance(e, EgressDeadline) and hasattr(fallback, "record_failure"):
            fallback.record_failure()
        return None, failure_flag(e)


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
        classes = [str(c) for c in self.model.classes_]
        self._classes = classes
        self._class_array = np.array(classes, dtype=object)
        # the label the model answers when it does not know, if it is not one of its classes
        reject = self.model.reject_label_
        self._refusal = reject if reject is not None and reject not in set(classes) else None
        self._multi = bool(getattr(self.model, "multi_label", False))
        # the confidence under which each label's answer goes to the LLM (None: never), known now
        self._limits: dict[str, float | None] = {c: self.threshold_for(c) for c in classes}
        if self._refusal is not None:
            self._limits[self._refusal] = self.threshold_for(self._refusal)
        self._default_limit = self.thresholds.get("*")
        if self._multi:
            self._bands = np.array(
                [b if b is not None else -1.0 for b in (self.band_for(c) for c in classes)], dtype=np.float64
            )
            self._model_thresholds = np.asarray(self.model.thresholds_, dtype=np.float64)
            self._label_sep = str(self.model.label_sep_)
        self._may_block = self.fallback is not None or any(getattr(a, "egress", False) for a in self.actions.values())
        self._pseudonyms = getattr(self.guard, "operator", None) == "pseudonym"
        self._scan = self.guard is not None and not self.guard.ner  # the fast path scans every message
        self._errors = 0
        self._lock = threading.Lock()

    @classmethod
    def from_pipeline(cls, path: str | os.PathLike[str], **settings: object) -> Cascade:
        """The cascade a pipeline file (or a model directory, or a registry) describes, wired as
        ``offramp serve`` wires it; ``settings`` override the file's service settings as flags do.

        Example
        -------
        ``Cascade.from_pipeline("pipeline.yaml").run("thanks a lot!").label``
        """
        return build(Settings.resolve(path, settings)).cascade

    @property
    def refusal_label(self) -> str | None:
        """The label answered for "don't know" when it is not one of the model's classes."""
        return self._refusal

    @property
    def errors(self) -> int:
        """Unexpected exceptions caught (and logged) in the cascade's steps so far."""
        return self._errors

    @property
    def may_block(self) -> bool:
        """True when a message can wait on the network (an LLM fallback, a webhook, an LLM action)."""
        return self._may_block

    def threshold_for(self, label: str) -> float | None:
        return self.thresholds.get(label, self.thresholds.get("*"))

    def band_for(self, label: str) -> float | None:
        return self.bands.get(label, self.bands.get("*"))

    def _unsure(self, proba: np.ndarray) -> list[str]:
        """A multi-label model's labels whose probability lies inside their unsure band."""
        if not self.bands:
            return []
        near = np.abs(np.asarray(proba, dtype=np.float64) - self._model_thresholds) < self._bands
        return [self._classes[i] for i in np.flatnonzero(near)]

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
        classes = {c: i for i, c in enumerate(self._classes)}

        def rank(key: str) -> tuple[int, int]:
            parts = key.split("+")
            return min(order.get(p, len(order)) for p in parts), min(classes.get(p, len(classes)) for p in parts)

        return sorted(plan, key=rank)

    def run(self, text: str, conversation: str | None = None, request_id: str | None = None) -> Decision:
        label, conf, proba = self.model.predict_one(text)
        return self._after_model(text, conversation, label, conf, proba, request_id)

    def run_many(
        self,
        texts: Sequence[str],
        conversations: Sequence[str | None],
        request_ids: Sequence[str | None] | None = None,
    ) -> list[Decision]:
        """``run`` for several messages, the small model called once for all of them (a batch costs
        the model far less per message than one call per message)."""
        ids: Sequence[str | None] = request_ids or [None] * len(texts)
        if len(texts) == 1:
            return [self.run(texts[0], conversations[0], ids[0])]
        labels, proba = self.model.predict_and_proba(list(texts))
        conf = proba.max(axis=1)
        # the top labels of every row in one sort (a sort per message costs more than the model)
        order = np.argsort(-proba, axis=1, kind="stable")[:, : self.top_k]
        return [
            self._after_model(t, c, str(label), float(p), row, rid, top)
            for t, c, label, p, row, rid, top in zip(texts, conversations, labels, conf, proba, ids, order)
        ]

    def _unexpected(self, d: Decision, step: str, request_id: str | None) -> None:
        log.exception("cascade step %s failed for request %s", step, request_id or "-")
        with self._lock:
            self._errors += 1
        d.flags.append("internal_error")

    def top_labels(self, proba: np.ndarray, order: np.ndarray | None = None) -> list[dict[str, object]]:
        """The ``top_k`` most probable labels with their probabilities, best first (``order``: their
        indices, when already sorted)."""
        if order is None:
            order = (-proba).argsort(kind="stable")[: self.top_k]
        classes = self._classes
        return [{"label": classes[i], "score": round(p, 6)} for i, p in zip(order.tolist(), proba[order].tolist())]

    def _outgoing(self, d: Decision, text: str, conversation: str | None) -> str:
        """The text as it may leave the machine: masked once, with the spans already found."""
        if d.masked is None:
            guard = self.guard
            if guard is None:
                d.masked = text
            else:
                m = guard.mask(text, conversation, spans=d.spans if self._scan else None)
                if not self._scan:  # the NER path found them only now
                    d.pii = dict(m.counts)
                d.masked = m.text
        return d.masked

    def _after_model(
        self,
        text: str,
        conversation: str | None,
        label: str,
        conf: float,
        proba: np.ndarray,
        request_id: str | None = None,
        top: np.ndarray | None = None,
    ) -> Decision:
        """Route and act on one message, given the small model's answer."""
        d = Decision(
            label,
            conf,
            "refused" if label == self._refusal else "local",
            top=self.top_labels(proba, top),
            local_label=label,
            local_confidence=conf,
        )
        if self._multi:
            thresholds = self._model_thresholds
            d.labels = [self._classes[i] for i in np.flatnonzero(proba >= thresholds)]
            d.scores = {c: round(float(p), 6) for c, p in zip(self._classes, proba)}
            d.label_sep = self._label_sep
        if self._pseudonyms:
            # a client's own pseudonym-shaped text ("<EMAIL_ADDRESS_1>") must never be turned back into
            # a value: its brackets are swapped for look-alikes the vault does not issue
            text = neutralise_tokens(text)
        if self._scan:
            # the fast path costs microseconds: find personal data in every message once, for the
            # audit record and for every later step that masks (nothing is written to the pseudonym
            # vault unless the text is about to leave)
            assert self.guard is not None
            d.spans = self.guard.find(text)
            for span in d.spans:
                d.pii[span.entity] = d.pii.get(span.entity, 0) + 1
        fallback = self.fallback
        if d.labels is not None:
            d.unsure = self._unsure(proba)
            ask = bool(d.unsure) or (self.llm_first and fallback is not None)
        else:
            limit = self._limits.get(label, self._default_limit)
            if self.llm_first and fallback is not None:
                limit = 2.0  # every message goes to the LLM; the local answer is kept in the shadow
            ask = limit is not None and conf < limit
        if ask:
            if fallback is None:
                d.flags.append("low_confidence_no_fallback")
            else:
                out = self._outgoing(d, text, conversation)
                try:
                    answer, failed = ask_fallback(fallback, out, self.llm_pool, self.llm_deadline_s)
                    if answer is None:
                        d.flags.append(str(failed))
                    elif d.labels is not None:  # the LLM names the whole label set
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
                except Exception:  # a bug, not a known failure: logged and counted
                    self._unexpected(d, "fallback", request_id)
                if not set(d.flags) & NOT_SENT:  # the request went out (even if no answer came back)
                    d.endpoints.append(fallback.endpoint)
        if not self.actions:
            return d
        if d.labels is not None:
            results = []
            for key in self.action_plan(d.labels):
                r = self._act(d, self.actions[key], key, text, conversation, request_id)
                if r is not None:
                    r.label = key
                    results.append(r)
            if results:
                texts = [r.text for r in results if r.text]
                d.action = ActionResult("multi", text="\n\n".join(texts) if texts else None, actions=results)
            return d
        act = self.actions.get(d.label)
        if act is not None:
            d.action = self._act(d, act, d.label, text, conversation, request_id)
        return d

    def _act(
        self,
        d: Decision,
        act: Action,
        label: str,
        text: str,
        conversation: str | None,
        request_id: str | None,
    ) -> ActionResult | None:
        """One action's result (None if it failed unexpectedly, which is logged and flagged)."""
        try:
            if act.egress:
                out = self._outgoing(d, text, conversation)
                return send_action(
                    act,
                    out,
                    label,
                    self.action_pool,
                    self.action_deadline_s,
                    self.guard,
                    conversation,
                    d.flags,
                    d.endpoints,
                )
            return act(text, label)
        except Exception:
            self._unexpected(d, "action", request_id)
            return None


def send_action(
    act: Action,
    out: str,
    label: str,
    pool: EgressPool | None,
    deadline_s: float,
    guard: Guard | None,
    conversation: str | None,
    flags: list[str],
    endpoints: list[str],
) -> ActionResult:
    """Run an action that sends ``out`` (the text as masked for egress) off the machine, in its pool
    under its deadline: a busy pool or a missed deadline is a result with an error, flagged in
    ``flags``; where the text went is added to ``endpoints``; pseudonyms in the reply are turned back."""
    deadline = float(getattr(act, "timeout_s", deadline_s))
    kind = str(getattr(act, "kind", "action"))
    try:
        result = run(pool, lambda: act(out, label), deadline)
    except EgressBusy:
        result = ActionResult(kind, sent=False, error="egress busy")
        flags.append("egress_busy")
    except EgressDeadline:
        result = ActionResult(kind, error=f"no answer within {deadline:g} s")
        flags.append("action_deadline")
    if result.sent is not False:
        endpoints.append(str(getattr(act, "endpoint", "webhook")))
    if guard is not None and result.text:
        result.text = guard.reveal(result.text, conversation)
    return result


# ------------------------------------------------------------------------------- wiring


class Answerer(Protocol):
    """What the service needs of what it serves: a :class:`Cascade`, or a chain of them
    (:class:`offramp.chain.run.Chain`)."""

    @property
    def guard(self) -> Guard | None: ...

    @property
    def llm_pool(self) -> EgressPool | None: ...

    @property
    def action_pool(self) -> EgressPool | None: ...

    @property
    def may_block(self) -> bool: ...

    @property
    def errors(self) -> int: ...

    def threshold_for(self, label: str) -> float | None: ...

    def run_many(
        self,
        texts: Sequence[str],
        conversations: Sequence[str | None],
        request_ids: Sequence[str | None] | None = None,
    ) -> list[Decision]: ...


class ModelInfo(TypedDict, total=False):
    """What the service reports about the model it serves (``/readyz``)."""

    model: str | None
    created: str | None
    family: str | None
    version: str | None  # the registry version when serving a registry, else the manifest hash
    manifest: str
    registry_version: str | None
    labels: list[str]
    routing: Fitted | None  # the fitted routing's summary (see offramp.runtime.routing)
    shadow: str
    stages: list[dict[str, str | None]]  # a chain: each stage's name, kind, version and model


@dataclass
class Built:
    """A wired cascade and what the service reports about it."""

    cascade: Cascade
    settings: Settings
    model_dir: Path  # the directory loaded (a registry's current version when serving a registry)
    info: ModelInfo
    registry: Path | None = None  # the registry served, if any
    capture: Capture | None = None  # the pipeline's capture: section
    shadow: ShadowSampler | None = None  # shadow: {mode: local_first}
    reference: DriftReference | None = None  # training-time distributions, for drift
    tasks: tuple[ProxyTask, ...] = ()  # proxy mode: how the app asks for this task (the pipeline's task files)
    policy: EgressPolicy | None = None  # what text may leave, and masked how (the pipeline's egress policy)
    chain: Answerer | None = None  # a chain of stages: what answers (``cascade`` is then its first model's)
    closers: tuple[Callable[[], None], ...] = ()  # more to release on close (a chain's pools and clients)

    @property
    def answers(self) -> Answerer:
        """What decides messages: the chain when there is one, else the cascade."""
        return self.chain if self.chain is not None else self.cascade

    def close(self) -> None:
        """Release what the cascade holds open: the pseudonym vault, the LLM client's connections,
        the capture pool and the shadow worker."""
        for closer in self.closers:
            closer()
        if self.shadow is not None:
            self.shadow.close()
        if self.capture is not None:
            self.capture.close()
        for pool in (self.cascade.llm_pool, self.cascade.action_pool):
            if pool is not None:
                pool.close()
        guard, fallback = self.cascade.guard, self.cascade.fallback
        vault = getattr(guard, "vault", None)
        if vault is not None:
            vault.close()
        client = getattr(fallback, "client", None)
        if client is not None:
            client.close()


def egress_policy(settings: Settings, guard: PrivacyGuard | None) -> EgressPolicy:
    """The egress policy of ``settings``, masking with the pipeline's ``guard`` (None: nothing is masked)."""
    return EgressPolicy(offline=settings.offline, guard_mode=settings.egress_guard, guard=guard)


def model_info(
    model: TextClassifier,
    model_dir: Path,
    routing: Fitted | None = None,
    registry_version: str | None = None,
) -> ModelInfo:
    """What /readyz reports: ``version`` is the registry version when serving a registry, else the
    manifest hash (always in ``manifest``)."""
    doc = read_model_json(model_dir)
    manifest = model_version(model_dir)
    return {
        "model": doc.get("info", {}).get("winner", doc.get("family")),
        "created": doc.get("created"),
        "family": doc.get("family"),
        "version": registry_version or manifest,
        "manifest": manifest,
        "registry_version": registry_version,
        "labels": [str(c) for c in model.classes_],
        "routing": routing,
    }


def pipeline_guard(spec: PipelineSpec, base: Path) -> PrivacyGuard | None:
    """The pipeline's privacy guard: its ``privacy:`` section, else the default guard (None when
    the section turns it off)."""
    return build_guard(spec.privacy.model_dump(), base) if spec.privacy is not None else PrivacyGuard()


def llm_client(c: LLMSpec, policy: EgressPolicy) -> ChatClient:
    """The client of the pipeline's ``llm:`` section, sending under ``policy``."""
    return ChatClient(
        LLMConfig(
            base_url=c.base_url,
            model=c.model,
            api_key_env=c.api_key_env,
            timeout_s=c.timeout_s,
            max_retries=c.max_retries,
        ),
        policy=policy,
    )


def build(settings: Settings) -> Built:
    """Load the model and wire guard, routing, fallback and actions as ``settings`` say."""
    if settings.engine != "local":
        raise UsageError(
            f"--engine {settings.engine} serves a chain's stages as Ray Serve deployments, and {settings.target} is one model",
            "serve it without --engine, or write a pipeline file with stages:",
        )
    model_dir, registry_version = resolve_model_dir(settings.model_dir)
    registry = settings.model_dir if registry_version is not None else None
    model = load(model_dir)
    spec = settings.pipeline
    if spec is None:  # a bare model directory: the default guard, every answer local
        guard: PrivacyGuard | None = PrivacyGuard()
        info = model_info(model, model_dir, registry_version=registry_version)
        reference = DriftReference.of(model)
        policy = egress_policy(settings, guard)
        return Built(
            Cascade(model, guard=guard), settings, model_dir, info, registry, reference=reference, policy=policy
        )
    path, base = settings.target, settings.base
    labels = set(map(str, model.classes_)) | set(spec.llm.labels or [] if spec.llm else [])
    multi = bool(getattr(model, "multi_label", False))
    _check_multilabel_keys(spec, path, multi, labels)
    keys = {k for k in spec.actions if not (multi and "+" in k)}
    unknown = sorted(keys - labels - {str(model.reject_label_)})
    if unknown:
        raise UsageError(
            f"{path}: actions for labels the model does not have: {', '.join(unknown)}",
            f"the model's labels are: {', '.join(sorted(labels))}",
        )
    # no privacy: section means the default guard (pattern fast path, typed placeholders);
    # privacy: {enabled: false} turns it off, at egress too
    guard = pipeline_guard(spec, base)
    policy = egress_policy(settings, guard)
    client = llm_client(spec.llm, policy) if spec.llm is not None else None
    actions: dict[str, Action] = {}
    for label, a in spec.actions.items():
        act = build_action(a, base, client, policy)
        if act is not None:
            actions[label] = act
    thresholds: dict[str, float] = {}
    summary: Fitted | None = None
    if spec.routing and spec.routing.thresholds:
        thresholds = dict(spec.routing.thresholds)
    bands = dict(spec.routing.unsure_band) if spec.routing and spec.routing.unsure_band else {}
    if multi and spec.routing and spec.routing.fit:  # one band for every label, fitted on label sets
        f = spec.routing.fit
        val = read_dataset(base / f.val, need_labels=False)
        if val.labels is None:
            raise UsageError(f"{path}: routing.fit.val {f.val} has no label column", "give a labelled file")
        val_sets, _ = parse_label_sets(val.labels, str(model.label_sep_))
        known = [str(c) for c in model.classes_]
        summary = fit_bands(
            model.predict_proba(val.texts),
            model.thresholds_,
            indicator(val_sets, known),
            max_llm_share=f.max_llm_share,
            local_precision=f.local_precision,
            unreachable=np.array([not set(s) <= set(known) for s in val_sets], dtype=bool),
        )
        lacking = sorted({lab for s in val_sets for lab in s} - set(known))
        if lacking:  # counted as wrong, and said: the file may be meant for another model
            summary["held_out"]["labels_not_in_model"] = lacking
        bands = {**summary["bands"], **{k: v for k, v in bands.items() if k != "*"}}
    elif spec.routing and spec.routing.fit:
        f = spec.routing.fit
        val = read_dataset(base / f.val)
        summary = fit_thresholds(
            model.predict_proba(val.texts),
            model.classes_,
            val.labels or [],
            max_llm_share=f.max_llm_share,
            local_precision=f.local_precision,
        )
        thresholds = summary["thresholds"]
    fallback = None
    llm_labels = [str(c) for c in model.classes_]

    def ask_llm() -> LLMFallback:  # each use gets its own breaker
        assert client is not None and spec is not None and spec.llm is not None
        return LLMFallback(
            client,
            llm_labels,
            spec.llm.descriptions,
            spec.llm.failure_threshold,
            spec.llm.reset_after_s,
            multi_label=multi,
            label_sep=getattr(model, "label_sep_", "|"),
        )

    if spec.llm is not None and spec.llm.labels:
        llm_labels += [lab for lab in spec.llm.labels if lab not in set(llm_labels)]
    if client is not None and spec.llm is not None:
        fallback = ask_llm()
    llm_first = spec.shadow is not None and spec.shadow.mode == "llm_first"
    cascade = Cascade(
        model,
        fallback=fallback,
        thresholds=thresholds,
        actions=actions,
        guard=guard,
        llm_first=llm_first,
        llm_pool=EgressPool("llm") if fallback is not None else None,
        action_pool=EgressPool("actions") if any(getattr(a, "egress", False) for a in actions.values()) else None,
        llm_deadline_s=spec.llm.timeout_s if spec.llm is not None else 5.0,
        bands=bands,
        action_order=list(spec.action_order or []),
    )
    # what is stored is masked even where the pipeline turns its guard off for the traffic itself
    store_mask = guard if guard is not None else PrivacyGuard()
    capture = None
    if spec.capture is not None:
        cap = spec.capture
        capture = Capture(
            Pool(base / cap.pool, store_mask),
            store_mask,
            sorted(labels),
            sources=cap.sources,
            ttl_s=cap.ttl_s,
            allow_new_labels=cap.allow_new_labels,
            max_requests=cap.max_requests,
            label_sep=str(model.label_sep_) if multi else None,
        )
    shadow = None
    if spec.shadow is not None and spec.shadow.mode == "local_first" and spec.llm is not None and client is not None:
        # its own breaker: a slow shadow LLM must not open the fallback's circuit
        ask = ask_llm()
        shadow = ShadowSampler(ask, store_mask, spec.shadow.sample, spec.shadow.queue)
    info = model_info(model, model_dir, summary, registry_version)
    tasks = tuple(read_task(base / t) for t in ([spec.task] if spec.task else list(spec.tasks or [])))
    if spec.shadow is not None:
        info["shadow"] = spec.shadow.mode
    return Built(
        cascade,
        settings,
        model_dir,
        info,
        registry,
        capture,
        shadow,
        DriftReference.of(model, thresholds),
        tasks=tasks,
        policy=policy,
    )


def _check_multilabel_keys(spec: PipelineSpec, path: object, multi: bool, labels: set[str]) -> None:
    """The keys only a multi-label model takes (unsure bands, combination actions, action order),
    refused by name on a single-label model, and the single-label routing keys refused on a
    multi-label one; every label they name must be the model's."""
    routing = spec.routing
    combos = [k for k in spec.actions if "+" in k]
    if not multi:
        extra = (["routing.unsure_band"] if routing and routing.unsure_band else []) + (
            ["action_order"] if spec.action_order else []
        )
        if extra:
            raise UsageError(
                f"{path}: {' and '.join(extra)} go with a multi-label model, and this model has one label per message",
                "route a single-label model with routing.thresholds",
            )
        return
    if routing and routing.thresholds:
        raise UsageError(
            f"{path}: a multi-label model is routed by routing.unsure_band (or fit), not thresholds",
            'for example routing: {unsure_band: {"*": 0.15}}',
        )
    named = (
        [p for k in combos for p in k.split("+")]
        + list(spec.action_order or [])
        + [k for k in (routing.unsure_band or {} if routing else {}) if k != "*"]
    )
    unknown = sorted({p.strip() for p in named} - labels)
    if unknown:
        raise UsageError(
            f"{path}: labels the model does not have: {', '.join(unknown)}",
            f"the model's labels are: {', '.join(sorted(labels))}",
        )
