"""Evaluate a saved model on a labelled file: the library behind ``offramp eval``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from offramp.costs.calculator import load_prices
from offramp.data.io import Dataset
from offramp.data.validate import check_test_set
from offramp.evaluation.metrics import classification_metrics, measure_latency, measure_throughput
from offramp.models.calibration import expected_calibration_error, reliability_bins
from offramp.models.store import model_bytes, read_extra_array, read_metrics, read_model_json


def evaluate_model(model, model_dir: str | os.PathLike, ds: Dataset, *, speed: bool = True,
                   cpu_usd_per_hour: float | None = None) -> dict:
    """Quality, calibration, speed, size and cost of ``model`` on ``ds``.

    ``latency_ms`` is single-message prediction in process; ``throughput_per_s`` is batch prediction;
    ``cost_per_million_usd`` spreads a CPU's hourly price (price table, or ``cpu_usd_per_hour``) over
    the measured throughput.
    """
    doc = read_model_json(model_dir)
    info = doc.get("info", {})
    salt = bytes.fromhex(info["fingerprint_salt"]) if info.get("fingerprint_salt") else None
    warnings = list(ds.warnings) + check_test_set(ds, model.classes_, read_extra_array(model_dir, "train_fingerprints"), salt)
    pred, proba = model.predict_and_proba(ds.texts)  # the reject label where the model does not know
    labels = list(model.classes_)
    labels += sorted((set(ds.labels) | set(pred)) - set(labels))
    out = classification_metrics(ds.labels, pred, labels)
    index = {c: i for i, c in enumerate(model.classes_)}
    known = np.array([lab in index for lab in ds.labels])
    if known.any():
        y = np.array([index[lab] for lab, k in zip(ds.labels, known) if k])
        out["ece"] = expected_calibration_error(proba[known], y)
        out["reliability"] = reliability_bins(proba[known], y)
    trained = read_metrics(model_dir)
    out["model"] = info.get("winner", doc.get("family"))
    out["model_bytes"] = model_bytes(model_dir)
    out["train_seconds"] = trained.get("train_seconds")
    out["rejection"] = trained.get("rejection")
    if speed:
        with model.uncached():  # speed on texts as if new: no cached sentence vectors
            out["latency_ms"] = measure_latency(model.predict_one, ds.texts)
            out["throughput_per_s"] = measure_throughput(model.predict, ds.texts)
        cpu = cpu_usd_per_hour if cpu_usd_per_hour is not None else load_prices()["local_model"]["cpu_usd_per_hour"]
        out["cost_per_million_usd"] = cpu / 3600 / out["throughput_per_s"] * 1e6
    out["warnings"] = warnings
    out["data"] = str(ds.path)
    out["model_dir"] = str(Path(model_dir))
    return out
