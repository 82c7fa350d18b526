"""A chain of stages answering one message or a batch: guard → classify … → action.

Each classify stage is a :class:`~offramp.runtime.cascade.Cascade` of its own (its model, its
thresholds, and — when the pipeline has an ``llm:`` section — a fallback that asks that stage's
question with that stage's labels), so routing, the fallback's breaker and its failure flags work
exactly as in a single-model pipeline. The chain adds what lies between the stages: which stage
runs for which message (``when:``), the full label (the labelling stages' labels joined by
``label_sep``), and the path taken — each stage's label, confidence, route and version — on the
:class:`~offramp.runtime.decision.Decision`.

A batch goes through the chain stage by stage: each model is called once for the messages that
reach it, so a chain of *k* models costs a batch about *k* model calls, never one per message.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Sequence, cast

import numpy as np
import scipy.sparse as sp

from offramp.chain.remote import RemoteStage, StageUnavailable
from offramp.chain.spec import Clause, StageSpec, parse_when, read_stages
from offramp.egress.pool import EgressPool, run
from offramp.errors import UsageError
from offramp.estimators.base import TextClassifier, softmax
from offramp.estimators.tfidf import TfidfLinear
from offramp.llm.client import ChatClient
from offramp.modeldir.store import model_version
from offramp.monitoring.shadow import ShadowResult, ShadowSampler
from offramp.privacy.guard import PrivacyGuard
from offramp.registry.records import load, resolve_model_dir
from offramp.runtime.actions import Action, build_action
from offramp.runtime.cascade import (
    NOT_SENT,
    Built,
    Cascade,
    ModelInfo,
    ask_fallback,
    egress_policy,
    llm_client,
    model_info,
    pipeline_guard,
    send_action,
)
from offramp.runtime.config import LLMSpec, Settings
from offramp.runtime.decision import ActionResult, Decision
from offramp.runtime.fallback import LLMFallback

log = logging.getLogger("offramp.chain")


@dataclass
class Stage:
    """One stage, wired: a classify stage holds its own cascade and the version it serves."""

    spec: StageSpec
    clauses: list[Clause] = field(default_factory=list)
    cascade: Cascade | None = None  # classify
    version: str | None = None  # classify: the registry version, else the model directory's manifest hash
    model_dir: Path | None = None  # classify: the directory loaded (a registry's current version)
    registry: Path | None = None  # classify: the registry served, if any
    actions: dict[str, Action] = field(default_factory=dict)  # action
    checker: TextClassifier | None = None  # validate: the model that judges replies
    remote: RemoteStage | None = None  # classify: the other service answering this stage
    shadow: ShadowSampler | None = None  # classify, with shadow: local_first: the LLM asked this stage's question
    asker: LLMFallback | None = None  # llm (labelling): the pipeline's LLM, asked the full label

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def labels(self) -> list[str]:
        """A classify stage's labels (with its "don't know" answer, when it has one)."""
        if self.cascade is None:
            return []
        model = self.cascade.model
        out = [str(c) for c in model.classes_]
        reject = model.reject_label_
        return out + ([str(reject)] if reject is not None and str(reject) not in out else [])


class _Answers:
    """One stage's model answers for a batch: the probabilities, and the top labels' order sorted
    for the whole batch the first time a message asks for its top labels (one sort per batch, and
    none for a stage that is never the last one)."""

    __slots__ = ("cascade", "proba", "_order")

    def __init__(self, cascade: Cascade, proba: np.ndarray) -> None:
        self.cascade, self.proba = cascade, proba
        self._order: np.ndarray | None = None

    def top(self, i: int) -> list[dict[str, object]]:
        if len(self.proba) == 1:
            return self.cascade.top_labels(self.proba[0])
        if self._order is None:
            self._order = np.argsort(-self.proba, axis=1, kind="stable")[:, : self.cascade.top_k]
        return self.cascade.top_labels(self.proba[i], self._order[i])


class _Step:
    """A stage's answer for one message when nothing but its model was asked (no LLM, no flags):
    lighter than a Decision, with its top labels worked out only if it is the last one."""

    __slots__ = ("label", "confidence", "route", "answers", "i")
    flags: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()
    pii: dict[str, int] = {}

    def __init__(self, label: str, confidence: float, route: str, answers: _Answers, i: int) -> None:
        self.label, self.confidence, self.route, self.answers, self.i = label, confidence, route, answers, i

    @property
    def local_label(self) -> str:
        return self.label

    @property
    def local_confidence(self) -> float:
        return self.confidence

    @property
    def top(self) -> list[dict[str, object]]:
        return self.answers.top(self.i)


_EMPTY: Mapping[str, int] = MappingProxyType({})


