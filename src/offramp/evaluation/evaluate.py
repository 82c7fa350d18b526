"""Evaluate a model on labelled texts: the library behind ``offramp eval`` and :func:`offramp.evaluate`."""

from __future__ import annotations

import os

import numpy as np

from offramp.costs.calculator import load_prices, local_usd_per_message
from offramp.data.io import Dataset
from offramp.data.validate import check_test_set
from offramp.errors import DataError
from offramp.estimators.base import TextClassifier, as_labels, as_texts
from offramp.estimators.calibration import ece_of, reliability_of
from offramp.estimators.rejection import Rejection
from offramp.evaluation.llm import score_llm_predictions
from offramp.evaluation.results import EvalReport, metrics_report
from offramp.training.speed import measure_latency, measure_throughput
from offramp.types import Labels, Texts


def evaluate(
    model: TextClassifier,
    texts: Texts | Dataset,
    labels: Labels | None = None,
    *,
    llm_predictions: str | os.PathLike[str] | None = None,
    speed: bool = True,
    cpu_usd_per_hour: float | None = None,
) -> EvalReport:
    """Quality, calibration, speed, size and cost of ``model`` on labelled texts.

    Parameters
    ----------
    model : a fitted offramp model (from :func:`offramp.train` or :func:`offramp.load`).
    texts, labels : the test data, or a :class:`~offramp.data.io.Dataset` as ``texts`` alone.
    llm_predictions : a file of an LLM's predictions on the same texts (columns ``text`` and
        ``prediction``); scored the same way into ``report.llm``.
    speed : measure single-message latency (in process) and batch throughput.
    cpu_usd_per_hour : the CPU price the cost per million messages uses (default: the price table's).

    Example
    -------
    >>> from offramp import evaluate, train
    >>> texts = ["reset my pin", "thanks a lot", "how do I reset the pin", "thank you!"] * 5
    >>> labels = ["SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE"] * 5
    >>> model, _ = train(texts, labels, quality="fast", time_limit=None)
    >>> evaluate(model, ["pin reset", "thanks!"], ["SUPPORT", "GRATITUDE"], speed=False).accuracy
    1.0
    """
    if isinstance(texts, Dataset):
        ds = texts
    else:
        t = as_texts(texts)
        ds = Dataset(t, list(as_labels(labels, len(t))), "<memory>", rows_read=len(t))
    if not ds.texts:
        raise DataError("nothing to evaluate: the test data has no rows")
    if ds.labels is None:
        raise DataError(f"{ds.path}: the test data has no labels", "evaluate on a file with a label column")
    record = model.training_record_ or {}
    info, trained, arrays = record.get("info") or {}, record.get("metrics") or {}, record.get("arrays") or {}
    salt = bytes.fromhex(info["fingerprint_salt"]) if info.get("fingerprint_salt") else None
    warnings = list(ds.warnings) + check_test_set(ds, model.classes_, arrays.get("train_fingerprints"), salt)
    pred, conf, top = _predict_blocks(model, ds.texts)  # the reject label where the model does not know
    order = [str(c) for c in model.classes_]
    order += sorted((set(ds.labels or []) | set(pred)) - set(order))
    report = metrics_report(
        ds.labels,
        pred,
        order,
        model=info.get("winner") or model.family,
        model_bytes=trained.get("model_bytes"),
        train_seconds=trained.get("train_seconds"),
        rejection=Rejection.from_dict(trained["rejection"]) if trained.get("rejection") else None,
        data=str(ds.path),
        model_dir=record.get("source"),
    )
    report.predictions = [str(p) for p in pred]
    report.confidences = [float(c) for c in conf]
    index = {c: i for i, c in enumerate(model.classes_)}
    known = np.array([lab in index for lab in ds.labels or []], dtype=bool)
    if known.any():
        y = np.array([index[lab] for lab, k in zip(ds.labels or [], known) if k])
        correct = (top[known] == y).astype(np.float64)
        report.ece = ece_of(conf[known], correct)
        report.reliability = reliability_of(conf[known], correct)
    if speed:
        with model.uncached():  # speed on texts as if new: no cached sentence vectors
            report.latency_ms = measure_latency(model.predict_one, ds.texts)
            report.throughput_per_s = measure_throughput(model.predict, ds.texts)
        cpu = cpu_usd_per_hour if cpu_usd_per_hour is not None else load_prices()["local_model"]["cpu_usd_per_hour"]
        report.cost_per_million_usd = local_usd_per_message(cpu, report.throughput_per_s) * 1e6
    report.warnings = warnings
    if llm_predictions is not None:
        report.llm = score_llm_predictions(llm_predictions, ds, report.labels)
    return report


_PROBA_CELLS = 8_000_000  # (message, label) probabilities held at once while evaluating


def _predict_blocks(model: TextClassifier, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, confidence, index of the most probable label) per message, predicted in blocks of
    rows so that a model of thousands of labels never holds a messages x labels matrix at once."""
    block = max(256, _PROBA_CELLS // max(1, len(model.classes_)))
    preds, confs, tops = [], [], []
    for a in range(0, len(texts), block):
        pred, proba = model.predict_and_proba(texts[a : a + block])
        preds.append(np.asarray(pred))
        confs.append(proba.max(axis=1))
        tops.append(proba.argmax(axis=1))
    return np.concatenate(preds), np.concatenate(confs), np.concatenate(tops)
