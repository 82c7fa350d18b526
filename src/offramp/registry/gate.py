"""The regression gate: is a candidate model at least as good as the current one on a frozen set?

Both models answer the same gate messages. The candidate passes when

* its macro-F1 is not lower than the current model's: the 95% paired-bootstrap interval of the
  difference (candidate − current, the same resampled messages for both) does not lie wholly
  below zero, and
* no label's F1 drops by more than ``max_class_drop`` (labels that are new in the candidate are
  reported as new, not as drops).
"""

from __future__ import annotations

from typing import Sequence, TypedDict

import numpy as np


class Change(TypedDict):
    """A figure for both models and the 95% interval of the paired difference candidate − current."""

    current: float
    candidate: float
    ci95: list[float]


class LabelChange(TypedDict):
    current: float
    candidate: float
    support: int
    new: bool
    ci95: list[float]


class Verdict(TypedDict, total=False):
    """The gate's verdict (``metric`` and ``micro_f1`` for several labels per message)."""

    passed: bool
    reasons: list[str]
    metric: str
    micro_f1: Change
    macro_f1: Change
    per_class: dict[str, LabelChange]
    n: int
    max_class_drop: float
    also: Verdict  # a second gate's verdict (a chain's end to end), which had to pass as well
    source: str  # what the gate set was


class GateRecord(TypedDict, total=False):
    """The verdict as a registry version records it."""

    against: str
    decision: str
    reasons: list[str]
    micro_f1: Change
    macro_f1: Change
    per_class: dict[str, LabelChange]
    source: str
    n: int
    also: Verdict  # the second gate's verdict (a chain's end to end)


def _f1_per_label(y: np.ndarray, p: np.ndarray, n_labels: int) -> np.ndarray:
    """F1 of each label 0..n_labels-1 (codes >= n_labels in ``p`` are predictions outside the set)."""
    hit = y == p
    tp = np.bincount(y[hit], minlength=n_labels)[:n_labels]
    support = np.bincount(y, minlength=n_labels)[:n_labels]
    predicted = np.bincount(p, minlength=n_labels)[:n_labels]
    denom = support + predicted
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def _macro(y: np.ndarray, p: np.ndarray, n_labels: int) -> float:
    f1 = _f1_per_label(y, p, n_labels)
    present = np.bincount(y, minlength=n_labels)[:n_labels] > 0
    return float(f1[present].mean()) if present.any() else 0.0


def _per_label(
    labels: Sequence[str],
    f_a: np.ndarray,
    f_b: np.ndarray,
    support: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    new: set[str],
    max_class_drop: float,
    reasons: list[str],
    shown: np.ndarray | None = None,
) -> dict[str, LabelChange]:
    """Each label's F1 for both models with the 95% interval of the change; a drop beyond the
    limit (for a label not new) is added to ``reasons``."""
    per_class: dict[str, LabelChange] = {}
    for i, lab in enumerate(labels):
        if shown is not None and not shown[i]:
            continue
        ci = [float(lo[i]), float(hi[i])]
        per_class[lab] = {
            "current": float(f_a[i]),
            "candidate": float(f_b[i]),
            "support": int(support[i]),
            "new": lab in new,
            "ci95": ci,
        }
        drop = f_a[i] - f_b[i]
        if lab not in new and drop > max_class_drop + 1e-12:
            reasons.append(
                f"{lab} F1 drops by {drop:.4f} ({f_a[i]:.4f} -> {f_b[i]:.4f} on {support[i]} messages, 95% interval "
                f"of the change [{ci[0]:+.4f}, {ci[1]:+.4f}]; the limit is {max_class_drop:g})"
            )
    return per_class


def compare(
    y_true: Sequence[str],
    current: Sequence[str],
    candidate: Sequence[str],
    *,
    new_labels: Sequence[str] = (),
    max_class_drop: float = 0.02,
    n_boot: int = 1000,
    seed: int = 0,
) -> Verdict:
    """The gate's verdict on two models' predictions of the same gate set.

    Returns ``{"passed", "reasons", "macro_f1": {"current", "candidate", "ci95"}, "per_class":
    {label: {"current", "candidate", "support", "new"}}, "n"}``; ``ci95`` bounds the paired
    difference candidate − current.
    """
    labels = sorted(set(map(str, y_true)))
    code = {lab: i for i, lab in enumerate(labels)}
    n_labels = len(labels)
    y = np.array([code[str(v)] for v in y_true], dtype=np.int64)
    a = np.array([code.get(str(v), n_labels) for v in current], dtype=np.int64)
    b = np.array([code.get(str(v), n_labels) for v in candidate], dtype=np.int64)
    f_a, f_b = _f1_per_label(y, a, n_labels), _f1_per_label(y, b, n_labels)
    m_a, m_b = _macro(y, a, n_labels), _macro(y, b, n_labels)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    class_diffs = np.empty((n_boot, n_labels))
    for i in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        fa, fb = _f1_per_label(y[idx], a[idx], n_labels), _f1_per_label(y[idx], b[idx], n_labels)
        present = np.bincount(y[idx], minlength=n_labels)[:n_labels] > 0
        diffs[i] = (fb[present].mean() - fa[present].mean()) if present.any() else 0.0
        class_diffs[i] = fb - fa
    lo, hi = (float(x) for x in np.percentile(diffs, [2.5, 97.5]))
    class_lo, class_hi = np.percentile(class_diffs, [2.5, 97.5], axis=0)
    support = np.bincount(y, minlength=n_labels)
    new = set(map(str, new_labels))
    reasons: list[str] = []
    if hi < 0:
        reasons.append(
            f"macro-F1 is lower: {m_b:.4f} vs {m_a:.4f} (difference {m_b - m_a:+.4f}, 95% interval "
            f"[{lo:+.4f}, {hi:+.4f}] below zero)"
        )
    per_class = _per_label(labels, f_a, f_b, support, class_lo, class_hi, new, max_class_drop, reasons)
    return {
        "passed": not reasons,
        "reasons": reasons,
        "macro_f1": {"current": m_a, "candidate": m_b, "ci95": [lo, hi]},
        "per_class": per_class,
        "n": int(len(y)),
        "max_class_drop": max_class_drop,
    }