class _Features:
    """A batch's n-gram features, computed once for every stage whose model computes the same ones
    (same :meth:`~offramp.estimators.features.NgramFeaturizer.fingerprint`): the child models of a
    trained hierarchy are built on their router's n-grams, so a message is featurized once, not at
    every level. Each stage still applies its own weights: its answers are the ones it gives alone."""

    def __init__(self, texts: list[str], shared: set[str]) -> None:
        self.texts, self.shared = texts, shared
        self._memo: dict[str, sp.csr_matrix] = {}

    def scores(self, model: object, idx: np.ndarray) -> np.ndarray | None:
        """The model's scores for the batch's messages ``idx``, or None if it shares no features."""
        if type(model) is not TfidfLinear:
            return None
        key = model.featurizer_.fingerprint()
        if key not in self.shared:
            return None
        x = self._memo.get(key)
        if x is None:
            x = self._memo[key] = model.features(self.texts)
        return model.scores_of(x if idx.size == x.shape[0] else x[idx])


class _Message:
    """One message on its way through the chain: each stage's answer (``steps``, in the order given) and
    what the stages added (personal data found, flags, the action's result)."""

    __slots__ = (
        "text", "conversation", "request_id", "steps", "pii", "spans", "stopped", "masked", "flags", "endpoints",
        "action", "full_at", "full_label", "full_confidence", "i",
    )  # fmt: skip

    def __init__(self, text: str, conversation: str | None, request_id: str | None, i: int = 0) -> None:
        self.text, self.conversation, self.request_id = text, conversation, request_id
        self.i = i  # its place in the batch
        self.steps: dict[str, Decision | _Step] = {}  # by stage, in the order the stages answered
        # what most messages never get is shared and empty until they do (a batch's per-message
        # objects are what the garbage collector walks)
        self.pii: Mapping[str, int] = _EMPTY
        self.spans: Sequence[object] = ()
        self.stopped = False
        self.masked: str | None = None
        self.flags: Sequence[str] = ()
        self.endpoints: Sequence[str] = ()
        self.action: ActionResult | None = None
        # the full label as last worked out, with how many stages had answered then
        self.full_at, self.full_label, self.full_confidence = -1, "", 0.0

    def flag(self, flag: str) -> None:
        self.flags = [*self.flags, flag]


