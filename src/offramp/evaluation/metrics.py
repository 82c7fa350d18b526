"""Quality, speed and cost of a classifier on a labelled test set."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    ``labels`` fixes the order of classes; by default the sorted union of true and predicted labels.
    Predicted values outside ``labels`` are added after them, so the confusion matrix counts every
    message; macro-F1 is over the classes present in ``y_true`` either way.
    """
    y_true = np.asarray(y_true, dtype=object).astype(str)
    y_pred = np.asarray(y_pred, dtype=object).astype(str)
    if labels is None:
        labels = sorted(set(y_true) | set(y_pred))
    labels = [str(x) for x in labels]
    # a prediction outside the label set (an LLM's "(none)") gets its own column: never dropped
    labels += sorted(set(y_pred) - set(labels))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = [lab for lab in labels if lab in set(y_true)]
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        # macro over the classes present in the test set, as scikit-learn's default does
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)) if present else 0.0,
        "per_class": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)
        },
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


def measure_latency(predict_one, texts: Sequence[str], n: int = 1000, warmup: int = 20,
                    max_seconds: float = 2.0) -> dict:
    """Milliseconds per single message, one at a time, in process: p50, p95, p99.

    Stops after ``n`` messages or ``max_seconds`` (with at least 100 measured), whichever is first.
    """
    if not texts:
        return {"p50": None, "p95": None, "p99": None, "n": 0}
    sample = [texts[i % len(texts)] for i in range(max(n, 1))]
    for t in sample[:warmup]:
        predict_one(t)
    times = []
    start = time.perf_counter()
    for t in sample:
        t0 = time.perf_counter()
        predict_one(t)
        times.append(time.perf_counter() - t0)
        if len(times) >= 100 and t0 - start > max_seconds:
            break
    ms = np.asarray(times) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "n": int(len(ms))}


def measure_throughput(predict_batch, texts: Sequence[str], min_messages: int = 20_000, min_seconds: float = 1.0) -> float:
    """Messages per second for batch prediction over the texts (repeated to a measurable size).

    A probe on a few hundred texts sizes the measured batch: about ``min_seconds`` of work, at most
    ``min_messages`` messages, so a slow model is not kept busy for minutes.
    """
    if not texts:
        return 0.0
    texts = list(texts)
    probe = (texts * (-(-256 // len(texts))))[:256]
    t0 = time.perf_counter()
    predict_batch(probe)
    rate = len(probe) / max(time.perf_counter() - t0, 1e-9)
    n = int(min(max(rate * min_seconds, 256), min_messages))
    batch = (texts * (-(-n // len(texts))))[:n]
    done, t0 = 0, time.perf_counter()
    while True:
        predict_batch(batch)
        done += len(batch)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds or len(batch) < n:
            return done / elapsed
