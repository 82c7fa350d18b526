"""A calibrated "don't know": a confidence threshold fitted on held-out data to a stated target.

A message is answered when the model's top label is an in-scope label and its calibrated
confidence is at least the threshold; otherwise it gets the reject label. The threshold is the
lowest one that meets the target, so the model answers as much as it can while keeping the promise:

* ``in_scope_precision>=P``: among answered messages, at least P are in scope and right.
* ``oos_recall>=R``: at least R of the out-of-scope messages are rejected (needs some in the data).

A held-out figure is a sample: 80 of 100 out-of-scope messages rejected there promises less than
80% on new traffic. So by default the target must hold for the figure's one-sided lower confidence
bound at 95% (Wilson's score interval), not only for the figure itself: with 100 out-of-scope
messages held out, ``oos_recall>=0.75`` needs 83 of them rejected. The target's ``confidence`` sets
the level; 0 fits to the held-out figure itself. Written ``oos_recall>=0.75 at 95% confidence``.

Models that embed messages can add a second signal: how close a message is to the nearest
in-scope training message (cosine similarity of sentence vectors). An off-topic message can get a
confident label from a linear model, but it rarely lies near any training example. The rejection
score is then ``confidence + w * similarity``, with ``w`` chosen on the same held-out data: the
weight that best separates right answers from out-of-scope messages (from wrong answers when the
held-out data has no out-of-scope ones), by ROC AUC; 0 keeps the plain confidence rule.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from offramp.errors import UsageError
from offramp.types import JSONDict

KINDS = ("in_scope_precision", "oos_recall")
FAMILIARITY_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
MIN_AUC_GAIN = 0.002  # a weight must separate this much better than plain confidence to be used
MIN_NEARNESS_AUC = 0.6  # and nearness alone must separate at least this well


DEFAULT_CONFIDENCE = 0.95


@dataclass
class RejectTarget:
    kind: str
    value: float
    confidence: float = DEFAULT_CONFIDENCE  # level of the lower bound the target must reach; 0: the figure itself

    @classmethod
    def parse(cls, text: str, confidence: float | None = None) -> RejectTarget:
        """``kind>=value``, optionally followed by ``at NN% confidence``; ``confidence`` (0 or
        0.5..0.999) overrides the written level, else the default 95%."""
        m = re.fullmatch(r"\s*([a-z_]+)\s*(?:>=|:|=)\s*([0-9.]+)\s*(?:at\s+([0-9.]+)\s*%\s*confidence\s*)?", text or "")
        if not m or m.group(1) not in KINDS:
            raise UsageError(
                f"cannot read the reject target {text!r}", "write in_scope_precision>=0.98 or oos_recall>=0.8"
            )
        value = float(m.group(2))
        if not 0 < value <= 1:
            raise UsageError(f"the reject target {text!r} needs a value in (0, 1]")
        written = float(m.group(3)) / 100 if m.group(3) else None
        if confidence is not None and written is not None and abs(confidence - written) > 1e-9:
            raise UsageError(
                f"the reject target {text!r} says {written:.0%} confidence, and {confidence:g} was asked too",
                "give the level once: in the target or as --reject-confidence",
                param="reject_confidence",
            )
        if confidence is None:
            confidence = written if written is not None else DEFAULT_CONFIDENCE
        if not (confidence == 0 or 0.5 <= confidence < 1):
            raise UsageError(
                f"the reject target's confidence {confidence:g} is not 0 or between 0.5 and 1",
                "use 0.95 (the default), 0.9, or 0 to fit to the held-out figure itself",
                param="reject_confidence",
            )
        return cls(m.group(1), value, confidence)

    def lower_bound(self, hits: np.ndarray, n: np.ndarray) -> np.ndarray:
        """The figure hits / n, or its one-sided lower Wilson bound at ``confidence`` (1 where n is 0)."""
        hits, n = np.asarray(hits, dtype=np.float64), np.asarray(n, dtype=np.float64)
        safe = np.maximum(n, 1)
        p = hits / safe
        if not self.confidence:
            return np.where(n > 0, p, 1.0)
        z = NormalDist().inv_cdf(self.confidence)
        den = 1 + z * z / safe
        centre = (p + z * z / (2 * safe)) / den
        half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe)) / den
        return np.where(n > 0, np.maximum(centre - half, 0.0), 1.0)

    def __str__(self) -> str:
        level = f" at {self.confidence * 100:g}% confidence" if self.confidence else ""
        return f"{self.kind}>={self.value:g}{level}"


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half);
    NaN when either side is empty."""
    if not len(pos) or not len(neg):
        return float("nan")
    from sklearn.metrics import roc_auc_score  # only when fitting: keeps the CLI's start-up light

    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def choose_familiarity_weight(conf, familiarity, good, bad) -> tuple[float, dict[str, float]]:
    """The weight w whose score ``conf + w * familiarity`` best separates the ``good`` messages (right
    answers) from the ``bad`` ones, by ROC AUC.

    0 (confidence alone) unless nearness separates them on its own (AUC at least MIN_NEARNESS_AUC:
    noise can nudge a combined AUC up by chance, it does not do this) and the best weight beats plain
    confidence by MIN_AUC_GAIN.
    """
    aucs = {}
    for w in FAMILIARITY_WEIGHTS:
        score = conf + w * familiarity
        aucs[f"{w:g}"] = roc_auc(score[good], score[bad])
    alone = roc_auc(familiarity[good], familiarity[bad])
    if np.isnan(alone) or alone < MIN_NEARNESS_AUC:
        return 0.0, aucs
    best = max(FAMILIARITY_WEIGHTS, key=lambda w: aucs[f"{w:g}"])
    return (best if aucs[f"{best:g}"] >= aucs["0"] + MIN_AUC_GAIN else 0.0), aucs


