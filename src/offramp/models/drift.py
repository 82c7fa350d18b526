"""Drift: is live traffic still like what the model was trained on?

Training keeps a reference in the model directory: the winner's **out-of-fold** confidences and
labels (in-sample ones look over-confident). :class:`DriftMonitor` keeps a rolling window of live
confidences, labels and don't-know / fallback outcomes and compares it with the reference:

* ``confidence`` — population stability index (PSI) of the confidence, over ten fixed bins
  (edges 0.3, 0.4, …, 0.9, 0.95, 0.99);
* ``label_mix`` — PSI of the share of each label;
* ``dont_know`` and ``fallback`` — the change of each rate (window − reference).

A PSI above 0.2 is the usual sign of a real shift (below 0.1: none). A new intent the model has
never seen shows up as a confidence shift (its messages get low confidences) and a higher
fallback or don't-know rate.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

PSI_WARN = 0.2
_EPS = 1e-4
# fixed confidence bins: a calibrated model puts most in-scope messages near 1.0, where bins cut at
# the reference's deciles would be a hair apart and count any small sharpening as drift
CONFIDENCE_EDGES = np.array([0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99])


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two distributions over the same bins (counts or shares)."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    e = np.maximum(e / max(e.sum(), 1e-12), _EPS)
    a = np.maximum(a / max(a.sum(), 1e-12), _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass
class DriftReference:
    """Training-time distributions: confidence bin edges and shares, label shares, rates."""

    edges: np.ndarray  # inner bin edges of the confidence
    confidence_share: np.ndarray
    labels: list[str]
    label_share: np.ndarray
    dont_know_rate: float
    fallback_rate: float
    n: int

    @classmethod
    def of(cls, model: Any, thresholds: dict[str, float] | None = None) -> DriftReference | None:
        """The reference stored with ``model`` at training (None for a model trained without one).
        ``thresholds``: the routing thresholds the reference fallback rate is computed for."""
        arrays = (getattr(model, "training_record_", None) or {}).get("arrays", {})
        conf, pred = arrays.get("oof_confidence"), arrays.get("oof_label")
        if conf is None or pred is None or not len(conf):
            return None
        conf = np.asarray(conf, dtype=np.float64)
        pred = np.asarray(pred, dtype=np.int64)
        labels = [str(c) for c in model.classes_]
        edges = CONFIDENCE_EDGES
        bins = np.bincount(np.searchsorted(edges, conf, side="right"), minlength=len(edges) + 1)
        label_share = np.bincount(pred, minlength=len(labels))[: len(labels)] / len(pred)
        reject = getattr(model, "reject_threshold_", None)
        dont_know = float(np.mean(conf < reject)) if reject is not None else 0.0
        limits = thresholds or {}
        if limits:
            lim = np.array([limits.get(lab, limits.get("*", -1.0)) for lab in labels])
            fallback = float(np.mean(conf < lim[pred]))
        else:
            fallback = 0.0
        return cls(edges, bins / len(conf), labels, label_share, dont_know, fallback, int(len(conf)))

    def compare(
        self, confidences: Sequence[float], labels: Sequence[str], dont_know: Sequence[bool], fallback: Sequence[bool]
    ) -> dict[str, float]:
        """The drift signals of a sample of live traffic against this reference."""
        conf = np.asarray(confidences, dtype=np.float64)
        bins = np.bincount(np.searchsorted(self.edges, conf, side="right"), minlength=len(self.edges) + 1)
        index = {lab: i for i, lab in enumerate(self.labels)}
        counts = np.zeros(len(self.labels) + 1)
        for lab in labels:
            counts[index.get(str(lab), len(self.labels))] += 1
        ref_labels = np.append(self.label_share, 0.0)
        return {
            "confidence": psi(self.confidence_share, bins),
            "label_mix": psi(ref_labels, counts),
            "dont_know": float(np.mean(dont_know)) - self.dont_know_rate if len(dont_know) else 0.0,
            "fallback": float(np.mean(fallback)) - self.fallback_rate if len(fallback) else 0.0,
        }


class DriftMonitor:
    """A rolling window of live outcomes compared with a :class:`DriftReference`.

    Values exist once ``min_count`` messages were seen and are refreshed every ``every`` messages
    or ``every_s`` seconds, whichever comes first; ``on_refresh(values)`` is called after each.
    """

    def __init__(
        self,
        reference: DriftReference,
        window: int = 1000,
        min_count: int = 200,
        every: int = 100,
        every_s: float = 10.0,
        on_refresh: Callable[[dict[str, float]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.reference = reference
        self.min_count, self.every, self.every_s = min_count, every, every_s
        self._rows: deque[tuple[float, str, bool, bool]] = deque(maxlen=window)
        self._since = 0
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()
        self.values: dict[str, float] | None = None
        self.on_refresh = on_refresh

    def observe(self, confidence: float, label: str, dont_know: bool, fallback: bool) -> None:
        with self._lock:
            self._rows.append((confidence, label, dont_know, fallback))
            self._since += 1
            due = self._since >= self.every or self._clock() - self._last >= self.every_s
            if not due or len(self._rows) < self.min_count:
                return
            rows = list(self._rows)
            self._since, self._last = 0, self._clock()
        conf, labels, dk, fb = zip(*rows)
        values = self.reference.compare(conf, labels, dk, fb)
        self.values = values
        if self.on_refresh is not None:
            self.on_refresh(values)

    @property
    def count(self) -> int:
        return len(self._rows)
