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

Offline, :func:`drift_report` computes the same signals from a capture pool or an audit log of
served traffic."""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from offramp.audit.log import read_bodies
from offramp.capture.pool import read_rows
from offramp.errors import DataError
from offramp.registry.records import load
from offramp.types import JSONDict

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

    def __post_init__(self) -> None:
        self._index = {lab: i for i, lab in enumerate(self.labels)}

    def label_index(self, label: str) -> int:
        """The label's position in the reference (one past the last for a label it does not know)."""
        return self._index.get(label, len(self.labels))

    def compare(
        self, confidences: Sequence[float], labels: Sequence[str], dont_know: Sequence[bool], fallback: Sequence[bool]
    ) -> dict[str, float]:
        """The drift signals of a sample of live traffic against this reference."""
        codes = np.fromiter((self.label_index(str(lab)) for lab in labels), dtype=np.int64, count=len(labels))
        return self.compare_arrays(
            np.asarray(confidences, dtype=np.float64), codes, np.asarray(dont_know, bool), np.asarray(fallback, bool)
        )

    def compare_arrays(
        self, conf: np.ndarray, codes: np.ndarray, dont_know: np.ndarray, fallback: np.ndarray
    ) -> dict[str, float]:
        """:meth:`compare` on arrays (labels as :meth:`label_index` codes): a few microseconds."""
        bins = np.bincount(np.searchsorted(self.edges, conf, side="right"), minlength=len(self.edges) + 1)
        counts = np.bincount(codes, minlength=len(self.labels) + 1)
        ref_labels = np.append(self.label_share, 0.0)
        return {
            "confidence": psi(self.confidence_share, bins),
            "label_mix": psi(ref_labels, counts),
            "dont_know": float(dont_know.mean()) - self.dont_know_rate if len(dont_know) else 0.0,
            "fallback": float(fallback.mean()) - self.fallback_rate if len(fallback) else 0.0,
        }


