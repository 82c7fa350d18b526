"""The service's settings, resolved once with one precedence for every value:

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
=================  ====================  ========================  =============

Paths in the YAML are relative to the YAML file; paths from flags or the environment to the
working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from offramp.errors import UsageError
from offramp.pipeline.config import PipelineSpec, is_pipeline_file, read_pipeline
from offramp.teacher.egress import env_flag, guard_mode_from


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
}


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
    read_timeout_s: float = 10.0  # headers, then the body, must arrive within this many seconds
    max_connections_per_client: int = 64  # open connections one client address may hold (per process)
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def base(self) -> Path:
        """The directory YAML paths are relative to."""
        return self.target.parent if self.pipeline is not None else Path(".")

    @property
    def model_dir(self) -> Path:
        return self.base / self.pipeline.model if self.pipeline is not None else self.target

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
        return cls(target=target, pipeline=pipeline, sources=sources, **values)
