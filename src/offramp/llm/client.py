"""One client for any OpenAI-compatible chat-completions endpoint (OpenAI, Azure OpenAI, vLLM,
Ollama, llama.cpp server).

* the API key is read from an environment variable at call time, never printed or logged;
* bounded concurrency (a semaphore), explicit timeouts;
* retries with exponential backoff and full jitter on 429, 5xx, timeouts and connection errors,
  honouring ``Retry-After``; no retry on a 4xx that cannot succeed;
* failures are typed: LLMUnavailable, LLMRateLimited, LLMRequestRejected, LLMBadResponse;
* every request passes the client's :class:`~offramp.egress.policy.EgressPolicy` first (by
  default the one the environment sets).
"""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from offramp.egress.policy import EgressPolicy
from offramp.errors import OfframpError

RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMError(OfframpError):
    exit_code = 1


class LLMUnavailable(LLMError):
    """Down, unreachable or too slow, after every retry."""


class LLMRateLimited(LLMError):
    """Still 429 after every retry."""


class LLMRequestRejected(LLMError):
    """A 4xx that retrying cannot fix (bad key, unknown model, malformed request)."""


class LLMBadResponse(LLMError):
    """The server answered 2xx with something that is not a chat completion."""


@dataclass
class LLMConfig:
    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = 30.0
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    max_concurrency: int = 4

    def __repr__(self) -> str:  # no key material here, but keep the env var name only
        return f"LLMConfig(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"


@dataclass
class ChatResult:
    content: str
    usage: dict = field(default_factory=dict)
    logprobs: Any = None
    latency_s: float = 0.0
    attempts: int = 1


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class ChatClient:
    """Send chat-completion requests with retries. Thread-safe; share one per endpoint."""

    def __init__(
        self,
        config: LLMConfig,
        *,
        policy: EgressPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        self.config = config
        self.policy = policy if policy is not None else EgressPolicy.from_env()
        base = config.base_url.rstrip("/")
        self.url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self._http = httpx.Client(timeout=httpx.Timeout(config.timeout_s, connect=min(5.0, config.timeout_s)))
        self._slots = threading.BoundedSemaphore(max(1, config.max_concurrency))
        self._sleep = sleep
        self._rng = rng or random.Random()

    def close(self) -> None:
        self._http.close()

    def _headers(self) -> dict:
        h = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.config.backoff_max_s)
        cap = min(self.config.backoff_max_s, self.config.backoff_base_s * (2**attempt))
        return self._rng.uniform(0, cap)  # full jitter

    def chat(self, messages: list[dict], **params) -> ChatResult:
        """One chat completion. ``params`` go into the request body (temperature, logprobs, ...)."""
        contents = [str(m.get("content", "")) for m in messages]
        safe = self.policy.check(self.url, contents)
        body = {"model": self.config.model, "messages": [{**m, "content": c} for m, c in zip(messages, safe)], **params}
        last: str = ""
        kind: type[LLMError] = LLMUnavailable
        t0 = time.perf_counter()
        for attempt in range(self.config.max_retries + 1):
            retry_after = None
            with self._slots:
                try:
                    r = self._http.post(self.url, json=body, headers=self._headers())
                except httpx.TimeoutException:
                    last, kind = f"no answer within {self.config.timeout_s:g} s", LLMUnavailable
                except httpx.TransportError as e:
                    last, kind = f"cannot reach {self.url} ({type(e).__name__})", LLMUnavailable
                else:
                    if r.is_success:
                        return self._parse(r, time.perf_counter() - t0, attempt + 1)
                    # some servers answer 500 to a request field they do not support (llama-cpp-python
                    # does for response_format): that is not transient, retrying cannot help
                    blames_request = "response_format" in r.text[:2000]
                    if r.status_code not in RETRYABLE or blames_request:
                        raise LLMRequestRejected(
                            f"{self.url} answered {r.status_code}: {r.text[:200]}",
                            "check the model name, the API key variable and the request",
                        )
                    retry_after = _retry_after(r.headers.get("retry-after"))
                    last = f"{self.url} answered {r.status_code}"
                    kind = LLMRateLimited if r.status_code == 429 else LLMUnavailable
            if attempt < self.config.max_retries:
                self._sleep(self._backoff(attempt, retry_after))
        raise kind(f"{last} after {self.config.max_retries + 1} attempts")

    def _parse(self, r: httpx.Response, latency: float, attempts: int) -> ChatResult:
        try:
            doc = r.json()
            choice = doc["choices"][0]
            content = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMBadResponse(f"{self.url} answered 2xx without a chat completion: {r.text[:200]!r}") from None
        return ChatResult(str(content), doc.get("usage") or {}, choice.get("logprobs"), latency, attempts)
