"""Quality, speed and cost of a classifier on a labelled test set."""

from __future__ import annotations

from collections import Counter
from typing import Sequence, TypedDict

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support


class Confusion(TypedDict, total=False):
    """Who was taken for whom: ``matrix`` (rows true, columns predicted, in ``labels``' order), or,
    for too many labels, ``matrix: None`` and the most frequent ``pairs`` ``[true, predicted, count]``."""

    labels: list[str]
    matrix: list[list[int]] | None
    pairs: list[tuple[str, str, int]]


class Metrics(TypedDict):
    n: int
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion: Confusion


def classification_metrics(
    y_true: Sequence[str] | np.ndarray, y_pred: Sequence[str] | np.ndarray, labels: Sequence[str] | None = None
) -> Metrics:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    ``labels`` fixes the order of classes; by default the sorted union of true and predicted labels.
    Predicted values outside ``labels`` are added after them, so the confusion matrix counts every
    message; macro-F1 is over the classes present in ``y_true`` either way.
    """
    truth = np.asarray(y_true, dtype=object).astype(str)
    pred = np.asarray(y_pred, dtype=object).astype(str)
    return _metrics(truth, pred, [str(x) for x in labels] if labels is not None else sorted(set(truth) | set(pred)))


def _metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> Metrics:
    # a prediction outside the label set (an LLM's "(none)") gets its own column: never dropped
    labels += sorted(set(y_pred) - set(labels))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    seen = set(y_true)
    present = [lab for lab in labels if lab in seen]
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        # macro over the classes present in the test set, as scikit-learn's default does
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
        if present
        else 0.0,
        "per_class": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)
        },
        "confusion": _confusion(y_true, y_pred, labels),
    }


MATRIX_LABELS = 200  # above this many labels the confusion is kept as its non-zero off-diagonal cells
CONFUSED_PAIRS = 1000  # ... the most frequent of them


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> Confusion:
    """The confusion matrix, or, for more than MATRIX_LABELS labels (a dense matrix of 10,000
    labels would be 10^8 cells), ``matrix: None`` and the most frequent confusions as
    ``pairs``: ``[true, predicted, count]``, most frequent first."""
    if len(labels) <= MATRIX_LABELS:
        return {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()}
    wrong = Counter((str(t), str(p)) for t, p in zip(y_true, y_pred) if t != p)
    ranked = sorted(wrong.items(), key=lambda kv: (-kv[1], kv[0]))[:CONFUSED_PAIRS]
    pairs = [(t, p, n) for (t, p), n in ranked]
    return {"labels": labels, "matrix": None, "pairs": pairs}
