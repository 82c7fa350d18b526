"""A multi-label model on a labelled test file: the figures ``offramp eval --json`` prints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from offramp.data.io import cell_value
from offramp.data.text import normalize
from offramp.errors import DataError
from offramp.estimators.multilabel import (
    TfidfMultiLabel,
    confused_pairs,
    indicator,
    multilabel_metrics,
)
from offramp.evaluation.llm import read_predictions
from offramp.evaluation.results import LLMComparison, MultiLabelEvaluation
from offramp.training.speed import measure_latency


def evaluate_multilabel(
    model: TfidfMultiLabel, texts: Sequence[str], sets: Sequence[Sequence[str]], *, latency: bool = True
) -> MultiLabelEvaluation:
    """micro/macro/samples F1, subset accuracy, Hamming loss, per label, the most confused label
    pairs, labels the model does not know, and single-message latency."""
    classes = [str(c) for c in model.classes_]
    unknown = sorted({lab for s in sets for lab in s} - set(classes))
    Y = indicator(sets, classes)
    P = model.predict(list(texts))
    out = MultiLabelEvaluation(**multilabel_metrics(Y, P, classes))
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


def _prediction_set(cell: object, sep: str) -> list[str]:
    """An LLM's multi-label prediction cell: a JSON list, or labels joined by ``sep``."""
    if isinstance(cell, (list, tuple)):
        return sorted({str(x).strip() for x in cell if str(x).strip()})
    text = cell_value(cell) or ""
    if text.startswith("["):
        try:
            items = json.loads(text)
            if isinstance(items, list):
                return sorted({str(x).strip() for x in items if str(x).strip()})
        except ValueError:
            pass
    return sorted({x.strip() for x in text.split(sep) if x.strip()})


def compare_with_llm(
    model: TfidfMultiLabel, path: str | os.PathLike[str], texts: Sequence[str], sets: Sequence[Sequence[str]]
) -> LLMComparison:
    """The LLM's multi-label predictions in ``path`` (columns ``text`` and ``prediction``: labels
    joined by the model's separator, or a JSON list) beside the model's, scored on the test rows
    both cover."""
    by_text = {t: row.get("prediction") for t, row in read_predictions(path).items()}
    rows = [i for i, t in enumerate(texts) if normalize(t) in by_text]
    if not rows:
        raise DataError(
            f"none of the texts in {path} match the test set", "the LLM predictions must be made on the same test texts"
        )
    classes = [str(c) for c in model.classes_]
    llm_sets = [_prediction_set(by_text[normalize(texts[i])], model.label_sep_) for i in rows]
    outside = sorted({lab for s in llm_sets for lab in s} - set(classes))
    Y = indicator([sets[i] for i in rows], classes)
    small = multilabel_metrics(Y, model.predict([texts[i] for i in rows]), classes)
    llm = multilabel_metrics(Y, indicator(llm_sets, classes), classes)
    return {
        "n": len(rows),
        "missing": len(texts) - len(rows),
        "small": small,
        "llm": llm,
        "llm_labels_outside": outside,
    }


def evaluate_multilabel_file(
    model: TfidfMultiLabel,
    data: str | os.PathLike[str],
    *,
    text_col: str = "text",
    label_col: str = "label",
    max_chars: int | None = None,
    latency: bool = True,
) -> MultiLabelEvaluation:
    """:func:`evaluate_multilabel` on a labelled file (labels joined by the model's separator, or
    JSON lists); what the file reading noted is added to ``warnings``."""
    from offramp.data.multilabel import read_label_sets

    ds, sets, notes = read_label_sets(data, text_col, label_col, model.label_sep_, max_chars)
    res = evaluate_multilabel(model, ds.texts, sets, latency=latency)
    res["warnings"] = [*ds.warnings, *notes, *res.get("warnings", [])]
    return res


def build_multilabel_report(
    model: TfidfMultiLabel,
    model_dir: str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    llm_predictions: str | os.PathLike[str] | None = None,
    text_col: str = "text",
    label_col: str = "label",
) -> tuple[Path, Path, MultiLabelEvaluation, LLMComparison | None]:
    """The report of a multi-label model on a labelled file, beside an LLM's predictions when
    given: (HTML path, Markdown path, the model's figures, the comparison with the LLM or None)."""
    from offramp.data.multilabel import read_label_sets
    from offramp.errors import UsageError
    from offramp.evaluation.report import write_multilabel_report

    if Path(out).is_dir():
        raise UsageError(f"{out} is a directory", "give a file name such as report.html", param="out")
    res = evaluate_multilabel_file(model, data, text_col=text_col, label_col=label_col)
    llm = None
    if llm_predictions is not None:
        ds, sets, _ = read_label_sets(data, text_col, label_col, model.label_sep_)
        llm = compare_with_llm(model, llm_predictions, ds.texts, sets)
        if llm["llm_labels_outside"]:
            res.setdefault("warnings", []).append(
                "the LLM named labels the model does not have (not scored): " + ", ".join(llm["llm_labels_outside"])
            )
    co = ((model.training_record_ or {}).get("info") or {}).get("cooccurrence", [])
    html_path, md_path = write_multilabel_report(Path(out), res, model_dir, str(data), co, llm=llm)
    return html_path, md_path, res, llm
