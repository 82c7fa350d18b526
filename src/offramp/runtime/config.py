"""The pipeline YAML: which model, how to route, what to do per label, the service's limits.

This module reads and checks the file (:func:`read_pipeline`) and resolves the service's settings
(:class:`Settings`); :mod:`offramp.runtime.cascade` wires the cascade from them.

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
  pool: pool.sqlite               #   for 'offramp pool export' -> 'offramp registry retrain'
  from: [llm, shadow, feedback]   #   which answers to keep
  ttl_s: 3600                     #   how long a request id can get feedback (POST /v1/feedback)
  allow_new_labels: false         #   true: feedback may name a label the model lacks
shadow:                           # optional (needs llm: or proxy:): run the small model beside the LLM
  mode: llm_first                 #   llm_first: the LLM answers, the small model is measured in the shadow
  sample: 1.0                     #   local_first: the small model answers, this share is also sent to the LLM
offline: true                     # optional: refuse every host that is not loopback (as OFFRAMP_OFFLINE=1)
```

The service's settings are resolved once with one precedence for every value:


    explicit flag  >  pipeline YAML  >  environment variable  >  default

A flag that was not given is ``None`` (distinct from a flag given with the default's value), and so
is a YAML key that is absent; :attr:`Settings.sources` says where each value came from.

=================  ====================  ========================  =============
setting            pipeline YAML         environment               default
=================  ====================  ========================  =============
max_body_bytes     limits.max_body_bytes OFFRAMP_MAX_BODY_BYTES    1,000,000
max_text_chars     limits.max_text_chars OFFRAMP_MAX_TEXT_CHARS    20,000
max_batch          limits.max_batch      OFFRAMP_MAX_BATCH         256
read_timeout_s     limits.read_timeout_s OFFRAMP_READ_TIMEOUT      10 (seconds)
max_connections_per_client
                   limits.max_connections_per_client
                                         OFFRAMP_MAX_CONNECTIONS_PER_CLIENT
                                                                   64
audit              audit                 OFFRAMP_AUDIT             none
offline            offline               OFFRAMP_OFFLINE           false
egress_guard       egress_guard          OFFRAMP_EGRESS_GUARD      remote
rate_limit         —                     OFFRAMP_RATE_LIMIT        600 a minute
llm_price_model    —                     OFFRAMP_LLM_PRICE_MODEL   gpt-4o-mini
api_keys           —                     OFFRAMP_API_KEYS          none
public_endpoints   —                     OFFRAMP_PUBLIC_ENDPOINTS  false
admin_keys         —                     OFFRAMP_ADMIN_KEYS        none
ui_admin_open      —                     OFFRAMP_UI_ADMIN_OPEN     false
upstream           proxy.upstream        OFFRAMP_UPSTREAM          none
allowed_hosts      —                     OFFRAMP_ALLOWED_HOSTS     loopback names only
behind_tls         —                     OFFRAMP_BEHIND_TLS        false
=================  ====================  ========================  =============

``allowed_hosts`` are the host names (comma-separated; ``*`` for any) the web console answers
under besides ``localhost``, ``127.0.0.1`` and ``::1``: a page on another name is refused, so a
DNS-rebinding page cannot drive the console. ``behind_tls``: the service is reached over HTTPS
through a proxy, so the console's session cookie is marked ``Secure``.

Paths in the YAML are relative to the YAML file; paths from flags or the environment to the
working directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offramp.data.io import read_yaml_file
from offramp.egress.policy import env_flag, guard_mode_from
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


class ProxySpec(_Strict):
    upstream: str  # the app's LLM: an OpenAI-compatible base URL (https://api.openai.com/v1)
    api_key_env: Optional[str] = "OPENAI_API_KEY"  # the variable holding the upstream's key
    timeout_s: float = Field(60.0, gt=0)
    forward_authorization: bool = False  # pass the app's own Authorization header (when no key is set)


class PipelineSpec(_Strict):
    model: Optional[str] = None  # one small model; or stages: (see offramp.chain.spec), not both
    stages: Optional[List[Any]] = None  # a chain of stages, read by offramp.chain
    label_sep: Optional[str] = Field(None, min_length=1)  # stages: the full label joins the stages' labels with this
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
    proxy: Optional[ProxySpec] = None  # in front of the app's own LLM: what is not the task goes there
    task: Optional[str] = None  # the task file (how the app asks, what shape it reads back)
    tasks: Optional[List[str]] = None  # several task files


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
    if (spec.model is None) == (spec.stages is None):
        raise UsageError(
            f"{path}: give model: (one small model) or stages: (a chain of them)"
            + (", not both" if spec.model is not None else ""),
            "for example model: model/",
        )
    if spec.stages is not None:
        shared = [
            k for k in ("routing", "actions", "action_order", "capture", "proxy", "task", "tasks") if getattr(spec, k)
        ]
        if shared:
            raise UsageError(
                f"{path}: {shared[0]}: goes with model:, and this file has stages:",
                "a chain's thresholds and actions belong to its stages",
            )
        if spec.shadow is not None and spec.shadow.mode != "local_first":
            raise UsageError(
                f"{path}: shadow.mode: a chain's stages answer first; {spec.shadow.mode} goes with model:",
                "use shadow: {mode: local_first, sample: 0.1}: each stage's local answers are compared with the "
                "LLM's answer to that stage's question",
            )
    elif spec.label_sep is not None:
        raise UsageError(f"{path}: label_sep: goes with stages:", "a single model's labels are its own")
    r = spec.routing
    if r and r.fit and (r.fit.max_llm_share is None) == (r.fit.local_precision is None):
        raise UsageError(f"{path}: routing.fit needs exactly one of max_llm_share or local_precision")
    if spec.shadow is not None and spec.llm is None and spec.proxy is None:
        raise UsageError(
            f"{path}: shadow: needs an llm: section or a proxy: upstream (the LLM to compare with)",
            "in proxy mode the upstream is that LLM; otherwise add llm: {base_url: ..., model: ...}",
        )
    if spec.task is not None and spec.tasks is not None:
        raise UsageError(f"{path}: give task: or tasks:, not both")
    return spec


def _positive_int(name: str) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise UsageError(f"{name}={raw!r} is not a whole number") from None
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
        return value

    return parse


def _positive_float(name: str) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"{name}={raw!r} is not a number") from None
        if not value > 0 or value == float("inf"):
            raise UsageError(f"{name} must be a positive number, got {raw}")
        return value

    return parse


# name -> (YAML getter, environment variable, parser of the variable's text, default)
_TABLE: dict[str, tuple[Callable[[PipelineSpec], Any] | None, str, Callable[[str], Any], Any]] = {
    "max_body_bytes": (
        lambda p: p.limits.max_body_bytes,
        "OFFRAMP_MAX_BODY_BYTES",
        _positive_int("OFFRAMP_MAX_BODY_BYTES"),
        1_000_000,
    ),
    "max_text_chars": (
        lambda p: p.limits.max_text_chars,
        "OFFRAMP_MAX_TEXT_CHARS",
        _positive_int("OFFRAMP_MAX_TEXT_CHARS"),
        20_000,
    ),
    "max_batch": (lambda p: p.limits.max_batch, "OFFRAMP_MAX_BATCH", _positive_int("OFFRAMP_MAX_BATCH"), 256),
    # seconds a client has to send a request's headers (from connecting, or from the previous
    # response on a kept-alive connection) and, separately, its body: slow senders are cut off
    "read_timeout_s": (
        lambda p: p.limits.read_timeout_s,
        "OFFRAMP_READ_TIMEOUT",
        _positive_float("OFFRAMP_READ_TIMEOUT"),
        10.0,
    ),
    # open connections one client address may hold (per worker process); one more gets 503
    "max_connections_per_client": (
        lambda p: p.limits.max_connections_per_client,
        "OFFRAMP_MAX_CONNECTIONS_PER_CLIENT",
        _positive_int("OFFRAMP_MAX_CONNECTIONS_PER_CLIENT"),
        64,
    ),
    "audit": (lambda p: p.audit, "OFFRAMP_AUDIT", Path, None),
    "offline": (lambda p: p.offline, "OFFRAMP_OFFLINE", env_flag, False),
    "egress_guard": (lambda p: p.egress_guard, "OFFRAMP_EGRESS_GUARD", guard_mode_from, "remote"),
    "rate_limit": (None, "OFFRAMP_RATE_LIMIT", _positive_float("OFFRAMP_RATE_LIMIT"), 600.0),
    "llm_price_model": (None, "OFFRAMP_LLM_PRICE_MODEL", str, "gpt-4o-mini"),
    "api_keys": (None, "OFFRAMP_API_KEYS", Path, None),
    "public_endpoints": (None, "OFFRAMP_PUBLIC_ENDPOINTS", env_flag, False),
    "admin_keys": (None, "OFFRAMP_ADMIN_KEYS", Path, None),
    "ui_admin_open": (None, "OFFRAMP_UI_ADMIN_OPEN", env_flag, False),
    "upstream": (lambda p: p.proxy.upstream if p.proxy else None, "OFFRAMP_UPSTREAM", str, None),
    "allowed_hosts": (None, "OFFRAMP_ALLOWED_HOSTS", lambda v: host_names(v, "OFFRAMP_ALLOWED_HOSTS"), ()),
    "behind_tls": (None, "OFFRAMP_BEHIND_TLS", env_flag, False),
    # a chain's stages: in this process (local), or as Ray Serve deployments (ray) on the cluster at ray_address
    "engine": (None, "OFFRAMP_ENGINE", lambda v: engine_name(v, "OFFRAMP_ENGINE"), "local"),
    "ray_address": (None, "OFFRAMP_RAY_ADDRESS", str, None),
}


def engine_name(value: str, source: str = "--engine") -> str:
    if value not in ("local", "ray"):
        raise UsageError(f"{source}: {value!r} is not an engine", "use local or ray")
    return value


def host_names(value: str | tuple[str, ...] | list[str] | None, source: str = "--allowed-hosts") -> tuple[str, ...]:
    """Host names from a comma-separated list (lower case, without ports); ``*`` allows any."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    names = []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if name != "*" and (any(c in name for c in "/@ \t") or name.startswith(".")):
            raise UsageError(
                f"{source}: {item.strip()!r} is not a host name", "give names like offramp.internal, comma-separated"
            )
        names.append(name.strip("[]"))
    return tuple(names)


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to know, resolved; build one with :meth:`resolve`."""

    target: Path  # a model directory, or a pipeline YAML
    pipeline: PipelineSpec | None
    max_body_bytes: int
    max_text_chars: int
    max_batch: int
    audit: Path | None
    offline: bool
    egress_guard: str
    rate_limit: float
    llm_price_model: str
    api_keys: Path | None
    public_endpoints: bool  # with API keys: /readyz, /metrics and the OpenAPI docs open to anyone
    admin_keys: Path | None = None  # key hashes allowed to change things from the console
    ui_admin_open: bool = False  # without keys: let anyone change things from the console (a laptop demo)
    upstream: str | None = None  # proxy mode: the app's own LLM, where what is not the task goes
    allowed_hosts: tuple[str, ...] = ()  # host names the console answers under, besides the loopback ones
    behind_tls: bool = False  # reached over HTTPS through a proxy: the console's cookie is Secure
    read_timeout_s: float = 10.0  # headers, then the body, must arrive within this many seconds
    max_connections_per_client: int = 64  # open connections one client address may hold (per process)
    engine: str = "local"  # a chain's stages: here, or as Ray Serve deployments ("ray")
    ray_address: str | None = None  # engine ray: the cluster (None: a Ray started here)
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def base(self) -> Path:
        """The directory YAML paths are relative to."""
        return self.target.parent if self.pipeline is not None else Path(".")

    @property
    def model_dir(self) -> Path:
        if self.pipeline is None:
            return self.target
        if self.pipeline.model is None:
            raise UsageError(
                f"{self.target} is a chain of stages, not one model",
                "serve it with 'offramp serve PIPELINE', measure it with 'offramp eval PIPELINE TEST_FILE', "
                "or load it with offramp.chain.Chain.from_pipeline",
            )
        return self.base / self.pipeline.model

    @property
    def is_chain(self) -> bool:
        return self.pipeline is not None and self.pipeline.stages is not None

    @classmethod
    def resolve(
        cls,
        target: str | os.PathLike[str],
        flags: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Settings for serving ``target``; ``flags`` holds the values given explicitly (None: not given)."""
        target = Path(target)
        flags = flags or {}
        env = os.environ if env is None else env
        unknown = set(flags) - set(_TABLE)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        pipeline = read_pipeline(target) if is_pipeline_file(target) else None
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, (from_yaml, var, parse, default) in _TABLE.items():
            yaml_value = from_yaml(pipeline) if (pipeline is not None and from_yaml is not None) else None
            raw = env.get(var, "").strip()
            env_value = parse(raw) if raw else None  # a malformed variable is refused even when overridden
            if flags.get(name) is not None:
                values[name], sources[name] = flags[name], "flag"
            elif yaml_value is not None:
                if name == "audit":
                    yaml_value = target.parent / yaml_value
                elif name == "egress_guard":
                    yaml_value = guard_mode_from(yaml_value, f"{target}: egress_guard")
                values[name], sources[name] = yaml_value, "pipeline"
            elif env_value is not None:
                values[name], sources[name] = env_value, "environment"
            else:
                values[name], sources[name] = default, "default"
        if values["audit"] is not None:
            values["audit"] = Path(values["audit"])
        values["allowed_hosts"] = host_names(values["allowed_hosts"])
        return cls(target=target, pipeline=pipeline, sources=sources, **values)