class Chain:
    """Stages run in order on each message; see :mod:`offramp.chain.spec` for the file.

    Example
    -------
    ``Chain.from_pipeline("hier/pipeline.yaml").run("my card has not arrived").label`` →
    ``'banking/card_arrival'``, with ``.path`` listing each stage's answer.
    """

    def __init__(
        self,
        stages: list[Stage],
        label_sep: str = "/",
        guard: PrivacyGuard | None = None,
        action_pool: EgressPool | None = None,
        action_deadline_s: float = 10.0,
        llm_pool: EgressPool | None = None,
        llm_deadline_s: float = 5.0,
        client: ChatClient | None = None,
    ) -> None:
        self.stages, self.label_sep, self.guard = stages, label_sep, guard
        self.client = client
        self._llm_deadline_s = llm_deadline_s
        self.action_pool, self.action_deadline_s, self.llm_pool = action_pool, action_deadline_s, llm_pool
        self._scans = any(s.kind == "guard" for s in stages) and guard is not None
        # read per message: plain dicts and sets, not the specs' attributes
        self._kinds = {s.name: s.kind for s in stages}
        self._labelled = {s.name: s.spec.label for s in stages}
        self._suffixes = {s.name: s.spec.suffix for s in stages}
        self._asks = frozenset(s.name for s in stages if s.kind == "llm" and not s.spec.reply)
        self._replies = frozenset(s.name for s in stages if s.spec.reply)
        self._versions = {s.name: s.version for s in stages}
        self._errors = 0
        self._lock = threading.Lock()
        self.ray_apps: list[str] = []  # engine ray: the Serve applications holding the stages' models
        self.ray_joined = False  # engine ray: this chain connected this process to Ray (and leaves on close)
        # told, once per stage per batch, the stage's name, its seconds and its messages (the service counts them)
        self.on_stage: Callable[[str, float, int], None] | None = None
        # shadow: local_first: told, off the request path, a stage's name and the LLM's answer to its question
        self.on_shadow: Callable[[str, ShadowResult], None] | None = None
        for s in stages:
            if s.shadow is not None:
                s.shadow.on_result = functools.partial(self._shadowed, s.name)

    # ----------------------------------------------------------------------------- building

    @classmethod
    def from_pipeline(cls, path: str | os.PathLike[str], *, llm: bool = True, **settings: object) -> Chain:
        """The chain a pipeline file with ``stages:`` describes. ``llm=False`` leaves the LLM out
        (every stage answers locally: what ``offramp eval`` measures). ``engine="ray"`` (with
        ``ray_address``) serves each stage's model as a Ray Serve deployment with its ``replicas``."""
        s = Settings.resolve(path, settings)
        if not s.is_chain:
            raise UsageError(f"{path} has no stages:", "a chain's pipeline file lists its stages under stages:")
        return build_chain(s, llm=llm)

    @property
    def errors(self) -> int:
        return self._errors + sum(s.cascade.errors for s in self.stages if s.cascade is not None)

    @property
    def classify_stages(self) -> list[Stage]:
        return [s for s in self.stages if s.cascade is not None]

    @property
    def may_block(self) -> bool:
        return any(s.cascade.may_block for s in self.classify_stages if s.cascade is not None) or any(
            getattr(a, "egress", False) for s in self.stages for a in s.actions.values()
        )

    def threshold_for(self, label: str) -> float | None:
        """No single threshold covers a full label (each stage has its own): None."""
        return None

    def replica_counts(self) -> dict[str, dict[str, int]]:
        """Per stage served by Ray Serve: the messages each replica (``node/pid``) answered."""
        out: dict[str, dict[str, int]] = {}
        for s in self.classify_stages:
            counts = getattr(s.cascade.model if s.cascade is not None else None, "counts", None)
            if counts is not None:
                out[s.name] = {f"{node}/{pid}": n for (node, pid), n in sorted(counts.items())}
        return out

    def versions(self) -> dict[str, str | None]:
        """Each classify stage's version (the registry's, else the manifest hash)."""
        return {s.name: s.version for s in self.classify_stages}

    def _shadowed(self, stage: str, result: ShadowResult) -> None:
        if self.on_shadow is not None:
            self.on_shadow(stage, result)

    def shadow_counts(self) -> dict[str, dict[str, int]]:
        """Per stage in shadow: the sampled messages the LLM answered, failed on, or that were dropped
        (its queue full)."""
        return {
            s.name: {"sent": s.shadow.sent, "failed": s.shadow.failed, "dropped": s.shadow.dropped}
            for s in self.stages
            if s.shadow is not None
        }

    def close(self) -> None:
        for s in self.stages:
            if s.shadow is not None:
                s.shadow.close()
        for pool in (self.action_pool, self.llm_pool):
            if pool is not None:
                pool.close()
        clients = {
            id(c): c for s in self.classify_stages for c in [getattr(s.cascade and s.cascade.fallback, "client", None)]
        }
        if self.client is not None:  # the one the llm stages, the shadow and the llm actions share
            clients[id(self.client)] = self.client
        for c in clients.values():
            if c is not None:
                c.close()
        for s in self.stages:
            if s.remote is not None:
                s.remote.close()
        if self.ray_apps:
            from offramp.chain.ray_serve import undeploy

            undeploy(self.ray_apps, self.ray_joined)
            self.ray_apps, self.ray_joined = [], False
        vault = getattr(self.guard, "vault", None)
        if vault is not None:
            vault.close()

    # ----------------------------------------------------------------------------- answering

    def run(self, text: str, conversation: str | None = None, request_id: str | None = None) -> Decision:
        return self.run_many([text], [conversation], [request_id])[0]

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The full label of each text."""
        return [d.label for d in self.run_many(list(texts))]

    def run_many(
        self,
        texts: Sequence[str],
        conversations: Sequence[str | None] | None = None,
        request_ids: Sequence[str | None] | None = None,
    ) -> list[Decision]:
        """Every message through the chain; each stage's model is called once for the messages
        that reach it."""
        convs = list(conversations) if conversations is not None else [None] * len(texts)
        ids = list(request_ids) if request_ids is not None else [None] * len(texts)
        msgs = [_Message(t, c, r, i) for i, (t, c, r) in enumerate(zip(texts, convs, ids))]
        features = self._shared_features(msgs)
        groups: dict[str, dict[str, list[_Message]]] = {}  # stage -> its label -> the messages that got it
        for stage in self.stages:
            # a stopped message skips the later models, not the actions on its answer
            keep_stopped = stage.kind == "action"
            c = stage.clauses[0] if len(stage.clauses) == 1 else None
            if c is not None and c.field == "label" and c.op == "==":  # the usual case: one parent's messages
                if c.stage not in groups:
                    by: dict[str, list[_Message]] = {}
                    for m in msgs:
                        step = m.steps.get(c.stage)
                        if step is not None:
                            by.setdefault(step.label, []).append(m)
                    groups[c.stage] = by
                picked = groups[c.stage].get(str(c.value), [])
                active = [m for m in picked if keep_stopped or not m.stopped]
            else:
                active = [m for m in msgs if (keep_stopped or not m.stopped) and self._holds(stage, m)]
            if not active:
                continue
            started = time.perf_counter()
            if stage.kind == "guard":
                self._guard(active)
            elif stage.kind == "classify":
                self._classify(stage, active, features)
            elif stage.kind == "validate":
                self._validate(stage, active)
            elif stage.kind == "llm":
                self._ask(stage, active)
            else:
                for m in active:
                    self._act(stage, m)
            if self.on_stage is not None:
                self.on_stage(stage.name, time.perf_counter() - started, len(active))
        return [self._decision(m) for m in msgs]

    @staticmethod
    def _holds(stage: Stage, m: _Message) -> bool:
        for c in stage.clauses:
            step = m.steps.get(c.stage)
            if step is None or not c.holds(step.label, step.confidence):
                return False
        return True

    def _guard(self, msgs: list[_Message]) -> None:
        guard = self.guard
        if guard is None or guard.ner:  # the NER path finds personal data when text is about to leave
            return
        for m in msgs:
            m.spans = spans = guard.find(m.text)
            if spans:
                pii: dict[str, int] = {}
                for span in spans:
                    entity = str(getattr(span, "entity", "PII"))
                    pii[entity] = pii.get(entity, 0) + 1
                m.pii = pii

    def _shared_features(self, msgs: list[_Message]) -> _Features | None:
        """For a batch: the features that two local stages or more compute alike, to compute once."""
        if len(msgs) < 2:
            return None
        seen: set[str] = set()
        shared: set[str] = set()
        for s in self.stages:
            c = s.cascade
            if s.kind == "classify" and c is not None and self._local(s) and type(c.model) is TfidfLinear:
                key = c.model.featurizer_.fingerprint()
                (shared if key in seen else seen).add(key)
        return _Features([m.text for m in msgs], shared) if shared else None

    @staticmethod
    def _local(stage: Stage) -> bool:
        """A stage answered by its model alone (no LLM behind it, no unsure band, not remote)."""
        c = stage.cascade
        return c is not None and c.fallback is None and not c.thresholds and stage.remote is None

    def _classify(self, stage: Stage, msgs: list[_Message], features: _Features | None = None) -> None:
        cascade = stage.cascade
        assert cascade is not None
        if self._local(stage):
            self._classify_locally(stage, cascade, msgs, features)
            return
        try:
            if len(msgs) == 1:
                m = msgs[0]
                answers = [cascade.run(m.text, m.conversation, m.request_id)]
            else:
                answers = cascade.run_many(
                    [m.text for m in msgs], [m.conversation for m in msgs], [m.request_id for m in msgs]
                )
        except StageUnavailable:
            self._unavailable(stage, msgs)
            return
        stop = set(stage.spec.stop)
        for m, d in zip(msgs, answers):
            m.steps[stage.name] = d
            if d.route == "refused" or d.label in stop:
                m.stopped = True
        if stage.shadow is not None:
            self._offer_shadow(stage, msgs)

    @staticmethod
    def _offer_shadow(stage: Stage, msgs: list[_Message]) -> None:
        """shadow: local_first: a sample of the stage's local answers, queued for the LLM (the
        sampler masks the text; its thread asks, off the request path)."""
        sampler = stage.shadow
        assert sampler is not None
        name = stage.name
        for m in msgs:
            step = m.steps[name]
            if step.route == "local":
                sampler.offer(m.request_id or "", m.text, step.label, step.confidence, stage.version)

    def _classify_locally(
        self, stage: Stage, cascade: Cascade, msgs: list[_Message], features: _Features | None = None
    ) -> None:
        """A stage with no LLM behind it: its model's answers, without a Decision each."""
        model = cascade.model
        labels: list[str]
        confs: list[float]
        scores = None
        if features is not None and len(msgs) > 1:
            scores = features.scores(model, np.fromiter((m.i for m in msgs), dtype=np.int64, count=len(msgs)))
        if scores is not None:
            proba = softmax(scores, model.temperature_)
            labels = [str(x) for x in model.labels_from_proba(proba).tolist()]
            confs = proba.max(axis=1).tolist()
            answers = _Answers(cascade, proba)
        elif len(msgs) == 1:
            one, c, row = model.predict_one(msgs[0].text)
            labels, confs = [str(one)], [float(c)]
            answers = _Answers(cascade, row[None, :])
        else:
            predicted, proba = model.predict_and_proba([m.text for m in msgs])
            labels = [str(x) for x in np.asarray(predicted).tolist()]
            confs = proba.max(axis=1).tolist()
            answers = _Answers(cascade, proba)
        refusal = cascade.refusal_label
        stop = set(stage.spec.stop)
        name = stage.name
        for i, (m, label, conf) in enumerate(zip(msgs, labels, confs)):
            refused = label == refusal
            m.steps[name] = _Step(label, conf, "refused" if refused else "local", answers, i)
            if refused or label in stop:
                m.stopped = True
        if stage.shadow is not None:
            self._offer_shadow(stage, msgs)

    def _unavailable(self, stage: Stage, msgs: list[_Message]) -> None:
        """A remote stage that did not answer: its question goes to the LLM when the stage has one;
        otherwise its messages end here, flagged ``stage_unavailable`` (the stages before it answered)."""
        assert stage.cascade is not None
        fallback = stage.cascade.fallback
        for m in msgs:
            m.flag("stage_unavailable")
            d = Decision("", 0.0, "unavailable", local_label="", local_confidence=0.0)
            if fallback is not None:
                ask = functools.partial(fallback, self._outgoing(m))
                try:
                    label = run(self.llm_pool, ask, stage.cascade.llm_deadline_s)
                    d = Decision(label, 0.0, "llm", local_label="", local_confidence=0.0, endpoints=[fallback.endpoint])
                except Exception:  # the LLM failed too: the message ends here, flagged
                    m.flag("fallback_failed")
            m.steps[stage.name] = d
            if d.route == "unavailable":
                m.stopped = True

    def _ask(self, stage: Stage, msgs: list[_Message]) -> None:
        """An llm stage: the pipeline's LLM picks the full label (or writes a reply) for the messages
        that reach it (with ``below:``, those whose confidence so far is under it). Without an LLM
        (``offramp eval``) the stage answers nothing; when the LLM fails, the local answer stands,
        flagged."""
        spec, name = stage.spec, stage.name
        for m in msgs:
            label, conf = self.full_label(m)
            if spec.below is not None and conf >= spec.below:
                continue
            if spec.reply:
                if "*" not in stage.actions:
                    continue
                before = m.action
                self._act(stage, m)
                answered = m.action is not before and m.action is not None and bool(m.action.answered)
                step = Decision(
                    "reply", conf, "llm" if answered else "failed", local_label=label, local_confidence=conf
                )
            else:
                asker = stage.asker
                if asker is None:
                    continue
                out = self._outgoing(m)
                try:
                    answer, failed = ask_fallback(asker, out, self.llm_pool, self._llm_deadline_s)
                    if answer is not None:
                        step = Decision(answer, conf, "llm", local_label=label, local_confidence=conf)
                    else:  # down, slow, busy or refusing: the stages' answer stands
                        step = Decision(
                            label, conf, "failed", local_label=label, local_confidence=conf, flags=[str(failed)]
                        )
                except Exception:  # a bug, not a known failure: logged and counted
                    log.exception("chain stage %s failed for request %s", name, m.request_id or "-")
                    with self._lock:
                        self._errors += 1
                    step = Decision(
                        label, conf, "failed", local_label=label, local_confidence=conf, flags=["internal_error"]
                    )
                if not set(step.flags) & NOT_SENT:
                    step.endpoints.append(asker.endpoint)
            m.steps[name] = step

    def _validate(self, stage: Stage, msgs: list[_Message]) -> None:
        """Check the reply produced so far (an action's text, an LLM's reply): pass it, mask the
        personal data in it, block it, or hold it for review."""
        todo = [m for m in msgs if m.action is not None and m.action.text]
        if not todo:
            return
        spec = stage.spec
        replies = [str(m.action.text) for m in todo if m.action is not None]
        guard = self.guard if self.guard is not None else PrivacyGuard()
        found: list[Sequence[object]]
        if spec.check == "guard":
            found = [guard.find(r) for r in replies]
            failed = [bool(spans) for spans in found]
            conf = [1.0] * len(todo)
        else:
            assert stage.checker is not None
            labels, proba = stage.checker.predict_and_proba(replies)
            found = [() for _ in todo]
            block = set(spec.block)
            failed = [str(lab) in block for lab in labels]
            conf = [float(p) for p in proba.max(axis=1)]
        on_fail = spec.on_fail or ("replace" if spec.check == "guard" else "block")
        for m, reply, spans, bad, c in zip(todo, replies, found, failed, conf):
            assert m.action is not None
            outcome = "pass"
            if bad:
                if on_fail == "replace":
                    m.action.text = guard.mask(reply, m.conversation, spans=spans).text
                    outcome, flag = "masked", "reply_masked"
                elif on_fail == "block":
                    m.action.text = spec.text if spec.text is not None else "Sorry, I can't send that reply."
                    outcome, flag = "blocked", "reply_blocked"
                else:
                    m.action.text = None
                    outcome, flag = "review", "reply_held_for_review"
                m.flag(flag)
            m.steps[stage.name] = Decision(outcome, c, "local", local_label=outcome, local_confidence=c)

    def full_label(self, m: _Message, local: bool = False) -> tuple[str, float]:
        """The message's full label and its confidence (the product of its parts' confidences)."""
        if local:
            return self._full_label(m, True)
        if m.full_at == len(m.steps):  # no stage has answered since
            return m.full_label, m.full_confidence
        label, conf = self._full_label(m, False)
        m.full_at, m.full_label, m.full_confidence = len(m.steps), label, conf
        return label, conf

    def _full_label(self, m: _Message, local: bool) -> tuple[str, float]:
        parts: list[str] = []
        conf = 1.0
        pending: str | None = None
        last: tuple[str, float] | None = None
        asked: tuple[str, float] | None = None  # an llm stage's answer: the whole label
        last_stage: str | None = None  # the last classify stage
        kinds, labelled = self._kinds, self._labelled
        for name in m.steps:
            d = m.steps[name]
            if kinds[name] != "classify":
                if name in self._asks and not local and d.route == "llm":
                    asked = (d.label, d.confidence)
                continue
            last_stage = name
            if d.route == "unavailable":
                continue
            label, c = (d.local_label, d.local_confidence) if local else (d.label, d.confidence)
            if not label:  # a remote stage that did not answer, asked of the LLM: only the LLM's answer counts
                continue
            last = (label, c)
            if not labelled[name]:
                continue
            parts.append(label)
            conf *= c
            pending = self._suffixes[name].get(label)
        if pending:
            parts.append(pending)
        if asked is not None:
            return asked
        if m.stopped and last_stage is not None and not labelled[last_stage] and last is not None:
            return last  # ended at a stage outside the full label (a detector): its label is the answer
        return self.label_sep.join(parts), conf

    def _outgoing(self, m: _Message) -> str:
        if m.masked is None:
            guard = self.guard
            m.masked = m.text if guard is None else guard.mask(m.text, m.conversation, spans=m.spans or None).text
        return m.masked

    def _act(self, stage: Stage, m: _Message) -> None:
        label, _ = self.full_label(m)
        act = stage.actions.get(label) or stage.actions.get("*")  # "*": an llm stage's reply, for any label
        if act is None:
            return
        try:
            if act.egress:
                out = self._outgoing(m)
                flags, endpoints = list(m.flags), list(m.endpoints)
                result = send_action(
                    act, out, label, self.action_pool, self.action_deadline_s, self.guard, m.conversation, flags,
                    endpoints,
                )  # fmt: skip
                m.flags, m.endpoints = flags, endpoints
            else:
                result = act(m.text, label)
            result.label = label
            m.action = result
        except Exception:
            log.exception("chain stage %s failed for request %s", stage.name, m.request_id or "-")
            with self._lock:
                self._errors += 1
            m.flag("internal_error")

    @staticmethod
    def _last_top(steps: Sequence[Decision | _Step]) -> list[dict[str, object]]:
        """The top labels of the last stage that has them (worked out once)."""
        for d in reversed(steps):
            top = d.top
            if top:
                return top
        return []

    def _decision(self, m: _Message) -> Decision:
        """The message's answer: its full label, who gave it, and the path taken (one pass over the
        stages' answers: this runs once per message)."""
        label, conf = self.full_label(m)
        replies, versions = self._replies, self._versions
        routes: set[str] = set()
        flags: list[str] = []
        endpoints: list[str] = []
        pii = dict(m.pii)
        path: list[dict[str, object]] = []
        steps = m.steps
        for n, d in steps.items():
            r = d.route
            if n not in replies:  # who gave the label (a reply the LLM wrote does not make the label the LLM's)
                routes.add(r)
            if d.flags:
                flags += [f for f in d.flags if f not in flags]
            if d.endpoints:
                endpoints += [e for e in d.endpoints if e not in endpoints]
            for k, v in d.pii.items():
                pii[k] = max(pii.get(k, 0), v)
            path.append(
                {
                    "stage": n,
                    "label": d.label,
                    "confidence": round(d.confidence, 6),
                    "route": r,
                    "version": versions.get(n),
                }
            )
        if m.flags:
            flags += [f for f in m.flags if f not in flags]
        if m.endpoints:
            endpoints += [e for e in m.endpoints if e not in endpoints]
        # the local answer differs only where a stage's question went to the LLM
        local_label, local_conf = self.full_label(m, local=True) if "llm" in routes else (label, conf)
        route = "refused" if "refused" in routes else "llm" if "llm" in routes else "local"
        rounded = round(conf, 6)
        return Decision(
            label,
            rounded,
            route,
            flags=flags,
            action=m.action,
            top=self._last_top(list(steps.values())),
            pii=pii,
            endpoints=endpoints,
            local_label=local_label,
            local_confidence=rounded if local_conf == conf else round(local_conf, 6),
            label_sep=self.label_sep,
            path=path,
        )


