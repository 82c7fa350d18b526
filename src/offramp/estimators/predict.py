"""Predictions as records: label, confidence, whether the model declined, and the top scores."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np

from offramp.estimators.base import TextClassifier
from offramp.estimators.multilabel import TfidfMultiLabel


def prediction_records(
    model: TextClassifier, texts: Sequence[str], top: int = 3, chunk: int = 4096
) -> Iterator[dict[str, Any]]:
    """One record per text, in order, predicted ``chunk`` texts at a time.

    Each record has ``text``, ``label`` (the reject label where a don't-know rule says so),
    ``confidence`` (the top probability), ``rejected`` and ``top`` (the ``top`` best labels).
    """
    k = min(top, len(model.classes_))
    multi = bool(getattr(model, "multi_label", False))
    for start in range(0, len(texts), chunk):
        part = list(texts[start : start + chunk])
        labels, proba = model.predict_and_proba(part)
        order = np.argsort(-proba, axis=1)[:, :k]
        sets = model.sets_from_proba(proba) if multi else None
        for j, t in enumerate(part):
            o = order[j]
            rec: dict[str, Any] = {
                "text": t,
                "label": str(labels[j]),
                "confidence": round(float(proba[j, o[0]]), 6),
                "rejected": bool(model.reject_threshold_ is not None and labels[j] != model.classes_[o[0]]),
                "top": [{"label": str(model.classes_[c]), "score": round(float(proba[j, c]), 6)} for c in o],
            }
            if sets is not None:  # every label over its threshold, and every label's probability
                rec["labels"] = sets[j]
                rec["scores"] = {str(c): round(float(p), 6) for c, p in zip(model.classes_, proba[j])}
            yield rec


# (labels, confidence, rejected, top class indices, top scores, label sets or None) of a batch
Predicted = tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray, Optional[list[list[str]]]]


def predict_arrays(model: TextClassifier, texts: list[str], top: int) -> Predicted:
    """(labels, confidence, rejected, top class indices, top scores, label sets or None) for
    ``texts``: compact to ship. The label sets are a multi-label model's predicted labels."""
    labels, proba = model.predict_and_proba(texts)
    k = min(top, len(model.classes_))
    order = np.argsort(-proba, axis=1)[:, :k]
    best = order[:, 0]
    conf = proba[np.arange(len(texts)), best]
    rejected = (
        np.array([lab != model.classes_[b] for lab, b in zip(labels, best)])
        if model.reject_threshold_ is not None
        else np.zeros(len(texts), dtype=bool)
    )
    sets = model.sets_from_proba(proba) if isinstance(model, TfidfMultiLabel) else None
    return [str(x) for x in labels], conf, rejected, order, np.take_along_axis(proba, order, axis=1), sets