class DriftMonitor:
    """A rolling window of live outcomes compared with a :class:`DriftReference`.

    Values exist once ``min_count`` messages were seen and are refreshed every ``every`` messages
    or ``every_s`` seconds, whichever comes first; ``on_refresh(values)`` is called after each.
    The window keeps running counts (confidence bins, labels, rates), so a message costs a few
    list operations and a comparison a few array operations. With ``background=True`` (the
    service) the comparison runs on its own thread; otherwise in the ``observe`` call that makes it due.
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
        background: bool = False,
    ):
        self.reference = reference
        self.min_count, self.every, self.every_s = min_count, every, every_s
        self._window = window
        self._ring: list[tuple[int, int, bool, bool]] = []  # (confidence bin, label code, don't know, fallback)
        self._edges = [float(e) for e in reference.edges]
        self._bins = [0] * (len(self._edges) + 1)
        self._labels = [0] * (len(reference.labels) + 1)
        self._dk = 0
        self._fb = 0
        self._n = 0
        self._since = 0
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()
        self.values: dict[str, float] | None = None
        self.on_refresh = on_refresh
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._background = background
        if background:
            threading.Thread(target=self._loop, name="offramp-drift", daemon=True).start()

    def observe(self, confidence: float, label: str, dont_know: bool, fallback: bool) -> None:
        self.observe_many([(confidence, label, dont_know, fallback)])

    def observe_many(self, outcomes: Sequence[tuple[float, str, bool, bool]]) -> None:
        """(confidence, label, don't know, fallback) of a batch of messages, under one lock."""
        rows = [
            (bisect_right(self._edges, conf), self.reference.label_index(label), dk, fb)
            for conf, label, dk, fb in outcomes
        ]
        due = False
        with self._lock:
            for row in rows:
                if self._n < self._window:
                    self._ring.append(row)
                else:  # the oldest message leaves the window
                    i = self._n % self._window
                    old = self._ring[i]
                    self._ring[i] = row
                    self._bins[old[0]] -= 1
                    self._labels[old[1]] -= 1
                    self._dk -= old[2]
                    self._fb -= old[3]
                self._bins[row[0]] += 1
                self._labels[row[1]] += 1
                self._dk += row[2]
                self._fb += row[3]
                self._n += 1
                self._since += 1
                due = due or self._since == self.every  # once: the comparison resets the count
        if not due:
            return
        if self._background:
            self._wake.set()
        else:
            self.refresh()

    def refresh(self) -> None:
        """Compare the window with the reference now (if it holds enough messages)."""
        with self._lock:
            n = len(self._ring)
            if n < self.min_count:
                self._since = 0  # counted again from here: due once more every ``every`` messages
                return
            bins, labels, dk, fb = list(self._bins), list(self._labels), self._dk, self._fb
            self._since, self._last = 0, self._clock()
        ref = self.reference
        values = {
            "confidence": psi(ref.confidence_share, np.array(bins)),
            "label_mix": psi(np.append(ref.label_share, 0.0), np.array(labels)),
            "dont_know": dk / n - ref.dont_know_rate,
            "fallback": fb / n - ref.fallback_rate,
        }
        self.values = values
        if self.on_refresh is not None:
            self.on_refresh(values)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.every_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._since > 0:  # something new since the last comparison (every 100 or every 10 s)
                self.refresh()
                if self._since >= self.every:  # more arrived while comparing: compare again soon
                    self._wake.set()

    @property
    def count(self) -> int:
        return len(self._ring)


def _audit_rows(path: Path) -> list[dict[str, Any]] | None:
    """The drift fields of an offramp audit log's records; None if ``path`` is not one."""
    bodies = read_bodies(path)
    if bodies is None:
        return None
    return [
        {
            "confidence": b.get("confidence"),
            "label": b.get("decision"),
            "dont_know": b.get("route") == "refused",
            "fallback": b.get("route") == "llm" or bool(set(b.get("flags") or []) & {"fallback_failed"}),
        }
        for b in bodies
    ]


@dataclass
class DriftReport:
    """Drift of served traffic against a model's training reference (:func:`drift_report`)."""

    source: str
    kind: str  # "audit log" or "capture pool"
    messages: int
    psi: dict[str, float]  # confidence, label_mix
    rate_change: dict[str, float]  # dont_know, fallback
    reference: dict[str, float]  # n, dont_know_rate, fallback_rate
    threshold: float
    drifted: list[str]

    def to_dict(self) -> JSONDict:
        return asdict(self)


def drift_report(source: str | Path, model_dir: str | Path, window: int = 1000) -> DriftReport:
    """The drift signals of the last ``window`` messages in ``source`` (an audit log or a capture
    pool) against the training reference of ``model_dir`` (a model directory or a registry)."""
    source = Path(source)
    if source.is_dir():
        raise DataError(f"{source} is a directory", "give an audit log or a capture pool (an SQLite file)")
    if not source.is_file():
        raise DataError(f"{source} does not exist", "give an audit log or a capture pool (SQLite)")
    model = load(model_dir)
    reference = DriftReference.of(model)
    if reference is None:
        raise DataError(
            f"{model_dir} holds no drift reference (it was trained by an older offramp)", "retrain it to add one"
        )
    rows = _audit_rows(source)
    kind = "audit log"
    if rows is None:
        kind = "capture pool"
        rows = [
            {
                "confidence": r["confidence"],
                "label": r["local_label"],
                "dont_know": False,
                "fallback": r["source"] == "llm",
            }
            for r in read_rows(source)
            if r["local_label"] is not None and r["confidence"] is not None
        ]
    rows = [r for r in rows if r["confidence"] is not None]
    if not rows:
        raise DataError(f"{source} has no messages with a confidence to compare", "serve some traffic first")
    recent = rows[-window:]
    values = reference.compare(
        [r["confidence"] for r in recent],
        [str(r["label"]) for r in recent],
        [bool(r["dont_know"]) for r in recent],
        [bool(r["fallback"]) for r in recent],
    )
    return DriftReport(
        source=str(source),
        kind=kind,
        messages=len(recent),
        psi={"confidence": values["confidence"], "label_mix": values["label_mix"]},
        rate_change={"dont_know": values["dont_know"], "fallback": values["fallback"]},
        reference={
            "n": reference.n,
            "dont_know_rate": reference.dont_know_rate,
            "fallback_rate": reference.fallback_rate,
        },
        threshold=PSI_WARN,
        drifted=[k for k in ("confidence", "label_mix") if values[k] > PSI_WARN],
    )
