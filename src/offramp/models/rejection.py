"""A calibrated "don't know": a confidence threshold fitted on held-out data to a stated target.

A message is answered when the model's top label is an in-scope label and its calibrated
confidence is at least the threshold; otherwise it gets the reject label. The threshold is the
lowest one that meets the target, so the model answers as much as it can while keeping the promise:

* ``in_scope_precision>=P``: among answered messages, at least P are in scope and right.
* ``oos_recall>=R``: at least R of the out-of-scope messages are rejected (needs some in the data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from offramp.errors import UsageError

KINDS = ("in_scope_precision", "oos_recall")


@dataclass
class RejectTarget:
    kind: str
    value: float

    @classmethod
    def parse(cls, text: str) -> "RejectTarget":
        m = re.fullmatch(r"\s*([a-z_]+)\s*(?:>=|:|=)\s*([0-9.]+)\s*", text or "")
        if not m or m.group(1) not in KINDS:
            raise UsageError(f"cannot read the reject target {text!r}",
                             "write in_scope_precision>=0.98 or oos_recall>=0.8")
        value = float(m.group(2))
        if not 0 < value <= 1:
            raise UsageError(f"the reject target {text!r} needs a value in (0, 1]")
        return cls(m.group(1), value)

    def __str__(self) -> str:
        return f"{self.kind}>={self.value:g}"


def _points(conf: np.ndarray, correct: np.ndarray, is_oos: np.ndarray, pred_oos: np.ndarray):
    """For each candidate threshold (ascending): in-scope precision, in-scope accuracy, oos recall, coverage."""
    thresholds = np.unique(np.concatenate([[0.0], conf, [1.0 + 1e-9]]))
    n_in, n_oos = max(1, int((~is_oos).sum())), int(is_oos.sum())
    out = []
    for t in thresholds:
        answered = (conf >= t) & ~pred_oos
        good = answered & ~is_oos & correct
        out.append({
            "threshold": float(t),
            "in_scope_precision": float(good.sum() / answered.sum()) if answered.any() else 1.0,
            "in_scope_accuracy": float(good.sum() / n_in),
            "oos_recall": float((~answered & is_oos).sum() / n_oos) if n_oos else None,
            "coverage": float(answered.mean()),
        })
    return out


def fit_rejection(proba: np.ndarray, classes, y_true, target: RejectTarget, oos_label: str | None) -> dict:
    """Fit the threshold on held-out calibrated probabilities.

    ``y_true`` are label strings; labels equal to ``oos_label``, or that the model never learned,
    count as out of scope. Returns the threshold, the held-out figures at it, and the curve.
    """
    classes = np.asarray(classes).astype(str)
    y = np.asarray(y_true, dtype=object).astype(str)
    pred = classes[proba.argmax(axis=1)]
    conf = proba.max(axis=1)
    is_oos = (y == oos_label) if oos_label else np.zeros(len(y), bool)
    is_oos |= ~np.isin(y, classes)
    pred_oos = (pred == oos_label) if oos_label else np.zeros(len(y), bool)
    if target.kind == "oos_recall" and not is_oos.any():
        raise UsageError("the reject target oos_recall needs out-of-scope examples in the held-out data",
                         "pass --oos-label with the label they carry, or use in_scope_precision>=P")
    pts = _points(conf, pred == y, is_oos, pred_oos)
    ok = [p for p in pts if (p[target.kind] or 0) >= target.value]
    chosen = ok[0] if ok else pts[-1]
    step = max(1, len(pts) // 60)
    return {
        "threshold": chosen["threshold"],
        "target": str(target),
        "met": bool(ok),
        "held_out": {k: v for k, v in chosen.items() if k != "threshold"},
        "n_held_out": int(len(y)),
        "n_oos_held_out": int(is_oos.sum()),
        "curve": pts[::step] + ([pts[-1]] if (len(pts) - 1) % step else []),
    }