# --------------------------------------------------------------------------------- wiring


def build_chain(settings: Settings, *, llm: bool = True) -> Chain:
    """Load every stage's model and wire the chain a pipeline file with ``stages:`` describes;
    anything that does not fit (a ``when:`` on a label the model lacks, an action for a full
    label the chain cannot answer, a missing model) is refused naming the stage and the key."""
    spec = settings.pipeline
    assert spec is not None and spec.stages is not None
    path, base = settings.target, settings.base
    specs = read_stages(spec.stages, path)
    guard = pipeline_guard(spec, base)
    policy = egress_policy(settings, guard)
    client = llm_client(spec.llm, policy) if llm and spec.llm is not None else None
    llm_pool = EgressPool("llm") if client is not None else None
    stages: list[Stage] = []
    by_name: dict[str, Stage] = {}
    for st in specs:
        where = f"{path}: stage {st.name}"
        stage = Stage(st, parse_when(st.when, f"{where}: when") if st.when else [])
        for clause in stage.clauses:
            known = by_name[clause.stage].labels
            lacking = [lab for lab in clause.labels() if lab not in known]
            if lacking:
                raise UsageError(
                    f"{where}: when: {clause.stage} has no label {lacking[0]}",
                    f"its labels are: {', '.join(sorted(known))}",
                )
        if st.kind == "classify":
            model_dir: Path | None = None
            version: str | None = None
            model: TextClassifier
            if st.remote is not None:
                key = os.environ.get(st.api_key_env) if st.api_key_env else None
                stage.remote = RemoteStage(
                    st.remote, policy, timeout_s=st.timeout_s, labels=st.labels, api_key=key, where=where
                )
                model = cast(TextClassifier, stage.remote)
            else:
                assert st.model is not None
                target = base / st.model
                if not target.exists():
                    raise UsageError(
                        f"{where}: model: {target} does not exist",
                        "give a model directory or a registry (train one first)",
                    )
                model_dir, version = resolve_model_dir(target)
                model = load(model_dir)
            labels = {str(c) for c in model.classes_} | (
                {str(model.reject_label_)} if model.reject_label_ is not None else set()
            )
            for key, names in (
                ("stop", st.stop),
                ("suffix", list(st.suffix)),
                ("thresholds", list(st.thresholds or {})),
            ):
                lacking = [lab for lab in names if lab != "*" and lab not in labels]
                if lacking:
                    raise UsageError(
                        f"{where}: {key}: the model has no label {lacking[0]}",
                        f"its labels are: {', '.join(sorted(labels))}",
                    )
            fallback = None
            if client is not None and spec.llm is not None and st.thresholds:
                fallback = _asker(client, model.classes_, spec.llm)
            if client is not None and spec.llm is not None and spec.shadow is not None and stage.remote is None:
                # its own breaker: a slow shadow LLM must not open the fallback's circuit
                ask = _asker(client, model.classes_, spec.llm)
                mask = guard if guard is not None else PrivacyGuard()
                stage.shadow = ShadowSampler(ask, mask, spec.shadow.sample, spec.shadow.queue)
            stage.cascade = Cascade(
                model,
                fallback=fallback,
                thresholds=dict(st.thresholds or {}),
                guard=guard if fallback is not None else None,
                llm_pool=llm_pool if fallback is not None else None,
                llm_deadline_s=spec.llm.timeout_s if spec.llm is not None else 5.0,
            )
            stage.model_dir = model_dir
            if stage.remote is not None:
                stage.version = f"remote:{stage.remote.version or '?'}"
            else:
                assert model_dir is not None and st.model is not None
                stage.registry = base / st.model if version is not None else None
                stage.version = version or model_version(model_dir)
        elif st.kind == "validate" and st.model is not None:
            target = base / st.model
            if not target.exists():
                raise UsageError(f"{where}: model: {target} does not exist", "give a model directory or a registry")
            model_dir, version = resolve_model_dir(target)
            stage.checker = load(model_dir)
            checks = {str(c) for c in stage.checker.classes_}
            missing = [lab for lab in st.block if lab not in checks]
            if missing:
                raise UsageError(
                    f"{where}: block: the model has no label {missing[0]}",
                    f"its labels are: {', '.join(sorted(checks))}",
                )
            stage.model_dir, stage.registry = model_dir, target if version is not None else None
            stage.version = version or model_version(model_dir)
        elif st.kind == "action":
            for key, a in st.actions.items():
                act = build_action(a, base, client, policy)
                if act is not None:
                    stage.actions[key] = act
        elif st.kind == "llm":
            if spec.llm is None:
                raise UsageError(
                    f"{where}: an llm stage asks the pipeline's LLM, and this file has no llm: section",
                    "add llm: {base_url: ..., model: ...}",
                )
            stage.version = f"llm:{spec.llm.model}"
            if client is not None and st.reply:
                reply: dict[str, object] = {"type": "llm", "max_tokens": st.max_tokens}
                if st.system is not None:
                    reply["system"] = st.system
                act = build_action(reply, base, client, policy)
                if act is not None:
                    stage.actions["*"] = act
        stages.append(stage)
        by_name[st.name] = stage
    chain = Chain(
        stages,
        label_sep=spec.label_sep or "/",
        guard=guard,
        llm_pool=llm_pool,
        llm_deadline_s=spec.llm.timeout_s if spec.llm is not None else 5.0,
        client=client,
        action_pool=EgressPool("actions")
        if any(getattr(a, "egress", False) for s in stages for a in s.actions.values())
        else None,
    )
    answers = set(possible_labels(chain))
    for s in stages:
        if s.kind == "llm" and not s.spec.reply and client is not None and spec.llm is not None:
            # its own breaker; by default it chooses among every full label the stages can give
            s.asker = _asker(client, s.spec.labels or sorted(answers), spec.llm)
    for s in stages:
        unknown = sorted(k for k in s.actions if k not in answers and s.kind == "action")
        if unknown:
            raise UsageError(
                f"{path}: stage {s.name}: actions: the chain never answers {unknown[0]}",
                f"it answers: {', '.join(sorted(answers)[:12])}" + (" ..." if len(answers) > 12 else ""),
            )
    if settings.engine == "ray":  # last: nothing is deployed for a file that is refused
        from offramp.chain.ray_serve import deploy

        local = [
            (s.name, s.model_dir, s.spec.replicas, s.cascade.model)
            for s in chain.classify_stages
            if s.remote is None and s.model_dir is not None and s.cascade is not None
        ]
        chain.ray_apps, served, chain.ray_joined = deploy(local, settings.ray_address)
        for s in chain.classify_stages:
            if s.name in served and s.cascade is not None:
                s.cascade = dataclasses.replace(s.cascade, model=cast(TextClassifier, served[s.name]))
    return chain


