"""An LLM's predictions on the same test set, scored like the small model.

The file is CSV, TSV, JSONL or Parquet with a ``text`` column and a ``prediction`` column, and
optionally ``latency_ms``, ``prompt_tokens``, ``completion_tokens`` and ``model``. Rows are matched
to the test set by text, so the order does not matter; test rows the file lacks are counted.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import date
from typing import Any, Callable

import numpy as np

from offramp.costs.calculator import api_usd_per_message, load_prices
from offramp.data.io import Dataset, cell_value, read_records
from offramp.data.text import normalize
from offramp.errors import DataError
from offramp.evaluation.results import EvalReport, metrics_report
from offramp.llm.label import Labeller, TaskSpec, label_texts
from offramp.training.speed import latency_summary


def _cost_per_million(price_model: str | None, tokens_in: list[float], tokens_out: list[float]) -> float | None:
    """Dollars per million messages at the mean measured tokens, or None without a price or tokens."""
    price = load_prices()["models"].get(price_model or "")
    if price is None or not any(tokens_in):
        return None
    return (
        api_usd_per_message(price, float(np.mean(tokens_in)), float(np.mean(tokens_out)) if tokens_out else 0.0) * 1e6
    )


def read_predictions(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """An LLM predictions file's rows (columns ``text`` and ``prediction``) by normalised text."""
    columns, records = read_records(path)
    for col in ("text", "prediction"):
        if col not in columns:
            raise DataError(
                f"{path} has no column {col!r}; its columns are: {', '.join(map(str, columns))}",
                "LLM predictions need 'text' and 'prediction' columns",
            )
    by_text: dict[str, dict[str, Any]] = {}
    for row in records:
        t = cell_value(row.get("text"))
        if t is not None:
            by_text[normalize(t)] = row
    return by_text


def score_llm_predictions(
    path: str | os.PathLike[str], test: Dataset, labels: list[str] | None = None, price_model: str | None = None
) -> EvalReport:
    """Metrics of the LLM predictions in ``path`` on the rows of ``test`` they cover."""
    by_text = read_predictions(path)
    y_true: list[str] = []
    y_pred: list[str] = []
    lat: list[float] = []
    tin: list[float] = []
    tout: list[float] = []
    missing = 0
    aligned: list[str | None] = []
    for text, label in zip(test.texts, test.labels or []):
        rec = by_text.get(normalize(text))
        if rec is None:
            missing += 1
            aligned.append(None)
            continue
        aligned.append(cell_value(rec.get("prediction")) or "(none)")
        y_true.append(label)
        y_pred.append(cell_value(rec.get("prediction")) or "(none)")
        for key, acc in (("latency_ms", lat), ("prompt_tokens", tin), ("completion_tokens", tout)):
            v = rec.get(key)
            try:
                if v not in (None, ""):
                    acc.append(float(v))
            except (TypeError, ValueError):
                pass
    if not y_true:
        raise DataError(
            f"none of the texts in {path} match the test set {test.path}",
            "the LLM predictions must be made on the same test texts",
        )
    models = Counter(cell_value(r.get("model")) for r in by_text.values() if cell_value(r.get("model")))
    name = models.most_common(1)[0][0] if models else "LLM"
    out = metrics_report(y_true, y_pred, labels, model=name, data=str(path))
    out.predictions = aligned
    if missing:
        out.warnings.append(
            f"{missing} of {len(test.texts)} test texts have no LLM prediction; the LLM column scores the rest"
        )
    unlabelled = sum(1 for p in y_pred if p == "(none)")
    if unlabelled:
        out.warnings.append(f"{unlabelled} LLM answers were outside the label set; they count as errors")
    if lat:
        out.latency_ms = latency_summary(lat)
    pm = price_model or name
    out.cost_per_million_usd = _cost_per_million(pm, tin, tout)
    if out.cost_per_million_usd is not None:
        out.cost_basis = f"measured tokens at {pm} prices"
    return out


