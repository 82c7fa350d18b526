"""The pipeline YAML: which model, how to route, what to do per label, the service's limits.

```yaml
model: model/                     # a model directory (relative to this file)
llm:                              # optional: any OpenAI-compatible server, asked when unsure
  base_url: http://127.0.0.1:8080/v1
  model: qwen2.5-1.5b-instruct
  timeout_s: 5                    # then the local answer is returned, flagged
routing:                          # optional: when to ask the LLM
  thresholds: {"*": 0.5}          #   fixed, or fitted on held-out data:
  fit: {val: val.csv, max_llm_share: 0.05}     # or: local_precision: 0.98
actions:                          # optional, per label
  SUPPORT: {type: answer_from_docs, docs: docs/}
  GRATITUDE: {type: reply, text: "👍"}
  TRY_TO_HACK: {type: refuse, template: "I can only help with questions about your account."}
  OTHER: {type: forward, url: "http://127.0.0.1:9000/hook"}
limits: {max_body_bytes: 1000000, max_text_chars: 20000, max_batch: 256}
privacy:                          # optional (default: patterns, placeholders; enabled: false for none)
  operator: pseudonym             #   redact | mask | placeholder | pseudonym
  ner: false                      #   true: also names and places (Presidio + spaCy)
  vault: pseudonyms.sqlite        #   pseudonym mapping (encrypted with OFFRAMP_VAULT_KEY)
audit: audit.sqlite               # optional: hash-chained audit log, one record per message
offline: true                     # optional: refuse every host that is not loopback (as OFFRAMP_OFFLINE=1)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from offramp.errors import UsageError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FitSpec(_Strict):
    val: str
    max_llm_share: Optional[float] = None
    local_precision: Optional[float] = None


class RoutingSpec(_Strict):
    thresholds: Optional[Dict[str, float]] = None
    fit: Optional[FitSpec] = None


class LLMSpec(_Strict):
    base_url: str
    model: str
    api_key_env: Optional[str] = "OPENAI_API_KEY"
    timeout_s: float = 5.0
    max_retries: int = 1
    failure_threshold: int = 3
    reset_after_s: float = 30.0
    descriptions: Dict[str, str] = {}


class LimitsSpec(_Strict):
    max_body_bytes: int = 1_000_000
    max_text_chars: int = 20_000
    max_batch: int = 256


class PrivacySpec(_Strict):
    enabled: bool = True
    operator: str = "placeholder"
    entities: Optional[List[str]] = None
    threshold: float = 0.5
    language: str = "en"
    ner: bool = False
    spacy_model: Optional[str] = None
    vault: Optional[str] = None
    ttl_s: float = 86_400.0


class PipelineSpec(_Strict):
    model: str
    routing: Optional[RoutingSpec] = None
    llm: Optional[LLMSpec] = None
    actions: Dict[str, Dict[str, Any]] = {}
    limits: LimitsSpec = LimitsSpec()
    privacy: Optional[PrivacySpec] = None
    audit: Optional[str] = None
    offline: bool = False  # air-gapped: any host that is not loopback is refused before a byte is sent


@dataclass
class Pipeline:
    cascade: Any
    limits: LimitsSpec
    model_dir: Path
    routing: Optional[dict]
    audit_path: Optional[Path]


def read_pipeline(path: str | Path) -> PipelineSpec:
    from offramp.data.io import read_yaml_file

    path = Path(path)
    doc = read_yaml_file(path, "pipeline file")
    if not isinstance(doc, dict):
        raise UsageError(f"{path} must be a YAML mapping with at least 'model:'")
    try:
        spec = PipelineSpec.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"{path}: {where}: {first['msg']}") from None
    r = spec.routing
    if r and r.fit and (r.fit.max_llm_share is None) == (r.fit.local_precision is None):
        raise UsageError(f"{path}: routing.fit needs exactly one of max_llm_share or local_precision")
    return spec


def build_cascade(path: str | Path) -> Pipeline:
    """The cascade and its service settings from a pipeline file."""
    from offramp.data.io import read_dataset
    from offramp.models.store import load_model
    from offramp.pipeline.actions import build_action
    from offramp.pipeline.cascade import Cascade
    from offramp.pipeline.routing import fit_thresholds

    path = Path(path)
    spec = read_pipeline(path)
    base = path.parent
    if spec.offline:
        from offramp.teacher.egress import set_offline

        set_offline(True)
    model_dir = base / spec.model
    model = load_model(model_dir)
    labels = set(map(str, model.classes_))
    unknown = sorted(set(spec.actions) - labels - {str(getattr(model, "reject_label_", None))})
    if unknown:
        raise UsageError(f"{path}: actions for labels the model does not have: {', '.join(unknown)}",
                         f"the model's labels are: {', '.join(sorted(labels))}")
    client = None
    if spec.llm is not None:
        from offramp.teacher.client import ChatClient, LLMConfig

        c = spec.llm
        client = ChatClient(LLMConfig(base_url=c.base_url, model=c.model, api_key_env=c.api_key_env,
                                      timeout_s=c.timeout_s, max_retries=c.max_retries))
    actions = {}
    for label, a in spec.actions.items():
        act = build_action(a, base, client)
        if act is not None:
            actions[label] = act
    thresholds, summary = {}, None
    if spec.routing and spec.routing.thresholds:
        thresholds = dict(spec.routing.thresholds)
    if spec.routing and spec.routing.fit:
        f = spec.routing.fit
        val = read_dataset(base / f.val)
        summary = fit_thresholds(model.predict_proba(val.texts), model.classes_, val.labels,
                                 max_llm_share=f.max_llm_share, local_precision=f.local_precision)
        thresholds = summary["thresholds"]
    fallback = None
    if client is not None:
        from offramp.pipeline.fallback import LLMFallback

        fallback = LLMFallback(client, model.classes_, spec.llm.descriptions, spec.llm.failure_threshold,
                               spec.llm.reset_after_s)
    from offramp.privacy.guard import PrivacyGuard, build_guard

    # no privacy: section means the default guard (pattern fast path, typed placeholders);
    # privacy: {enabled: false} turns it off
    guard = build_guard(spec.privacy.model_dump(), base) if spec.privacy is not None else PrivacyGuard()
    audit = (base / spec.audit) if spec.audit else None
    return Pipeline(Cascade(model, fallback=fallback, thresholds=thresholds, actions=actions, guard=guard),
                    spec.limits, model_dir, summary, audit)
