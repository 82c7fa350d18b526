"""The service in plain Python: it holds the wired cascade, decides, counts and writes the audit record.

The HTTP layer (:mod:`offramp.serving.routes`) only parses, calls this and renders. A reload builds
a new cascade from the settings' target (the pipeline file read again) and swaps it whole, so a
request that is running keeps the cascade it started with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from offramp.audit.log import AuditLog, AuditWriter
from offramp.capture.live import InvalidLabel, NotYourRequest, UnknownLabel, UnknownRequest
from offramp.chain.run import Chain
from offramp.costs.calculator import (
    CHARS_PER_TOKEN,
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    api_usd_per_message,
    load_prices,
)
from offramp.data.text import clean_text
from offramp.errors import UsageError
from offramp.monitoring.drift import PSI_WARN, DriftMonitor
from offramp.monitoring.shadow import ShadowResult
from offramp.privacy.guard import PrivacyGuard
from offramp.proxy.upstream import Upstream
from offramp.proxy.watch import PromptWatch
from offramp.registry.records import resolve_model_dir
from offramp.runtime.cascade import Built, ModelInfo, build
from offramp.runtime.config import Settings
from offramp.runtime.decision import Decision, Guard
from offramp.serving.auth import RateLimiter, key_matches, load_key_hashes
from offramp.serving.batching import MicroBatcher
from offramp.serving.console.review import ReviewItem, ReviewQueue
from offramp.serving.errors import ApiError
from offramp.serving.telemetry import Outcome, Telemetry
from offramp.serving.workers import WorkerSync
from offramp.types import JSONDict

log = logging.getLogger("offramp.serving")
LOCAL_THREADS = 16  # request threads always left for local answers beyond what egress can hold
UNSURE_BELOW = 0.7  # without a routing threshold, a local answer under this confidence is queued for review


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


class Answer(TypedDict, total=False):
    """The JSON answer for one message (``/v1/classify``); the last four keys only for a
    multi-label model."""

    label: str
    confidence: float
    route: str
    flags: list[str]
    action: JSONDict | None
    top: list[dict[str, object]]
    request_id: str
    labels: list[str]
    scores: dict[str, float] | None
    label_sep: str
    unsure: list[str]
    path: list[dict[str, object]]  # a chain: each stage's label, confidence, route and version


# one message to decide: (text, request id, pseudonym scope, the caller's key hash or None)
Item = tuple[str, str, "str | None", "str | None"]


class ClassificationService:
    """Decides messages with the current cascade; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        flags: Mapping[str, object] | None = None,
        env: Mapping[str, str] | None = None,
        worker_dir: str | None = None,
        workers: int = 1,
    ):
        self._threads: anyio.CapacityLimiter | None = None  # made on first use, inside the event loop
        self._id_block, self._id_pos = b"", 0
        self.settings = settings
        self._flags, self._env = dict(flags or {}), env
        self.telemetry = Telemetry()
        self.metrics, self.stats = self.telemetry.metrics, self.telemetry.stats
        # serve --workers N: each process keeps its own buckets, so each allows a key 1/N of the rate;
        # the server as a whole never lets a key above it (a key whose connections all reach one
        # worker gets that worker's share)
        self.limiter = RateLimiter(settings.rate_limit / max(1, workers))
        self._rate_note = (
            f" ({settings.rate_limit / workers:g} on each of {workers} worker processes)" if workers > 1 else ""
        )
        self.key_hashes = load_key_hashes(settings.api_keys) if settings.api_keys else None
        self.admin_hashes = load_key_hashes(settings.admin_keys) if settings.admin_keys else None
        self.price = load_prices()["models"].get(settings.llm_price_model)
        # dollars a local answer saves: the configured LLM's price of the prompt, the text (about
        # four characters a token) and the answer, worked out once
        self._usd_fixed = (
            api_usd_per_message(self.price, DEFAULT_PROMPT_TOKENS, DEFAULT_OUTPUT_TOKENS) if self.price else 0.0
        )
        self._usd_per_char = api_usd_per_message(self.price, 1 / CHARS_PER_TOKEN, 0) if self.price else 0.0
        self._default_guard = PrivacyGuard()  # what stored or shown text is masked with when the pipeline has none
        self._lock = threading.Lock()
        self._reloading = threading.Lock()  # one reload at a time (the admin endpoint, the registry watcher)
        self.built: Built = _build(settings)
        self._retired: Built | None = None  # the version before: closed at the next reload
        self.audit = None
        if settings.audit is not None:
            audit_log = AuditLog(settings.audit)
            audit_log.check_continuable()  # another key, or an emptied log: refuse to start rather than fork the chain
            self.audit = AuditWriter(audit_log)
        self.batcher = MicroBatcher(self.decide_many, max_size=64)
        self._stop = threading.Event()
        self.drift: DriftMonitor | None = None
        self._drift_warned: dict[str, float] = {}
        self.upstream: Upstream | None = None
        self.prompt_watch = PromptWatch()
        self.prompt_warning: tuple[float, str] | None = None  # the last warning of a changed prompt
        if settings.upstream:  # proxy mode: what is not the task goes to the app's own LLM
            parts = urlsplit(settings.upstream)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise UsageError(
                    f"the upstream {settings.upstream[:100]!r} is not an http(s) URL",
                    "give the app's LLM as a base URL, e.g. https://api.openai.com/v1",
                )
            proxy = settings.pipeline.proxy if settings.pipeline is not None else None
            self.upstream = Upstream(
                settings.upstream,
                api_key_env=proxy.api_key_env if proxy is not None else "OPENAI_API_KEY",
                timeout_s=proxy.timeout_s if proxy is not None else 60.0,
                forward_authorization=proxy.forward_authorization if proxy is not None else False,
                policy=self.built.policy,
                env=env,
            )
            if self.built.policy is not None:
                self.built.policy.check(settings.upstream, [])  # offline mode: a remote upstream is refused now
        self.review = ReviewQueue(ttl_s=self.built.capture.ttl_s if self.built.capture else 3600.0)
        self._wire(self.built, None)
        if _watched(self.built):
            threading.Thread(target=self._watch_registry, name="offramp-registry-watch", daemon=True).start()
        self.workers: WorkerSync | None = None
        if worker_dir is not None:  # one of several serve --workers processes
            if self.built.capture is not None and "feedback" in self.built.capture.sources:
                raise UsageError(
                    "--workers above 1 with capture from 'feedback': a correction can reach another worker than "
                    "the one that answered the request, which keeps its id",
                    "serve this pipeline with --workers 1, or capture from llm and shadow only",
                )
            self.workers = WorkerSync(worker_dir, self.telemetry, self._reload_from_peer)

    # ------------------------------------------------------------------ state
    @property
    def info(self) -> ModelInfo:
        return self.built.info

    def reload(self) -> ModelInfo:
        """Build the cascade again from the target (the pipeline file as it is now) and swap it in.

        Limits, keys and the audit log stay as they were at start; the model, routing, actions,
        privacy guard and egress policy are the file's current ones.
        """
        with self._reloading:
            settings = Settings.resolve(self.settings.target, self._flags, self._env)
            built = _build(settings)
            self._wire(built, self.built)
            with self._lock:
                retired, self._retired = self._retired, self.built
                self.built = built
            if retired is not None:  # two versions back: requests that held it have long finished
                retired.close()
            return built.info

    def close(self) -> None:
        """Stop the background work and release what the served cascade or chain holds (a chain on
        Ray Serve deletes its applications from the cluster); the service answers no more after this."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self.workers is not None:
            self.workers.close()
        if self.drift is not None:
            self.drift.close()
        with self._reloading:
            for built in (self._retired, self.built):
                if built is not None:
                    try:
                        built.close()
                    except Exception:  # one part failing to close must not keep the others open
                        log.exception("closing the served model failed")

    def reload_all(self) -> ModelInfo:
        """Reload here and, with several workers, in every other worker too."""
        info = self.reload()
        if self.workers is not None:
            self.workers.request_reload()
        return info

    def _reload_from_peer(self) -> None:
        try:
            info = self.reload()
        except Exception as e:  # the old model keeps serving in this worker
            self.metrics.inc("offramp_model_reloads_total", outcome="failed")
            log.warning("reload asked by another worker failed: %s", getattr(e, "message", e))
            return
        self.metrics.inc("offramp_model_reloads_total", outcome="ok")
        log.warning("reloaded with the other workers: now serving %s", info.get("version"))

    def render_metrics(self) -> str:
        return self.workers.render() if self.workers is not None else self.telemetry.render()

    def _wire(self, built: Built, before: Built | None) -> None:
        """Connect a newly built cascade's shadow, capture and drift reference to this service."""
        if built.shadow is not None:
            built.shadow.on_result = self._shadow_result
        if built.capture is not None and before is not None and before.capture is not None:
            built.capture.adopt(before.capture)  # feedback for requests made before the reload still counts
        if built.capture is not None and hasattr(self, "review"):
            self.review.ttl_s = built.capture.ttl_s
        if isinstance(built.chain, Chain):
            built.chain.on_stage = self._stage_timed
            built.chain.on_shadow = self._stage_shadow_result
        old = getattr(self, "drift", None)
        if old is not None:
            old.close()
        self.drift = (
            DriftMonitor(built.reference, on_refresh=self._drift_refresh, background=True) if built.reference else None
        )

    def _stage_timed(self, stage: str, seconds: float, messages: int) -> None:
        """A chain's stage finished a batch: its time and messages, counted by stage."""
        self.metrics.inc("offramp_stage_seconds_total", seconds, stage=stage)
        self.metrics.inc("offramp_stage_messages_total", messages, stage=stage)

    def _stage_shadow_result(self, stage: str, r: ShadowResult) -> None:
        """A chain in shadow (local_first): the LLM's answer to one stage's question for a sampled
        message came back (off the request path); counted by stage and by the stage's local label."""
        m = self.metrics
        m.inc("offramp_stage_shadow_compared_total", stage=stage, label=r.local_label)
        if r.local_label == r.llm_label:
            m.inc("offramp_stage_shadow_agreed_total", stage=stage, label=r.local_label)

    def _drift_refresh(self, values: dict[str, float]) -> None:
        m = self.metrics
        now = time.monotonic()
        for signal in ("confidence", "label_mix"):
            m.set("offramp_drift_psi", round(values[signal], 6), signal=signal)
            # warn when a signal crosses the line, and at most once a minute while it stays above
            was = self._drift_warned.get(signal)
            if values[signal] <= PSI_WARN:
                self._drift_warned.pop(signal, None)
            elif was is None or now - was > 60:
                self._drift_warned[signal] = now
                log.warning(
                    "drift: %s PSI %.3f over the last %d messages is above %.1f (traffic no longer looks like the"
                    " training data)",
                    signal,
                    values[signal],
                    self.drift.count if self.drift else 0,
                    PSI_WARN,
                )
        for signal in ("dont_know", "fallback"):
            m.set("offramp_drift_rate_change", round(values[signal], 6), signal=signal)

    def _compared(self, local: str, llm: str) -> None:
        m = self.metrics
        m.inc("offramp_shadow_compared_total", label=local)
        if local == llm:
            m.inc("offramp_shadow_agreed_total", label=local)
        n = m.get("offramp_shadow_compared_total", label=local) or 1.0
        agreed = m.get("offramp_shadow_agreed_total", label=local) or 0.0
        m.set("offramp_shadow_agreement_ratio", round(agreed / n, 6), label=local)

    def _shadow_result(self, r: ShadowResult) -> None:
        """local_first: the LLM's answer to a sampled local one came back (off the request path)."""
        self._compared(r.local_label, r.llm_label)
        if r.local_label != r.llm_label:
            self.review.offer(
                ReviewItem(r.request_id, time.time(), r.text, "disagreed", r.local_label, r.confidence, [], r.llm_label)
            )
        capture = self.built.capture
        if capture is not None:
            capture.shadow(r.request_id, r.text, r.local_label, r.confidence, r.llm_label, r.version)
            self.metrics.inc("offramp_capture_rows_total", source="shadow")

    def feedback(self, request_id: str, label: str, caller: str | None = None, admin: bool = False) -> None:
        """A person's correction of a recent answer, into the capture pool. With API keys it is taken
        from the key that made the request (``caller``, its hash) or from an admin."""
        capture = self.built.capture
        if capture is None or "feedback" not in capture.sources:
            raise ApiError(
                409,
                "feedback_disabled",
                "this service keeps no feedback: add capture: {pool: ..., from: [feedback]} to the pipeline",
            )
        try:
            capture.feedback(request_id, label, caller=caller, admin=admin)
        except NotYourRequest as e:
            self.metrics.inc("offramp_feedback_total", outcome="forbidden")
            raise ApiError(403, "not_your_request", str(e)) from None
        except UnknownRequest as e:
            self.metrics.inc("offramp_feedback_total", outcome="unknown_request")
            raise ApiError(404, "unknown_request", str(e)) from None
        except UnknownLabel as e:
            self.metrics.inc("offramp_feedback_total", outcome="unknown_label")
            raise ApiError(422, "unknown_label", str(e)) from None
        except InvalidLabel as e:
            self.metrics.inc("offramp_feedback_total", outcome="invalid_label")
            raise ApiError(422, "invalid_label", str(e)) from None
        self.metrics.inc("offramp_feedback_total", outcome="accepted")
        self.metrics.inc("offramp_capture_rows_total", source="feedback")
        self.review.remove(request_id)

    def _watch_registry(self, interval_s: float = 1.0) -> None:
        """Serving a registry (or a chain whose stages are registries): pick up a promote or
        rollback (a new current version) within seconds; a chain's other stages keep their versions."""
        failed: str | None = None
        while not self._stop.wait(interval_s):
            watched = _watched(self.built)
            if not watched:
                continue
            changed: list[tuple[Path, str]] = []
            try:
                for path, served in watched:
                    _, now = resolve_model_dir(path)
                    if now != served:
                        changed.append((path, str(now)))
            except Exception as e:  # the record is being replaced, or was damaged: keep serving
                log.debug("registry watch: %s", e)
                continue
            current = ",".join(v for _, v in changed)
            registry = ", ".join(str(p) for p, _ in changed)
            if not changed or f"{registry}:{current}" == failed:
                continue
            try:
                info = self.reload()
            except Exception as e:  # the old version keeps serving; tried again when current changes
                failed = f"{registry}:{current}"
                self.metrics.inc("offramp_model_reloads_total", outcome="failed")
                log.warning("registry %s: version %s was not loaded: %s", registry, current, getattr(e, "message", e))
                continue
            failed = None
            self.metrics.inc("offramp_model_reloads_total", outcome="ok")
            log.warning("registry %s: now serving %s", registry, info.get("version"))

    # ------------------------------------------------------------------ access
    def authorize(self, authorization: str, client_host: str | None) -> str:
        """The client's identity (its key's hash, else its address), after the key and rate checks."""
        ident = client_host or "unknown"
        if self.key_hashes:
            key = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
            match = key_matches(key, self.key_hashes) if key else None
            if match is None:
                raise ApiError(
                    401,
                    "unauthorized",
                    "missing or unknown API key; send Authorization: Bearer KEY",
                    {"WWW-Authenticate": "Bearer"},
                )
            ident = match
        wait = self.limiter.take(ident)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"over {self.settings.rate_limit:g} requests a minute{self._rate_note}; retry in {max(wait, 0.1):.1f} s",
                {"Retry-After": str(max(1, round(wait)))},
            )
        return ident

    def check_texts(self, texts: list[str]) -> None:
        s = self.settings
        if not texts:
            raise ApiError(422, "invalid_request", "no text to classify: send 'text' or a non-empty 'texts'")
        if len(texts) > s.max_batch:
            raise ApiError(422, "batch_too_large", f"{len(texts)} texts in one request; the limit is {s.max_batch}")
        for i, t in enumerate(texts):
            if len(t) > s.max_text_chars:
                raise ApiError(
                    422, "text_too_long", f"text {i} has {len(t):,} characters; the limit is {s.max_text_chars:,}"
                )
            if not t.strip():
                raise ApiError(422, "invalid_request", f"text {i} is empty")

    # ------------------------------------------------------------------ deciding
    def decide_many(self, items: list[Item]) -> list[tuple[Answer, JSONDict | None]]:
        """The answers for (text, request id, conversation, caller) items, with their audit records
        (None without an audit log); the small model is called once for all of them, and what the
        batch adds to the counts, the drift window and the capture pool is added once."""
        texts = [clean_text(item[0]) for item in items]  # JSON may carry lone surrogates
        built = self.built  # one reference per batch: a reload cannot mix models
        cascade = built.answers
        ids = [item[1] for item in items]
        decisions = cascade.run_many(texts, [item[2] or item[1] for item in items], ids)
        outcomes: list[Outcome] = []
        drift: list[tuple[float, str, bool, bool]] = []
        remembered: list[tuple[str, str, Decision, str | None]] = []
        answers = []
        for d, text, rid, item in zip(decisions, texts, ids, items):
            saved = self._usd_per_char * len(text) + self._usd_fixed if d.route == "local" and self.price else 0.0
            stages = tuple((str(p["stage"]), str(p["route"])) for p in d.path) if d.path else ()
            outcomes.append(
                Outcome(d.label, d.route, saved, d.pii, bool(d.endpoints), "internal_error" in d.flags, stages)
            )
            limit = cascade.threshold_for(d.local_label)
            # would go to the LLM (llm_first: does anyway)
            drift.append(
                (
                    d.local_confidence,
                    d.local_label,
                    d.route == "refused",
                    limit is not None and d.local_confidence < limit,
                )
            )
            self._live(d, text, rid, built, remembered, item[3])
            answers.append(self._answer(d, text, rid, built))
        self.telemetry.decided(outcomes)
        if self.drift is not None:
            self.drift.observe_many(drift)
        if remembered and built.capture is not None:
            guard = cascade.guard
            version = built.info.get("version")
            built.capture.remember(
                [
                    (rid, self._stored(d, text, guard), d.local_label, d.local_confidence, version, caller)
                    for rid, text, d, caller in remembered
                ]
            )
        return answers

    def _stored(self, d: Decision, text: str, guard: Guard | None) -> str:
        """``text`` masked as the capture pool keeps it: with the spans the cascade found (no second
        scan), or by the pool's own guard when the pipeline's guard is off."""
        if guard is not None and d.spans:
            return str(guard.mask(text, spans=d.spans).text)
        if guard is not None and not guard.ner:  # scanned, nothing found
            return text
        capture = self.built.capture
        assert capture is not None
        return capture.mask(text)

    def _live(
        self,
        d: Decision,
        text: str,
        rid: str,
        built: Built,
        remembered: list[tuple[str, str, Decision, str | None]],
        caller: str | None,
    ) -> None:
        """What one decision gives the live loop: shadow comparisons, capture rows, shadow
        sampling, the console's review queue. Most messages give nothing (no lock is taken)."""
        version = built.info.get("version")
        if d.shadow is not None:  # llm_first: both answered this message
            self._compared(d.shadow["local"], d.shadow["llm"])
        capture = built.capture
        if capture is not None:
            if d.shadow is not None:
                capture.shadow(rid, text, d.local_label, d.local_confidence, d.shadow["llm"], version)
                self.metrics.inc("offramp_capture_rows_total", source="shadow")
            if d.route == "llm":
                capture.llm_answer(rid, text, d.label, d.local_label, d.local_confidence, version, d.labels)
                if d.shadow is None and "llm" in capture.sources:
                    self.metrics.inc("offramp_capture_rows_total", source="llm")
            if "feedback" in capture.sources:
                remembered.append((rid, text, d, caller))
        if built.shadow is not None and d.route == "local":
            dropped = built.shadow.dropped
            built.shadow.offer(rid, text, d.local_label, d.local_confidence, version)
            if built.shadow.dropped > dropped:
                self.metrics.inc("offramp_shadow_dropped_total")
        self._to_review(d, text, rid, built)

    def _answer(self, d: Decision, text: str, request_id: str, built: Built) -> tuple[Answer, JSONDict | None]:
        """The answer's JSON and its audit record."""
        info = built.info
        record = None
        if self.audit is not None:
            log_ = self.audit.log
            record = log_.record(
                request_id=request_id,
                model=info.get("model"),
                model_version=info.get("version"),
                decision=d.label,
                confidence=round(d.confidence, 6),
                route=d.route,
                endpoint=" ".join(dict.fromkeys(_host(u) for u in d.endpoints)) or None,
                text_hmac=log_.text_hmac(text),
                pii=d.pii,
                flags=d.flags,
                action=d.action.type if d.action is not None else None,
                path=d.path,
            )
        answer: Answer = {
            "label": d.label,
            "confidence": round(d.confidence, 6),
            "route": d.route,
            "flags": d.flags,
            "action": d.action.to_dict() if d.action is not None else None,
            "top": d.top,
        }
        if d.labels is not None:
            answer["labels"], answer["scores"] = d.labels, d.scores
            answer["label_sep"], answer["unsure"] = d.label_sep, d.unsure or []
        if d.path is not None:
            answer["path"] = d.path
        answer["request_id"] = request_id
        return answer, record

    def _to_review(self, d: Decision, text: str, request_id: str, built: Built) -> None:
        """Keep the message for the console's review queue if it is worth a look (masked)."""
        if d.shadow is not None and d.shadow["local"] != d.shadow["llm"]:
            source, llm = "disagreed", d.shadow["llm"]
        elif d.route == "refused":
            source, llm = "rejected", None
        else:
            limit = built.answers.threshold_for(d.local_label)
            if d.local_confidence >= (limit if limit is not None else UNSURE_BELOW):
                return
            source, llm = "unsure", (d.label if d.route == "llm" else None)
        guard = built.answers.guard
        masked = guard.mask(text, spans=d.spans).text if guard is not None else self._default_guard.mask(text).text
        self.review.offer(
            ReviewItem(request_id, time.time(), masked, source, d.local_label, round(d.local_confidence, 6), d.top, llm)
        )

    def _request_threads(self) -> anyio.CapacityLimiter:
        """The threads requests that may wait on the network run on: more than every egress pool
        lets in at once, so however many calls a slow webhook or LLM holds (each up to its
        deadline), LOCAL_THREADS are left for requests whose answer is local."""
        cascade = self.built.answers
        need = LOCAL_THREADS + sum(p.capacity for p in (cascade.llm_pool, cascade.action_pool) if p is not None)
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(need)
        elif self._threads.total_tokens < need:
            self._threads.total_tokens = need
        return self._threads

    def _new_id(self) -> str:
        """A random 128-bit request id (hex), cut from a block of random bytes read 512 ids at a
        time: one system call per 512 requests instead of one each (called on the event loop only)."""
        if self._id_pos >= len(self._id_block):
            self._id_block, self._id_pos = os.urandom(16 * 512), 0
        i = self._id_pos
        self._id_pos = i + 16
        return self._id_block[i : i + 16].hex()

    def prompt_changed(self, reason: str | None) -> None:
        """Proxy mode: one request matched (``reason`` None) or was forwarded for ``reason``; a
        sudden rise of changed prompts is logged as a warning."""
        warning = self.prompt_watch.saw(reason)
        if warning is not None:
            log.warning("%s", warning)
            self.prompt_warning = (time.time(), warning)

    async def local_answer(self, text: str) -> tuple[str, float]:
        """The small model's label and confidence for ``text``, nothing else (no LLM, no action,
        no record): what proxy mode's shadow compares with the upstream's answer."""
        model = self.built.cascade.model
        label, confidence, _ = await anyio.to_thread.run_sync(
            model.predict_one, clean_text(text), limiter=self._request_threads()
        )
        return str(label), float(confidence)

    def proxied(self, request_id: str, text: str, local: str, confidence: float, llm: str, shadow: bool) -> None:
        """Proxy mode: the upstream's label for a task request it answered. In shadow mode it is
        compared with the small model's (agreement, review, capture ``shadow``); otherwise (the
        small model was unsure) it is kept in the capture pool as an LLM answer."""
        built = self.built
        version = built.info.get("version")
        capture = built.capture
        if shadow:
            masked = capture.mask(text) if capture is not None else self._mask_for_review(text)
            self._shadow_result(ShadowResult(request_id, masked, local, confidence, llm, version))
        elif capture is not None and "llm" in capture.sources:
            capture.llm_answer(request_id, text, llm, local, confidence, version)
            self.metrics.inc("offramp_capture_rows_total", source="llm")

    def _mask_for_review(self, text: str) -> str:
        guard = self.built.answers.guard
        return guard.mask(text).text if guard is not None else PrivacyGuard().mask(text).text

    async def record_forwarded(self, reason: str, url: str, text: str) -> str:
        """Proxy mode: the audit record of a request sent to the upstream (route ``forwarded``, the
        upstream's host, an HMAC of the text it carried, the reason as a flag), committed before
        the request goes; its request id."""
        rid = self._new_id()
        if self.audit is None:
            return rid
        log_ = self.audit.log
        record = log_.record(
            request_id=rid,
            model=self.info.get("model"),
            model_version=self.info.get("version"),
            route="forwarded",
            endpoint=_host(url),
            text_hmac=log_.text_hmac(text),
            flags=[reason],
        )
        try:
            await _committed(self.audit, [record])
        except Exception as e:
            self.metrics.inc("offramp_audit_failures_total")
            log.error("audit log write failed for forwarded request %s: %s", rid, e)
            raise ApiError(
                503, "audit_unavailable", "the audit log could not record this request; it was not forwarded"
            ) from None
        return rid

    async def classify(
        self, texts: list[str], conversation: str | None, single: bool, principal: str | None = None
    ) -> tuple[str, list[Answer]]:
        """(request id, one answer per text), answered only once the audit records are committed.

        Pseudonyms are scoped to the caller: with API keys, to the key and the conversation id it
        gives; without keys there is no caller to bind a conversation to, so to this request. A
        caller never gets back a value it did not itself send."""
        self.check_texts(texts)
        rid = self._new_id()
        ids = [rid] if single else [f"{rid}-{i}" for i in range(len(texts))]
        scope = f"{principal}\x1f{conversation}" if principal and conversation else f"request\x1f{rid}"
        items: list[Item] = [(t, i, scope, principal) for t, i in zip(texts, ids)]
        big = len(items) > 16 or sum(len(t) for t in texts) > 20_000
        if self.built.answers.may_block or big:  # a wait on the network, or a long batch: keep the event loop free
            pairs = await anyio.to_thread.run_sync(self.decide_many, items, limiter=self._request_threads())
        else:  # messages of requests that arrive together share one model call
            pairs = (
                [await self.batcher.submit(items[0])]
                if len(items) == 1
                else await asyncio.gather(*[self.batcher.submit(item) for item in items])
            )
        if self.audit is not None:
            try:
                await _committed(self.audit, [r for _, r in pairs if r is not None])
            except Exception as e:
                self.metrics.inc("offramp_audit_failures_total")
                log.error("audit log write failed for request %s: %s", rid, e)
                raise ApiError(
                    503,
                    "audit_unavailable",
                    f"the audit log could not record this request "
                    f"({type(e).__name__}); no answer is given without its record",
                ) from None
        return rid, [a for a, _ in pairs]


def _build(settings: Settings) -> Built:
    """The cascade (or the chain of stages) the settings' target describes, wired."""
    if settings.is_chain:
        from offramp.chain.run import build_chain_service

        return build_chain_service(settings)
    return build(settings)


async def _committed(writer: AuditWriter, records: list[JSONDict]) -> None:
    """Wait, without blocking the event loop, until the audit writer has committed ``records``."""
    loop = asyncio.get_running_loop()
    futures = []
    for rec in records:
        fut: asyncio.Future[object] = loop.create_future()

        def done(result: object, f: asyncio.Future[object] = fut) -> None:
            loop.call_soon_threadsafe(_settle, f, result)

        writer.submit(rec, done)
        futures.append(fut)
    await asyncio.gather(*futures)


def _settle(fut: asyncio.Future[object], result: object) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


def _watched(built: Built) -> list[tuple[Path, str | None]]:
    """The registries a built service serves, each with the version it serves: the model's, or
    each stage's of a chain."""
    if isinstance(built.chain, Chain):
        return [(s.registry, s.version) for s in built.chain.stages if s.registry is not None]
    if built.registry is not None:
        return [(built.registry, built.info.get("registry_version"))]
    return []
