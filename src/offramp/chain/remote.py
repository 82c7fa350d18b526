"""A classify stage answered by another offramp service: ``remote: http://host:8000``.

The stage's model runs elsewhere (its own machine, its own replicas behind a load balancer); the
chain asks it with ``POST /v1/classify`` in one request per batch. What leaves the machine passes
the pipeline's egress policy (offline mode refuses a host that is not loopback; the privacy guard
masks text bound for another host). Each call has a deadline; after ``failure_threshold`` failures
in a row the stage is skipped for ``reset_after_s`` seconds, so a service that is down costs one
timeout, not one per message. While it is down, :class:`StageUnavailable` tells the chain, which
sends that stage's messages to the LLM (when the stage has one) or flags them ``stage_unavailable``;
the other stages keep answering.
"""

from __future__ import annotations

from typing import Any, Sequence

import httpx
import numpy as np

from offramp.egress.breaker import Breaker
from offramp.egress.policy import EgressPolicy, EgressRefused
from offramp.errors import UsageError


class StageUnavailable(Exception):
    """The remote stage did not answer (down, slow, refusing, or its breaker is open)."""


class RemoteStage:
    """The small part of a model's interface a stage's cascade calls, answered over HTTP."""

    multi_label = False
    reject_label_ = None

    def __init__(
        self,
        url: str,
        policy: EgressPolicy,
        *,
        timeout_s: float = 2.0,
        labels: Sequence[str] | None = None,
        api_key: str | None = None,
        failure_threshold: int = 3,
        reset_after_s: float = 30.0,
        where: str = "remote stage",
    ) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise UsageError(f"{where}: remote: {url!r} is not an http(s) URL", "give the service's base URL")
        self.policy, self.timeout_s = policy, timeout_s
        self.breaker = Breaker(failure_threshold, reset_after_s)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=self._headers)
        self.version: str | None = None
        try:
            policy.check(self.url, [])
            info = self._client.get(self.url + "/readyz").raise_for_status().json()
            self.version = str(info.get("version")) if info.get("version") else None
            found = [str(x) for x in info.get("labels") or []]
        except (httpx.HTTPError, ValueError, EgressRefused) as e:
            if labels is None:
                raise UsageError(
                    f"{where}: remote: {self.url} does not answer /readyz ({type(e).__name__})",
                    "start that service first, or list its labels under labels: so the chain can start without it",
                ) from None
            found = []
        self.classes_ = np.array(list(labels) if labels is not None else found, dtype=object)
        if not len(self.classes_):
            raise UsageError(f"{where}: remote: {self.url} reports no labels", "give them under labels:")
        self._index = {str(c): i for i, c in enumerate(self.classes_)}

    def close(self) -> None:
        self._client.close()

    def predict_and_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Labels and a probability row per text (the remote's top labels; the rest 0)."""
        if self.breaker.is_open:
            raise StageUnavailable(f"{self.url} failed repeatedly; skipped for now")
        try:
            sent = self.policy.check(self.url, list(texts))
            results: list[dict[str, Any]] = []
            for i in range(0, len(sent), 256):
                chunk = sent[i : i + 256]
                r = self._client.post(self.url + "/v1/classify", json={"texts": chunk})
                r.raise_for_status()
                results += r.json()["results"]
        except (httpx.HTTPError, ValueError, KeyError, EgressRefused) as e:
            self.breaker.failed()
            raise StageUnavailable(f"{self.url}: {type(e).__name__}") from None
        self.breaker.succeeded()
        proba = np.zeros((len(results), len(self.classes_)), dtype=np.float64)
        labels = []
        for row, res in zip(proba, results):
            for top in res.get("top") or []:
                j = self._index.get(str(top.get("label")))
                if j is not None:
                    row[j] = float(top.get("score") or 0.0)
            label = str(res.get("label"))
            j = self._index.get(label)
            if j is not None:
                row[j] = float(res.get("confidence") or row[j])
            labels.append(label)
        return np.array(labels, dtype=object), proba

    def predict_one(self, text: str) -> tuple[str, float, np.ndarray]:
        labels, proba = self.predict_and_proba([text])
        return str(labels[0]), float(proba[0].max()), proba[0]