def run_llm_eval(
    ds: Dataset,
    spec: TaskSpec,
    labeller: Labeller,
    *,
    llm: str,
    price_model: str | None = None,
    send_chars: int = 20_000,
    workers: int = 4,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[EvalReport, list[dict[str, Any]]]:
    """Ask the LLM about every text of ``ds``; (metrics like ``offramp eval``, prediction rows).

    Texts longer than ``send_chars`` are cut for the LLM only; rows keep the whole text, so they
    match the test set. Rows carry the model, the date and the system prompt.
    """
    run = label_texts(
        labeller,
        [t[:send_chars] for t in ds.texts],
        workers=workers,
        price_model=price_model or llm,
        on_progress=on_progress,
    )
    preds = [o.label or "(none)" for o in run.outcomes]
    gold = list(ds.labels or [])
    res = metrics_report(
        gold, preds, list(spec.labels) + sorted(set(gold) - set(spec.labels)), model=llm, data=str(ds.path)
    )
    lat = [o.latency_ms for o in run.outcomes if o.latency_ms is not None]
    if lat:
        res.latency_ms = latency_summary(lat)
    tin = [float(o.usage.get("prompt_tokens") or 0) for o in run.outcomes]
    tout = [float(o.usage.get("completion_tokens") or 0) for o in run.outcomes]
    res.cost_per_million_usd = _cost_per_million(price_model or llm, tin, tout)
    res.details = {"unlabelled": preds.count("(none)"), "calls": run.calls, "cache_hits": run.cache_hits}
    today, prompt = date.today().isoformat(), spec.system_prompt()
    shots = json.dumps(spec.examples, ensure_ascii=False) if spec.examples else ""
    rows = [
        {
            "text": text,
            "prediction": o.label or "",
            "model": llm,
            "latency_ms": o.latency_ms,
            "confidence": o.confidence,
            "raw": "" if o.label is not None else o.raw,
            "prompt_tokens": o.usage.get("prompt_tokens"),
            "completion_tokens": o.usage.get("completion_tokens"),
            "date": today,
            "sent_chars": min(len(text), send_chars),
            "system_prompt": prompt,
            "few_shot": shots,
        }
        for text, o in zip(ds.texts, run.outcomes)
    ]
    return res, rows


def evaluate_llm(
    data: Dataset | str | os.PathLike[str],
    *,
    task: TaskSpec | str | os.PathLike[str],
    llm: str,
    base_url: str,
    out: str | os.PathLike[str] | None = None,
    text_col: str = "text",
    label_col: str = "label",
    api_key_env: str | None = "OPENAI_API_KEY",
    concurrency: int = 4,
    timeout_s: float = 60.0,
    price_model: str | None = None,
    cache: str | os.PathLike[str] | None = None,
    logprobs: bool = True,
    send_chars: int = 20_000,
    examples_from: str | os.PathLike[str] | None = None,
    examples_per_label: int = 4,
    raw: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Measure an LLM on a labelled test set: the same metrics as :func:`offramp.evaluate`, the cost
    from the usage the server reports. ``out`` keeps its predictions (.jsonl, .csv or .tsv) for
    :func:`~offramp.evaluation.report.write_report`'s ``llm_predictions``; texts longer than
    ``send_chars`` are cut for the LLM only (they are scored whole)."""
    from pathlib import Path

    from offramp.data.io import read_dataset, write_records
    from offramp.llm.label import make_labeller, with_examples

    spec = task if isinstance(task, TaskSpec) else TaskSpec.load(Path(task))
    ds = data if isinstance(data, Dataset) else read_dataset(data, text_col=text_col, label_col=label_col)
    spec, notes = with_examples(spec, examples_from, examples_per_label, ds.texts)
    if out is not None and Path(out).suffix.lower() not in (".jsonl", ".csv", ".tsv"):
        raise DataError(f"{out} must end in .jsonl, .csv or .tsv", param="out")
    labeller = make_labeller(
        spec,
        llm,
        base_url,
        api_key_env=api_key_env,
        timeout_s=timeout_s,
        concurrency=concurrency,
        cache=Path(cache) if cache is not None else None,
        logprobs=logprobs,
    )
    cut = sum(1 for t in ds.texts if len(t) > send_chars)
    res, rows = run_llm_eval(
        ds, spec, labeller, llm=llm, price_model=price_model, send_chars=send_chars, workers=concurrency,
        on_progress=on_progress,
    )  # fmt: skip
    if cut:
        notes.append(f"{cut} texts are longer than {send_chars} characters: the LLM saw their first {send_chars}")
    res.warnings[:0] = list(ds.warnings) + notes
    if out is not None:
        write_records(out, rows, param="out", spreadsheet_safe=not raw)
    return res
