"""The pipeline YAML: which model, how to route, what to do per label, the service's limits.

This module reads and checks the file; :mod:`offramp.pipeline.settings` resolves its service
settings against flags and the environment, and :mod:`offramp.pipeline.builder` wires the cascade.

```yaml
model: model/                     # a model directory (relative to this file)
llm:                              # optional: any OpenAI-compatible server, asked when unsure
  base_url: http://127.0.0.1:8080/v1
  model: qwen2.5-1.5b-instruct
  timeout_s: 5                    # then the local answer is returned, flagged
  labels: [SUPPORT, GRATITUDE, TRY_TO_HACK, OTHER]   # optional: the LLM's label set (default: the model's)
routing:                          # optional: when to ask the LLM
  thresholds: {"*": 0.5}          #   fixed, or fitted on held-out data:
  fit: {val: val.csv, max_llm_share: 0.05}     # or: local_precision: 0.98
  # unsure_band: {"*": 0.15}      # a multi-label model: ask when any label's probability is this near its
                                  # threshold (or fit: one band, to max_llm_share or local_precision)
actions:                          # optional, per label (multi-label: "GRATITUDE+SUPPORT" for a combination)
  SUPPORT: {type: answer_from_docs, docs: docs/}
  GRATITUDE: {type: reply, text: "👍"}
  TRY_TO_HACK: {type: refuse, template: "I can only help with questions about your account."}
  OTHER: {type: forward, url: "http://127.0.0.1:9000/hook"}
# action_order: [GRATITUDE, SUPPORT]   # a multi-label model: the order its labels' actions run in
limits: {max_body_bytes: 1000000, max_text_chars: 20000, max_batch: 256}   # a serve flag beats these
privacy:                          # optional (default: patterns, placeholders; enabled: false for none)
  operator: pseudonym             #   redact | mask | placeholder | pseudonym
  ner: false                      #   true: also names and places (Presidio + spaCy)
  vault: pseudonyms.sqlite        #   pseudonym mapping (encrypted with OFFRAMP_VAULT_KEY)
audit: audit.sqlite               # optional: hash-chained audit log, one record per message
capture:                          # optional: keep the LLM's answers and people's corrections (masked)
  pool: pool.sqlite               #   for 'offramp pool export' -> 'offramp retrain --add'
  from: [llm, shadow, feedback]   #   which answers to keep
  ttl_s: 3600                     #   how long a request id can get feedback (POST /v1/feedback)
  allow_new_labels: false         #   true: feedback may name a label the model lacks
shadow:                           # optional (needs llm:): run the small model beside the LLM
  mode: llm_first                 #   llm_first: the LLM answers, the small model is measured in the shadow
  sample: 1.0                     #   local_first: the small model answers, this share is also sent to the LLM
offline: true                     # optional: refuse every host that is not loopback (as OFFRAMP_OFFLINE=1)
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offramp.data.io import read_yaml_file
from offramp.errors import UsageError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FitSpec(_Strict):
    val: str
    max_llm_share: Optional[float] = Field(None, ge=0, le=1)
    local_precision: Optional[float] = Field(None, gt=0, le=1)


class RoutingSpec(_Strict):
    thresholds: Optional[Dict[str, Annotated[float, Field(ge=0, le=1.01)]]] = None
    fit: Optional[FitSpec] = None
    # a multi-label model: a label is unsure within this distance of its threshold (per label or "*")
    unsure_band: Optional[Dict[str, Annotated[float, Field(ge=0, le=1)]]] = None


class LLMSpec(_Strict):
    base_url: str
    model: str
    api_key_env: Optional[str] = "OPENAI_API_KEY"
    timeout_s: float = Field(5.0, gt=0)
    max_retries: int = Field(1, ge=0, le=10)
    failure_threshold: int = Field(3, ge=1)
    reset_after_s: float = Field(30.0, ge=0)
    descriptions: Dict[str, str] = {}
    # the labels the LLM chooses from (default: the model's); may name labels the model lacks yet,
    # so that in shadow mode the LLM's answers teach the next version a new intent
    labels: Optional[List[str]] = None


class LimitsSpec(_Strict):  # None: not given here (a flag, the environment or the default decides)
    max_body_bytes: Optional[int] = Field(None, ge=1)
    max_text_chars: Optional[int] = Field(None, ge=1)
    max_batch: Optional[int] = Field(None, ge=1)
    read_timeout_s: Optional[float] = Field(None, gt=0, le=3600)
    max_connections_per_client: Optional[int] = Field(None, ge=1)


class PrivacySpec(_Strict):
    enabled: bool = True
    operator: str = "placeholder"
    entities: Optional[List[str]] = None
    threshold: float = Field(0.5, ge=0, le=1)
    language: str = "en"
    ner: bool = False
    spacy_model: Optional[str] = None
    vault: Optional[str] = None
    ttl_s: float = 86_400.0


class CaptureSpec(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pool: str
    sources: List[Literal["llm", "shadow", "feedback"]] = Field(["llm", "shadow", "feedback"], alias="from")
    ttl_s: float = Field(3600.0, gt=0)
    allow_new_labels: bool = False
    max_requests: int = Field(100_000, ge=1)  # request ids remembered for feedback at most


class ShadowSpec(_Strict):
    mode: Literal["llm_first", "local_first"]
    sample: float = Field(1.0, ge=0, le=1)
    queue: int = Field(1000, ge=1)  # local_first: messages waiting for the LLM at most (more are dropped, counted)


class PipelineSpec(_Strict):
    model: str
    routing: Optional[RoutingSpec] = None
    llm: Optional[LLMSpec] = None
    actions: Dict[str, Dict[str, Any]] = {}
    action_order: Optional[List[str]] = None  # a multi-label model: the order its labels' actions run in
    limits: LimitsSpec = Field(default_factory=lambda: LimitsSpec())
    privacy: Optional[PrivacySpec] = None
    audit: Optional[str] = None
    offline: Optional[bool] = None  # true: air-gapped, any host that is not loopback is refused before a byte is sent
    egress_guard: Optional[str] = None  # remote | always | off: where the privacy guard applies at egress
    capture: Optional[CaptureSpec] = None
    shadow: Optional[ShadowSpec] = None


def is_pipeline_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in (".yaml", ".yml")


def read_pipeline(path: str | Path) -> PipelineSpec:
    """The pipeline file's content, checked; a UsageError naming the first problem otherwise."""
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
    if spec.shadow is not None and spec.llm is None:
        raise UsageError(f"{path}: shadow: needs an llm: section (the LLM to compare with)")
    return spec
