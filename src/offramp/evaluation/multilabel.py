"""A multi-label model on a labelled test file: the figures ``offramp eval --json`` prints."""

from __future__ import annotations

from typing import Any, Sequence

from offramp.models.multilabel import TfidfMultiLabel, confused_pairs, indicator, multilabel_metrics
from offramp.models.speed import measure_latency


def evaluate_multilabel(
    model: TfidfMultiLabel, texts: Sequence[str], sets: Sequence[Sequence[str]], *, latency: bool = True
) -> dict[str, Any]:
    """micro/macro/samples F1, subset accuracy, Hamming loss, per label, the most confused label
    pairs, labels the model does not know, and single-message latency."""
    classes = [str(c) for c in model.classes_]
    unknown = sorted({lab for s in sets for lab in s} - set(classes))
    Y = indicator(sets, classes)
    P = model.predict(list(texts))
    out = multilabel_metrics(Y, P, classes)
    out["confused_pairs"] = confused_pairs(Y, P, classes)
    out["multi_label"] = True
    out["label_sep"] = model.label_sep_
    out["model"] = model.family
    out["warnings"] = (
        [f"labels in the test file the model was not trained on (not scored): {', '.join(unknown[:10])}"]
        if unknown
        else []
    )
    if latency:
        with model.uncached():
            out["latency_ms"] = measure_latency(model.predict_one, list(texts)[:500], n=500, warmup=20, max_seconds=3.0)
    return out
