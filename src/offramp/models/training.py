"""Train a model from a dataset and write its directory: the library behind ``offramp train``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from offramp.data.io import Dataset
from offramp.data.validate import check_training_set, text_fingerprints
from offramp.evaluation.metrics import measure_latency, measure_throughput
from offramp.models.card import render_card
from offramp.models.selection import Selection, fast_candidates, select_model
from offramp.models.store import model_bytes, save_model


@dataclass
class TrainResult:
    model: object
    selection: Selection
    out: Path
    metrics: dict
    warnings: list[str]


def train(ds: Dataset, out: str | os.PathLike, *, time_limit: float = 60.0, seed: int = 0,
          on_progress: Callable[[str], None] | None = None) -> TrainResult:
    """Select, calibrate and save a model for ``ds`` into the directory ``out``."""
    t0 = time.perf_counter()
    warnings = list(ds.warnings) + check_training_set(ds)
    sel = select_model(ds.texts, ds.labels, fast_candidates(len(ds.texts), seed), time_limit=time_limit,
                       seed=seed, on_progress=on_progress)
    train_seconds = time.perf_counter() - t0
    best = next(r for r in sel.results if r.name == sel.winner)
    classes, counts = np.unique(np.asarray(ds.labels, dtype=object).astype(str), return_counts=True)
    salt = os.urandom(16)
    from offramp import __version__

    info = {
        "winner": sel.winner,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "offramp_version": __version__,
        "time_limit": time_limit,
        "seed": seed,
        "train_seconds": train_seconds,
        "n_folds": sel.n_folds,
        "n_features": int(sel.model.featurizer_.n_features_),
        "candidates": [r.as_dict() for r in sel.results],
        "fingerprint_salt": salt.hex(),
        "data": {
            "path": ds.path,
            "rows_read": ds.rows_read,
            "n": len(ds.texts),
            "mean_chars": float(np.mean([len(t) for t in ds.texts])),
            "class_counts": {str(c): int(n) for c, n in zip(classes, counts)},
            "warnings": warnings,
        },
    }
    metrics = {
        "cv_macro_f1": best.cv_macro_f1,
        "cv_accuracy": best.cv_accuracy,
        "ece_uncalibrated": sel.ece_before,
        "ece_calibrated": sel.ece_after,
        "temperature": float(sel.model.temperature_),
        "train_seconds": train_seconds,
        "n_train": len(ds.texts),
        "classes": [str(c) for c in classes],
    }
    # speed on (a sample of) the training texts, so `offramp cost --model-dir` has a measured figure
    sample = ds.texts[:2000]
    if on_progress:
        on_progress("measuring speed")
    metrics["latency_ms"] = measure_latency(sel.model.predict_one, sample, n=500)
    metrics["throughput_per_s"] = measure_throughput(sel.model.predict, sample, min_messages=10_000, min_seconds=0.5)
    fps = {"train_fingerprints": text_fingerprints(ds.texts, salt)}
    if on_progress:
        on_progress(f"writing {out}")
    save_model(sel.model, out, metrics=metrics, card=render_card(info, metrics), info=info, extra_arrays=fps)
    metrics["model_bytes"] = model_bytes(out)
    save_model(sel.model, out, metrics=metrics, card=render_card(info, metrics), info=info, extra_arrays=fps)
    return TrainResult(sel.model, sel, Path(out), metrics, warnings)
