"""An LLM's predictions on the same test set, scored like the small model.

The file is CSV, TSV, JSONL or Parquet with a ``text`` column and a ``prediction`` column, and
optionally ``latency_ms``, ``prompt_tokens``, ``completion_tokens`` and ``model``. Rows are matched
to the test set by text, so the order does not matter; test rows the file lacks are counted.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from offramp.costs.calculator import load_prices
from offramp.data.io import Dataset, cell_value, read_records
from offramp.errors import DataError
from offramp.evaluation.metrics import classification_metrics
from offramp.models.features import normalize


def score_llm_predictions(path: str | os.PathLike, test: Dataset, labels: list[str] | None = None,
                          price_model: str | None = None) -> dict:
    """Metrics of the LLM predictions in ``path`` on the rows of ``test`` they cover."""
    columns, records = read_records(path)
    for col in ("text", "prediction"):
        if col not in columns:
            raise DataError(f"{path} has no column {col!r}; its columns are: {', '.join(map(str, columns))}",
                            "LLM predictions need 'text' and 'prediction' columns")
    by_text: dict[str, dict] = {}
    for rec in records:
        t = cell_value(rec.get("text"))
        if t is not None:
            by_text[normalize(t)] = rec
    y_true, y_pred, lat, tin, tout = [], [], [], [], []
    missing = 0
    for text, label in zip(test.texts, test.labels):
        rec = by_text.get(normalize(text))
        if rec is None:
            missing += 1
            continue
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
        raise DataError(f"none of the texts in {path} match the test set {test.path}",
                        "the LLM predictions must be made on the same test texts")
    out = classification_metrics(y_true, y_pred, labels)
    models = Counter(cell_value(r.get("model")) for r in records if cell_value(r.get("model")))
    out["model"] = models.most_common(1)[0][0] if models else "LLM"
    out["warnings"] = []
    if missing:
        out["warnings"].append(f"{missing} of {len(test.texts)} test texts have no LLM prediction; "
                               "the LLM column scores the rest")
    unlabelled = sum(1 for p in y_pred if p == "(none)")
    if unlabelled:
        out["warnings"].append(f"{unlabelled} LLM answers were outside the label set; they count as errors")
    if lat:
        ms = np.asarray(lat)
        out["latency_ms"] = {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                             "p99": float(np.percentile(ms, 99)), "n": len(lat)}
    prices = load_prices()["models"]
    pm = price_model or out["model"]
    if tin and pm in prices:
        per = (np.mean(tin) * prices[pm]["input"] + (np.mean(tout) if tout else 0.0) * prices[pm]["output"]) / 1e6
        out["cost_per_million_usd"] = per * 1e6
        out["cost_basis"] = f"measured tokens at {pm} prices"
    return out


def run_llm_eval(ds: Dataset, spec, labeller, *, llm: str, price_model: str | None = None,
                 send_chars: int = 20_000, workers: int = 4, on_progress=None) -> tuple[dict, list[dict]]:
    """Ask the LLM about every text of ``ds``; (metrics like ``offramp eval``, prediction rows).

    Texts longer than ``send_chars`` are cut for the LLM only; rows keep the whole text, so they
    match the test set. Rows carry the model, the date and the system prompt.
    """
    from datetime import date

    from offramp.teacher.label import label_texts

    run = label_texts(labeller, [t[:send_chars] for t in ds.texts], workers=workers,
                      price_model=price_model or llm, on_progress=on_progress)
    preds = [o.label or "(none)" for o in run.outcomes]
    res = classification_metrics(ds.labels, preds, list(spec.labels) + sorted(set(ds.labels) - set(spec.labels)))
    lat = [o.latency_ms for o in run.outcomes if o.latency_ms is not None]
    if lat:
        res["latency_ms"] = {q: float(np.percentile(lat, int(q[1:]))) for q in ("p50", "p95", "p99")}
    tin = [o.usage.get("prompt_tokens") or 0 for o in run.outcomes]
    tout = [o.usage.get("completion_tokens") or 0 for o in run.outcomes]
    price = load_prices()["models"].get(price_model or llm)
    res["cost_per_million_usd"] = ((np.mean(tin) * price["input"] + np.mean(tout) * price["output"])
                                   if price and any(tin) else None)
    res.update({"model": llm, "unlabelled": preds.count("(none)"), "calls": run.calls, "cache_hits": run.cache_hits})
    today, prompt = date.today().isoformat(), spec.system_prompt()
    rows = [{"text": text, "prediction": o.label or "", "model": llm, "latency_ms": o.latency_ms,
             "confidence": o.confidence, "raw": "" if o.label else o.raw, "prompt_tokens": o.usage.get("prompt_tokens"),
             "completion_tokens": o.usage.get("completion_tokens"), "date": today,
             "sent_chars": min(len(text), send_chars), "system_prompt": prompt}
            for text, o in zip(ds.texts, run.outcomes)]
    return res, rows