def build_chain_service(settings: Settings) -> Built:
    """The chain a pipeline file with ``stages:`` describes, as the service serves it: ``/readyz``
    lists each stage's version, ``version`` joins them (``router=v0002,support=v0001``)."""
    chain = build_chain(settings)
    first = chain.classify_stages[0]
    assert first.cascade is not None
    local = next((s for s in chain.classify_stages if s.model_dir is not None), None)
    if local is not None and local.cascade is not None and local.model_dir is not None:
        info = model_info(local.cascade.model, local.model_dir)
    else:  # every stage is remote
        info = ModelInfo(model="chain", created=None, manifest="", routing=None)
    stages: list[dict[str, str | None]] = [
        {
            "stage": s.name,
            "kind": s.kind,
            "version": s.version,
            "model": str(s.registry or s.model_dir) if s.model_dir is not None else None,
        }
        for s in chain.stages
    ]
    info["model"] = info["family"] = "chain"
    info["version"] = ",".join(f"{s.name}={s.version}" for s in chain.classify_stages)
    info["registry_version"] = None
    info["labels"] = possible_labels(chain)
    info["stages"] = stages
    spec = settings.pipeline
    if spec is not None and spec.shadow is not None and any(s.shadow is not None for s in chain.stages):
        info["shadow"] = spec.shadow.mode
    return Built(
        first.cascade,
        settings,
        local.model_dir if local is not None and local.model_dir is not None else settings.base,
        info,
        policy=egress_policy(settings, chain.guard),
        chain=chain,
        closers=(chain.close,),
    )