def _points(conf: np.ndarray, correct: np.ndarray, is_oos: np.ndarray, pred_oos: np.ndarray):
    """For each candidate threshold (ascending): in-scope precision, in-scope accuracy, oos recall, coverage.

    Counts come from sorted scores (how many of each kind score at least t), not one pass per
    threshold, so fitting stays quick on large held-out sets.
    """
    thresholds = np.unique(np.concatenate([[min(0.0, float(conf.min()))], conf, [float(conf.max()) + 1e-9]]))
    n, n_in, n_oos = len(conf), max(1, int((~is_oos).sum())), int(is_oos.sum())

    def at_least(mask):  # for each threshold: messages in mask scoring >= it
        s = np.sort(conf[mask])
        return len(s) - np.searchsorted(s, thresholds, side="left")

    answerable = ~pred_oos
    answered = at_least(answerable)
    good = at_least(answerable & ~is_oos & correct)
    oos_answered = at_least(answerable & is_oos)
    points = [
        {
            "threshold": float(t),
            "in_scope_precision": float(g / a) if a else 1.0,
            "in_scope_accuracy": float(g / n_in),
            "oos_recall": float((n_oos - o) / n_oos) if n_oos else None,
            "coverage": float(a / n),
        }
        for t, a, g, o in zip(thresholds, answered, good, oos_answered)
    ]
    counts = {  # (hits, n) of each target's figure, for its confidence bound
        "in_scope_precision": (good, answered),
        "oos_recall": (n_oos - oos_answered, np.full(len(thresholds), n_oos)),
    }
    return points, counts


@dataclass
class HeldOut:
    """The held-out figures at the chosen threshold (``lower_bound``: of the target's figure, at the
    target's confidence level)."""

    in_scope_precision: float
    in_scope_accuracy: float
    oos_recall: float | None
    coverage: float
    lower_bound: float


