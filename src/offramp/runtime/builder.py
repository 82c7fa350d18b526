"""The one place the parts are wired: resolved :class:`~offramp.runtime.config.Settings` in,
a ready :class:`~offramp.runtime.cascade.Cascade` out.

The CLI's ``serve``, the service's start-up and its reloads all come through :func:`build`, so a
pipeline's ``privacy:`` guard is the one the cascade masks with *and* the one its LLM client and
webhooks apply at egress, and a reload starts from the file's current settings (nothing is kept
in module globals).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from offramp.capture.live import Capture
from offramp.capture.pool import Pool
from offramp.data.io import read_dataset
from offramp.data.multilabel import parse_label_sets
from offramp.egress.policy import EgressPolicy
from offramp.egress.pool import EgressPool
from offramp.errors import UsageError
from offramp.estimators.base import TextClassifier
from offramp.estimators.multilabel import indicator
from offramp.llm.client import ChatClient, LLMConfig
from offramp.modeldir.store import model_version, read_model_json
from offramp.monitoring.drift import DriftReference
from offramp.monitoring.shadow import ShadowSampler
from offramp.privacy.guard import PrivacyGuard, build_guard
from offramp.registry.records import load, resolve_model_dir
from offramp.runtime.actions import Action, build_action
from offramp.runtime.cascade import Cascade
from offramp.runtime.config import PipelineSpec, Settings
from offramp.runtime.fallback import LLMFallback
from offramp.runtime.routing import fit_bands, fit_thresholds


@dataclass
class Built:
    """A wired cascade and what the service reports about it."""

    cascade: Cascade
    settings: Settings
    model_dir: Path  # the directory loaded (a registry's current version when serving a registry)
    info: dict[str, Any]  # model name, family, version, manifest hash, labels, creation date, routing
    registry: Path | None = None  # the registry served, if any
    capture: Capture | None = None  # the pipeline's capture: section
    shadow: ShadowSampler | None = None  # shadow: {mode: local_first}
    reference: DriftReference | None = None  # training-time distributions, for drift

    def close(self) -> None:
        """Release what the cascade holds open: the pseudonym vault, the LLM client's connections,
        the capture pool and the shadow worker."""
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
    routing: dict[str, Any] | None = None,
    registry_version: str | None = None,
) -> dict[str, Any]:
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


def build(settings: Settings) -> Built:
    """Load the model and wire guard, routing, fallback and actions as ``settings`` say."""
    model_dir, registry_version = resolve_model_dir(settings.model_dir)
    registry = settings.model_dir if registry_version is not None else None
    model = load(model_dir)
    spec = settings.pipeline
    if spec is None:  # a bare model directory: the default guard, every answer local
        guard: PrivacyGuard | None = PrivacyGuard()
        info = model_info(model, model_dir, registry_version=registry_version)
        reference = DriftReference.of(model)
        return Built(Cascade(model, guard=guard), settings, model_dir, info, registry, reference=reference)
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
    guard = build_guard(spec.privacy.model_dump(), base) if spec.privacy is not None else PrivacyGuard()
    policy = egress_policy(settings, guard)
    client = None
    if spec.llm is not None:
        c = spec.llm
        client = ChatClient(
            LLMConfig(
                base_url=c.base_url,
                model=c.model,
                api_key_env=c.api_key_env,
                timeout_s=c.timeout_s,
                max_retries=c.max_retries,
            ),
            policy=policy,
        )
    actions: dict[str, Action] = {}
    for label, a in spec.actions.items():
        act = build_action(a, base, client, policy)
        if act is not None:
            actions[label] = act
    thresholds: dict[str, float] = {}
    summary = None
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
            val.labels,
            max_llm_share=f.max_llm_share,
            local_precision=f.local_precision,
        )
        thresholds = summary["thresholds"]
    fallback = None
    llm_labels = [str(c) for c in model.classes_]

    def ask_llm() -> LLMFallback:  # each use gets its own breaker
        assert client is not None and spec.llm is not None
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
    if spec.shadow is not None:
        info["shadow"] = spec.shadow.mode
    return Built(cascade, settings, model_dir, info, registry, capture, shadow, DriftReference.of(model, thresholds))


def _check_multilabel_keys(spec: PipelineSpec, path: Any, multi: bool, labels: set[str]) -> None:
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
