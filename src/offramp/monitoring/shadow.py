"""Shadow mode: the small model measured against the LLM on live traffic.

Live, phase two (``local_first``): :class:`ShadowSampler` sends a sample of the small model's local
answers to the LLM too, off the request path. Messages wait in a bounded queue for one worker
thread; when the LLM is slower than the traffic the queue fills and further messages are dropped
and counted, never waited for. The text is masked before it is queued, so only masked text sits in
memory or leaves the machine. (Phase one, ``llm_first``, is the cascade asking the LLM for every
message and keeping the local answer beside it.)

Offline, :func:`shadow_report` reads the compared answers the capture pool kept: how often the LLM
agrees with the small model, and whether the small model can take over. Agreement is counted per
**local** label: of the messages the small model labelled L, the share the LLM also labelled L —
what a switch decision needs. Intervals are 95% Wilson intervals. The suggested confidence
threshold is the one that keeps the most messages local while agreement on them stays at or above
the target.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import random
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from offramp.capture.pool import read_rows
from offramp.egress.policy import EgressRefused
from offramp.errors import DataError
from offramp.llm.client import LLMError
from offramp.types import JSONDict

log = logging.getLogger("offramp.shadow")


@dataclass
class ShadowResult:
    request_id: str
    text: str  # masked
    local_label: str
    confidence: float
    llm_label: str
    version: str | None


class ShadowSampler:
    def __init__(
        self,
        ask: Callable[[str], str],
        mask: Callable[[str], str],
        sample: float = 1.0,
        max_queue: int = 1000,
        seed: int | None = None,
    ):
        self._ask, self._mask, self.sample = ask, mask, sample
        self._queue: queue.Queue[tuple[str, str, str, float, str | None] | None] = queue.Queue(max_queue)
        self._rng = random.Random(seed)
        self.on_result: Callable[[ShadowResult], None] | None = None
        self.sent = self.dropped = self.failed = 0
        self._thread = threading.Thread(target=self._run, name="offramp-shadow", daemon=True)
        self._thread.start()

    def offer(self, request_id: str, text: str, local_label: str, confidence: float, version: str | None) -> bool:
        """Maybe (by the sample rate) queue a local answer for the LLM; False if it was not queued."""
        if self.sample <= 0 or (self.sample < 1 and self._rng.random() >= self.sample):
            return False
        try:
            self._queue.put_nowait((request_id, self._mask(text), local_label, confidence, version))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:  # the worker is busy with a full queue: it is a daemon thread, let it go
            pass

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                rid, masked, local, conf, version = item
                try:
                    answer = self._ask(masked)
                except (LLMError, EgressRefused):
                    self.failed += 1
                    continue
                self.sent += 1
                if self.on_result is not None:
                    try:
                        self.on_result(ShadowResult(rid, masked, local, conf, answer, version))
                    except Exception:  # a bug in the consumer: logged, the worker keeps going
                        log.exception("shadow result handler failed for request %s", rid)
            finally:
                self._queue.task_done()


MIN_COMPARED = 30  # fewer compared messages than this: too few to say anything


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials (0, 1 for n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def best_threshold(confidence: np.ndarray, agree: np.ndarray, target: float) -> dict[str, Any] | None:
    """The lowest confidence threshold (most messages local) whose kept messages agree >= target."""
    if not len(confidence):
        return None
    order = np.argsort(-confidence, kind="stable")
    c, a = confidence[order], agree[order].astype(np.float64)
    kept = np.arange(1, len(c) + 1)
    rate = np.cumsum(a) / kept
    # a threshold can only sit between distinct confidences: the last row of each run of equal values
    last = np.r_[c[1:] != c[:-1], True]
    ok = np.nonzero(last & (rate >= target))[0]
    if not len(ok):
        return None
    i = int(ok[-1])
    return {"threshold": float(c[i]), "local_share": float(kept[i] / len(c)), "agreement": float(rate[i])}


@dataclass
class ShadowReport:
    """How often the LLM agreed with the small model on live traffic (:func:`shadow_report`):
    overall and per local label, with 95% Wilson intervals; the confidence threshold that keeps
    agreement at ``target``; labels only the LLM gives; and a one-line verdict (``ready``: switch)."""

    compared: int
    agreed: int
    agreement: float | None
    ci95: list[float]
    per_label: dict[str, dict[str, Any]]
    target: float
    threshold: dict[str, float] | None
    llm_only_labels: dict[str, int]
    ready: bool
    verdict: str

    def to_dict(self) -> JSONDict:
        return asdict(self)


def shadow_report(
    rows: Sequence[Mapping[str, Any]] | str | os.PathLike[str],
    target: float = 0.95,
    min_share: float = 0.5,
    since: float | None = None,
) -> ShadowReport:
    """Per-label agreement, the threshold that keeps agreement >= ``target`` and a one-line verdict.

    ``rows``: a capture pool (its ``shadow`` rows since ``since``, epoch seconds), or the pool's
    shadow rows themselves (``local_label``, ``label`` as the LLM's answer, ``confidence``).
    """
    if isinstance(rows, (str, os.PathLike)):
        stored = read_rows(Path(rows), ["shadow"], since)
        if not stored:
            raise DataError(
                f"pool {rows} has no shadow rows", "serve traffic with a shadow: section and capture from: [shadow]"
            )
        rows = stored
    rows = [r for r in rows if r.get("local_label") is not None]
    n = len(rows)
    local = np.array([str(r["local_label"]) for r in rows], dtype=object)
    llm = np.array([str(r["label"]) for r in rows], dtype=object)
    conf = np.array([float(r.get("confidence") or 0.0) for r in rows])
    agree = local == llm if n else np.zeros(0, dtype=bool)
    per_label = {}
    for lab in sorted(set(local.tolist())):
        sel = local == lab
        k, m = int(agree[sel].sum()), int(sel.sum())
        lo, hi = wilson(k, m)
        per_label[lab] = {"compared": m, "agreed": k, "agreement": k / m, "ci95": [lo, hi]}
    k = int(agree.sum())
    lo, hi = wilson(k, n)
    best = best_threshold(conf, agree, target)
    # labels the LLM gives that the small model never does: a new intent it has to learn first
    unseen = {lab: int((llm == lab).sum()) for lab in sorted(set(llm.tolist()) - set(local.tolist()))}
    top_unseen = max(unseen.items(), key=lambda kv: kv[1]) if unseen else None
    if n < MIN_COMPARED:
        verdict = f"not yet: only {n} messages compared (at least {MIN_COMPARED} are needed to judge)"
        ready = False
    else:
        kept = conf >= best["threshold"] if best else np.zeros(n, dtype=bool)
        worst = None
        for lab in per_label:
            sel = kept & (local == lab)
            if sel.sum():
                kk, mm = int(agree[sel].sum()), int(sel.sum())
                w_lo, w_hi = wilson(kk, mm)
                if w_hi < target and (worst is None or kk / mm < worst[1]):
                    worst = (lab, kk / mm, w_lo, w_hi, mm)
        if top_unseen is not None and top_unseen[1] >= 0.01 * n:
            lab, count = top_unseen
            verdict = (
                f"not yet: the LLM answered {lab}, a label the small model never gives, for {count / n:.1%} of "
                "messages (retrain on them: 'offramp pool export' then 'offramp registry retrain')"
            )
            ready = False
        elif best is None:
            verdict = f"not yet: no confidence threshold reaches {target:.2f} agreement (overall {k / n:.3f})"
            ready = False
        elif worst is not None:
            lab, rate, w_lo, w_hi, mm = worst
            verdict = f"not yet: {lab} agreement {rate:.2f} [{w_lo:.2f}, {w_hi:.2f}] on {mm} messages"
            ready = False
        elif best["local_share"] < min_share:
            verdict = (
                f"not yet: only {best['local_share']:.1%} local would reach {target:.2f} agreement "
                f"(at confidence >= {best['threshold']:.3f})"
            )
            ready = False
        else:
            verdict = (
                f"switch now: {best['local_share']:.1%} local at >= {target:.2f} agreement "
                f"(send messages under confidence {best['threshold']:.3f} to the LLM; measured {best['agreement']:.3f})"
            )
            ready = True
    return ShadowReport(
        compared=n,
        agreed=k,
        agreement=k / n if n else None,
        ci95=[lo, hi],
        per_label=per_label,
        target=target,
        threshold=best,
        llm_only_labels=unseen,
        ready=ready,
        verdict=verdict,
    )