@dataclass
class Rejection:
    """A fitted "don't know" rule: the threshold under which the model answers ``label``, the
    target it was fitted to, whether it was met, and the held-out figures and curve behind it."""

    threshold: float
    target: str
    confidence: float
    met: bool
    familiarity_weight: float
    familiarity_auc: dict[str, float] | None
    held_out: HeldOut
    n_held_out: int
    n_oos_held_out: int
    curve: list[dict[str, float | None]]
    source: str = ""
    label: str = "UNKNOWN"
    memory_size: int | None = None  # sentence vectors kept for the nearness score
    refit_with_val: int | None = None  # validation rows the model was refitted with afterwards

    def to_dict(self) -> JSONDict:
        """The rule as metrics.json and ``train --json`` hold it."""
        d = asdict(self)
        for key in ("memory_size", "refit_with_val"):
            if d[key] is None:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rejection:
        """The rule from its stored form (metrics.json; older models lack the later fields)."""
        h = d["held_out"]
        held = HeldOut(
            float(h["in_scope_precision"]),
            float(h["in_scope_accuracy"]),
            None if h.get("oos_recall") is None else float(h["oos_recall"]),
            float(h["coverage"]),
            float(h.get("lower_bound", h["in_scope_precision"])),
        )
        return cls(
            threshold=float(d["threshold"]),
            target=str(d["target"]),
            confidence=float(d.get("confidence") or 0.0),
            met=bool(d["met"]),
            familiarity_weight=float(d.get("familiarity_weight") or 0.0),
            familiarity_auc=d.get("familiarity_auc"),
            held_out=held,
            n_held_out=int(d.get("n_held_out", 0)),
            n_oos_held_out=int(d.get("n_oos_held_out", 0)),
            curve=list(d.get("curve") or []),
            source=str(d.get("source", "")),
            label=str(d.get("label", "UNKNOWN")),
            memory_size=d.get("memory_size"),
            refit_with_val=d.get("refit_with_val"),
        )


def fit_rejection(
    proba: np.ndarray,
    classes,
    y_true,
    target: RejectTarget,
    oos_label: str | None,
    familiarity: np.ndarray | None = None,
) -> Rejection:
    """Fit the threshold on held-out calibrated probabilities.

    ``y_true`` are label strings; labels equal to ``oos_label``, or that the model never learned,
    count as out of scope. ``familiarity``: each held-out message's similarity to its nearest
    in-scope training message, when the model can measure it. Returns the threshold, the weight of
    familiarity in the score, the held-out figures at the threshold, and the curve.
    """
    classes = np.asarray(classes).astype(str)
    y = np.asarray(y_true, dtype=object).astype(str)
    pred = classes[proba.argmax(axis=1)]
    conf = proba.max(axis=1)
    is_oos = (y == oos_label) if oos_label else np.zeros(len(y), bool)
    is_oos |= ~np.isin(y, classes)
    pred_oos = (pred == oos_label) if oos_label else np.zeros(len(y), bool)
    if target.kind == "oos_recall" and not is_oos.any():
        raise UsageError(
            "the reject target oos_recall needs out-of-scope examples in the held-out data",
            "name the label they carry (the out-of-scope label), or use in_scope_precision>=P",
            param="oos_label",
        )
    weight, aucs = 0.0, None
    if familiarity is not None:
        familiarity = np.asarray(familiarity, dtype=np.float64)
        good = (pred == y) & ~is_oos & ~pred_oos
        # nearness is there to catch out-of-scope messages; without any held out, wrong answers
        bad = (is_oos if is_oos.any() else (pred != y)) & ~pred_oos
        weight, aucs = choose_familiarity_weight(conf, familiarity, good, bad)
        conf = conf + weight * familiarity
    pts, counts = _points(conf, pred == y, is_oos, pred_oos)
    bound = target.lower_bound(*counts[target.kind])
    ok = np.flatnonzero(bound >= target.value - 1e-12)
    at = int(ok[0]) if ok.size else len(pts) - 1
    chosen = pts[at]
    step = max(1, len(pts) // 60)
    return Rejection(
        threshold=float(chosen["threshold"]),
        target=str(target),
        confidence=target.confidence,
        met=bool(ok.size),
        familiarity_weight=weight,
        familiarity_auc=aucs,
        held_out=HeldOut(
            in_scope_precision=float(chosen["in_scope_precision"]),
            in_scope_accuracy=float(chosen["in_scope_accuracy"]),
            oos_recall=None if chosen["oos_recall"] is None else float(chosen["oos_recall"]),
            coverage=float(chosen["coverage"]),
            lower_bound=float(bound[at]),
        ),
        n_held_out=int(len(y)),
        n_oos_held_out=int(is_oos.sum()),
        curve=pts[::step] + ([pts[-1]] if (len(pts) - 1) % step else []),
    )