def _asker(client: ChatClient, labels: Sequence[object] | np.ndarray, llm: LLMSpec) -> LLMFallback:
    """The pipeline's LLM asked to choose among ``labels``, behind a circuit breaker of its own."""
    return LLMFallback(client, [str(x) for x in labels], llm.descriptions, llm.failure_threshold, llm.reset_after_s)


def possible_labels(chain: Chain) -> list[str]:
    """Every full label the chain can answer (stage labels combined along the ``when:`` conditions
    on labels; conditions on confidence are taken as able to hold either way)."""
    paths: list[list[tuple[str, str]]] = [[]]  # each: (stage, label) taken so far
    out: set[str] = set()
    for stage in chain.stages:
        if stage.cascade is None:
            continue
        grown: list[list[tuple[str, str]]] = []
        for p in paths:
            taken = dict(p)
            if any(taken.get(c.stage) is None and c.field == "label" for c in stage.clauses) or not all(
                c.field != "label" or c.holds(taken[c.stage], 1.0) for c in stage.clauses if c.stage in taken
            ):
                grown.append(p)
                continue
            if any(c.field == "confidence" for c in stage.clauses):  # it may run or not
                grown.append(p)
            for lab in stage.labels:
                q = p + [(stage.name, lab)]
                if lab in stage.spec.stop or lab == stage.cascade.model.reject_label_:
                    out.add(_join(chain, q, stopped=True))
                else:
                    grown.append(q)
        paths = grown
    for p in paths:
        if p:
            out.add(_join(chain, p, stopped=False))
    for stage in chain.stages:  # an llm stage told its labels may answer others
        if stage.kind == "llm" and not stage.spec.reply:
            out.update(stage.spec.labels or ())
    return sorted(out)


def _join(chain: Chain, path: list[tuple[str, str]], stopped: bool) -> str:
    specs = {s.name: s.spec for s in chain.stages}
    if stopped and not specs[path[-1][0]].label:
        return path[-1][1]
    parts: list[str] = []
    pending = None
    for name, lab in path:
        if specs[name].label:
            parts.append(lab)
            pending = specs[name].suffix.get(lab)
    if pending:
        parts.append(pending)
    return chain.label_sep.join(parts)
