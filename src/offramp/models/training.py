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
from offramp.errors import UsageError
from offramp.models.rejection import RejectTarget, fit_rejection
from offramp.models.selection import QUALITIES, Selection, candidates_for, select_model
from offramp.models.store import model_bytes, save_model


@dataclass
class TrainResult:
    model: object
    selection: Selection
    out: Path
    metrics: dict
    warnings: list[str]


DEFAULT_TIME_LIMITS = {"fast": 60.0, "balanced": 180.0, "best": 300.0}


def resolve_quality(quality: str | None) -> tuple[str, list[str]]:
    """The quality to use: 'auto' (None) means balanced when the encoder is installed, else fast."""
    from offramp.models import encoder

    if quality in (None, "auto"):
        if encoder.available():
            return "balanced", []
        return "fast", ["the sentence encoder is not installed, so only the fast tier was tried "
                        f"({encoder.INSTALL_HINT})"]
    if quality not in QUALITIES:
        raise UsageError(f"--quality must be one of auto, {', '.join(QUALITIES)}; got {quality!r}")
    if quality != "fast" and not encoder.available():
        raise encoder.EncoderUnavailable(f"--quality {quality} needs the sentence encoder, which is not installed",
                                         encoder.INSTALL_HINT)
    return quality, []


def _nearness_inputs(model, ds: Dataset, val: Dataset | None, oos_label: str | None, seed: int):
    """For models with sentence vectors: (vectors of in-scope training messages grouped by class,
    where each class's rows start, each held-out message's similarity to its nearest one);
    (None, None, None) for other models.

    Held out means the ``val`` file, or else each training message against the others (itself
    left out), matching the out-of-fold probabilities the threshold is fitted on.
    """
    from offramp.models.stacked import MAX_MEMORY, StackedLinear, nearest_similarity

    if not isinstance(model, StackedLinear):
        return None, None, None
    index = {str(c): i for i, c in enumerate(model.classes_)}
    cls = np.array([index[str(lab)] for lab in ds.labels])
    rows = np.nonzero(np.array([str(lab) != oos_label for lab in ds.labels]))[0]
    if not len(rows):
        return None, None, None
    if len(rows) > MAX_MEMORY:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_MEMORY, replace=False))
    rows = rows[np.argsort(cls[rows], kind="stable")]  # grouped by class
    offsets = np.searchsorted(cls[rows], np.arange(len(model.classes_) + 1))
    E = model.encoder_.encode(ds.texts)  # already in the embedding cache from the model search
    memory = E[rows].astype(np.float16).astype(np.float32)  # as the model directory will keep them
    if val is not None:
        return memory, offsets, nearest_similarity(model.encoder_.encode(val.texts), memory)
    exclude = np.full(len(E), -1)
    exclude[rows] = np.arange(len(rows))
    return memory, offsets, nearest_similarity(E, memory, exclude)


def train(ds: Dataset, out: str | os.PathLike, *, time_limit: float | None = None, seed: int = 0,
          quality: str | None = None, latency_budget_ms: float | None = None,
          reject_target: RejectTarget | None = None, oos_label: str | None = None, val: Dataset | None = None,
          on_progress: Callable[[str], None] | None = None) -> TrainResult:
    """Select, calibrate and save a model for ``ds`` into the directory ``out``.

    ``quality``: "fast" (TF-IDF only), "balanced" or "best" (adds sentence-embedding candidates),
    or None for balanced when the encoder is installed. ``time_limit`` defaults per quality
    (60 / 180 / 300 s). ``latency_budget_ms`` keeps candidates whose single-message p99 is larger
    from winning. ``reject_target`` fits a "don't know" threshold on ``val`` (or, without it, on the
    winner's out-of-fold predictions); ``oos_label`` names the out-of-scope label, which is also the
    answer when the model does not know (default ``UNKNOWN``).
    """
    if val is not None and reject_target is None:
        raise UsageError("--val is used to fit the rejection threshold; give --reject-target too",
                         "for example --reject-target in_scope_precision>=0.98")
    if oos_label and oos_label not in set(ds.labels) and (val is None or oos_label not in set(val.labels)):
        raise UsageError(f"--oos-label {oos_label!r} appears in neither the training nor the --val data")
    from offramp.models.store import check_output_dir

    check_output_dir(out)  # a bad --out is refused now, not after the search
    t0 = time.perf_counter()
    warnings = list(ds.warnings) + check_training_set(ds)
    quality, notes = resolve_quality(quality)
    warnings += notes
    if time_limit is None:
        time_limit = DEFAULT_TIME_LIMITS[quality]
    sel = select_model(ds.texts, ds.labels, candidates_for(quality, len(ds.texts), seed), time_limit=time_limit,
                       seed=seed, latency_budget_ms=latency_budget_ms, on_progress=on_progress)
    warnings += sel.notes
    rejection = None
    if reject_target is not None:
        if val is not None:
            proba, y_held, source = sel.model.predict_proba(val.texts), val.labels, f"held-out file {val.path}"
        else:
            proba, y_held, source = sel.oof_proba, ds.labels, "out-of-fold predictions on the training data"
        memory, offsets, familiarity = _nearness_inputs(sel.model, ds, val, oos_label, seed)
        rejection = fit_rejection(proba, sel.model.classes_, y_held, reject_target, oos_label, familiarity)
        rejection["source"] = source
        rejection["label"] = oos_label or "UNKNOWN"
        sel.model.reject_threshold_ = rejection["threshold"]
        sel.model.reject_label_ = rejection["label"]
        if rejection["familiarity_weight"]:
            sel.model.reject_familiarity_weight_ = rejection["familiarity_weight"]
            sel.model.memory_, sel.model.memory_offsets_ = memory, offsets
            rejection["memory_size"] = int(len(memory))
        if not rejection["met"]:
            warnings.append(f"the reject target {reject_target} was not reachable on the held-out data; "
                            "the model rejects everything below the highest confidence seen")
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
        "quality": quality,
        "latency_budget_ms": latency_budget_ms,
        "seed": seed,
        "train_seconds": train_seconds,
        "n_folds": sel.n_folds,
        "n_features": int(sel.model.coef_.shape[0]),
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
        "rejection": rejection,
    }
    # speed on (a sample of) the training texts, so `offramp cost --model-dir` has a measured figure
    sample = ds.texts[:2000]
    if on_progress:
        on_progress("measuring speed")
    with sel.model.uncached():
        metrics["latency_ms"] = measure_latency(sel.model.predict_one, sample, n=300, max_seconds=1.5)
        metrics["throughput_per_s"] = measure_throughput(sel.model.predict, sample, min_messages=2_000, min_seconds=0.5)
    fps = {"train_fingerprints": text_fingerprints(ds.texts, salt)}
    if on_progress:
        on_progress(f"writing {out}")
    save_model(sel.model, out, metrics=metrics, card=render_card(info, metrics), info=info, extra_arrays=fps)
    metrics["model_bytes"] = model_bytes(out)
    save_model(sel.model, out, metrics=metrics, card=render_card(info, metrics), info=info, extra_arrays=fps)
    return TrainResult(sel.model, sel, Path(out), metrics, warnings)