def _set_counts(Y: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label: true positives, predicted, carried (column sums over the rows)."""
    return (Y & P).sum(axis=0), P.sum(axis=0), Y.sum(axis=0)


def _set_f1(tp: np.ndarray, pred: np.ndarray, true: np.ndarray) -> tuple[float, np.ndarray]:
    """(micro-F1, per-label F1) from per-label counts."""
    denom = pred + true
    per = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    total = denom.sum()
    return (float(2 * tp.sum() / total) if total else 0.0), per


def compare_sets(
    y_true: np.ndarray,
    current: np.ndarray,
    candidate: np.ndarray,
    labels: Sequence[str],
    *,
    new_labels: Sequence[str] = (),
    max_class_drop: float = 0.02,
    n_boot: int = 1000,
    seed: int = 0,
) -> Verdict:
    """The gate for several labels per message: indicator matrices (messages x ``labels``) of the
    gate set's label sets and the two models' predicted sets.

    The candidate passes when its micro-F1 is not lower (the 95% paired-bootstrap interval of
    the difference does not lie wholly below zero) and no label's F1 drops by more than
    ``max_class_drop``. Returns the shape of :func:`compare` with ``metric: "micro_f1"`` and a
    ``micro_f1`` entry beside ``macro_f1`` (over the labels the gate set carries).
    """
    Y, A, B = (np.asarray(m).astype(bool) for m in (y_true, current, candidate))
    n, k = Y.shape
    carried = Y.sum(axis=0) > 0
    mi_a, f_a = _set_f1(*_set_counts(Y, A))
    mi_b, f_b = _set_f1(*_set_counts(Y, B))
    ma_a = float(f_a[carried].mean()) if carried.any() else 0.0
    ma_b = float(f_b[carried].mean()) if carried.any() else 0.0
    rng = np.random.default_rng(seed)
    micro_d, macro_d = np.empty(n_boot), np.empty(n_boot)
    class_d = np.empty((n_boot, k))
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        ya = _set_counts(Y[idx], A[idx])
        yb = _set_counts(Y[idx], B[idx])
        (ma, pa), (mb, pb) = _set_f1(*ya), _set_f1(*yb)
        present = ya[2] > 0
        micro_d[i] = mb - ma
        macro_d[i] = (pb[present].mean() - pa[present].mean()) if present.any() else 0.0
        class_d[i] = pb - pa
    lo, hi = (float(x) for x in np.percentile(micro_d, [2.5, 97.5]))
    mlo, mhi = (float(x) for x in np.percentile(macro_d, [2.5, 97.5]))
    class_lo, class_hi = np.percentile(class_d, [2.5, 97.5], axis=0)
    support = Y.sum(axis=0)
    new = set(map(str, new_labels))
    reasons: list[str] = []
    if hi < 0:
        reasons.append(
            f"micro-F1 is lower: {mi_b:.4f} vs {mi_a:.4f} (difference {mi_b - mi_a:+.4f}, 95% interval "
            f"[{lo:+.4f}, {hi:+.4f}] below zero)"
        )
    # a label neither the gate set nor either model's answers carry is left out
    shown = carried | A.any(axis=0) | B.any(axis=0)
    per_class = _per_label(
        [str(x) for x in labels], f_a, f_b, support, class_lo, class_hi, new, max_class_drop, reasons, shown
    )
    return {
        "passed": not reasons,
        "reasons": reasons,
        "metric": "micro_f1",
        "micro_f1": {"current": mi_a, "candidate": mi_b, "ci95": [lo, hi]},
        "macro_f1": {"current": ma_a, "candidate": ma_b, "ci95": [mlo, mhi]},
        "per_class": per_class,
        "n": int(n),
        "max_class_drop": max_class_drop,
    }
