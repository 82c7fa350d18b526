"""Train a model from texts and labels: the library behind ``offramp train`` and :func:`offramp.train`."""

from __future__ import annotations

import os
import time
import warnings
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, Union

import numpy as np

from offramp.data.io import Dataset
from offramp.data.validate import check_training_set, text_fingerprints
from offramp.encoders import sentence as encoder
from offramp.errors import UsageError
from offramp.estimators.base import TextClassifier, as_labels, as_texts
from offramp.estimators.centroid import MANY_LABELS, train_many_labels
from offramp.estimators.features import NgramFeaturizer
from offramp.estimators.rejection import Rejection, RejectTarget, fit_rejection
from offramp.estimators.stacked import MAX_MEMORY, StackedLinear, nearest_similarity
from offramp.estimators.tfidf import TfidfLinear
from offramp.training.large import LARGE_ROWS, SEARCH_ROWS, refit_streaming, stratified_sample
from offramp.training.report import EncoderUse, RegistryEntry, TrainReport
from offramp.training.search import Candidate, CandidateResult, candidates_for, resolve_quality, select_model
from offramp.training.speed import latency_summary, measure_latency, measure_throughput
from offramp.types import Labels, Texts
from offramp.version import __version__

# best: 30 minutes, so that the mpnet encoder (when installed) fits: it reads about 15-20 short
# messages a second on two cores, 15 minutes for Banking77's 13,083 texts
DEFAULT_TIME_LIMITS = {"fast": 60.0, "balanced": 180.0, "best": 1800.0}


if TYPE_CHECKING:
    from offramp.registry.versions import Registry
    from offramp.training.multilabel import MultiLabelReport

# training data: texts (with labels), a Dataset, or the path of a data file
DataLike = Union[Texts, Dataset, str, "os.PathLike[str]"]

PILOT_ROWS = 5_000  # rows the first candidate is timed on, to size the search's sample


def _search_size(texts: list[str], y: np.ndarray, first: Candidate, limit: float | None, seed: int) -> int:
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


def choice_rule(quality: str | None, max_quality_loss: float | None = None) -> str:
    """How the search picks among its candidates: ``best`` (highest score) for a named quality,
    ``cheapest`` within the score's error for ``auto`` or when a quality loss is allowed."""
    if quality == "best":
        if max_quality_loss is not None:
            raise UsageError(
                "--quality best keeps the most accurate candidate; a max quality loss does not apply",
                "leave one of them out (--quality auto takes the cheapest within the loss)",
                param="max_quality_loss",
            )
        return "best"
    return "cheapest" if quality in (None, "auto") or max_quality_loss is not None else "best"


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
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
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
    rejection: Rejection,
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
    if isinstance(refit, StackedLinear) and rejection.familiarity_weight:
        memory, offsets, _ = _nearness_inputs(refit, all_texts, all_y, None, oos_label, seed, with_familiarity=False)
        refit.reject_familiarity_weight_ = rejection.familiarity_weight
        refit.memory_, refit.memory_offsets_ = memory, offsets
        rejection.memory_size = int(len(memory)) if memory is not None else 0
    rejection.refit_with_val = len(keep)
    return refit, [val.texts[i] for i in keep]


def _as_dataset(data: Dataset | tuple[Texts, Labels | None] | None, what: str) -> Dataset | None:
    if data is None or isinstance(data, Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        texts = as_texts(data[0])
        return Dataset(texts, list(as_labels(data[1], len(texts))), what, rows_read=len(texts))
    raise UsageError(f"{what} must be a (texts, labels) pair")


def _train_single(
    texts: Texts | Dataset,
    labels: Labels | None = None,
    *,
    quality: str = "auto",
    time_limit: float | str | None = "auto",
    seed: int = 0,
    val: Dataset | tuple[Texts, Labels] | None = None,
    oos_label: str | None = None,
    reject_target: RejectTarget | str | None = None,
    latency_budget_ms: float | None = None,
    on_progress: Callable[[str], None] | None = None,
    search_rows: int | None = None,
    encoder_name: str = "auto",
    refit_with_val: bool = False,
    measure_speed: bool = True,
    max_quality_loss: float | None = None,
    featurizer: NgramFeaturizer | None = None,
) -> tuple[TextClassifier, TrainReport]:
    """:func:`train` for one label per message, from data in memory (see its parameters)."""
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
    rule = choice_rule(quality, max_quality_loss)
    quality, notes = resolve_quality(quality, choice.name)
    warnings += notes + ([choice.warning] if choice.warning and quality != "fast" else [])
    if quality == "best" and choice.name == "minilm":
        from offramp.encoders.sentence import available

        if not available("mpnet"):  # what the user leaves on the table, and how to pick it up
            warnings.append(
                "--quality best runs without the larger English encoder (mpnet), which is not installed: "
                "on Banking77 it raised test accuracy from 0.9425 to 0.9468 at about 200 ms a message "
                "(docs/benchmarks/accurate-tier.md); install it with: bash scripts/setup.sh --with-mpnet"
            )
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
        time_candidates=measure_speed,
        rule=rule,
        max_quality_loss=max_quality_loss,
        featurizer=featurizer,
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
        y_held: Sequence[str] | np.ndarray
        if val_ds is not None:
            proba, y_held, source = (
                model.predict_proba(val_ds.texts),
                val_ds.labels or [],
                f"held-out data {val_ds.path}",
            )
        else:
            assert sel.oof_proba is not None
            proba, y_held, source = sel.oof_proba, search_y, "out-of-fold predictions on the training data"
        memory, offsets, familiarity = _nearness_inputs(model, search_texts, search_y, val_ds, oos_label, seed)
        rejection = fit_rejection(proba, model.classes_, y_held, target, oos_label, familiarity)
        rejection.source = source
        rejection.label = oos_label or "UNKNOWN"
        model.reject_threshold_ = rejection.threshold
        model.reject_label_ = rejection.label
        if rejection.familiarity_weight and isinstance(model, StackedLinear):
            model.reject_familiarity_weight_ = rejection.familiarity_weight
            model.memory_, model.memory_offsets_ = memory, offsets
            rejection.memory_size = int(len(memory)) if memory is not None else 0
        if not rejection.met:
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
    latency, throughput = latency_summary([]), 0.0
    if measure_speed:
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
        rule=sel.rule,
        tolerance=sel.tolerance,
        max_quality_loss=max_quality_loss,
        rejection=rejection,
        warnings=warnings,
        search_rows=len(search_texts) if large else None,
        refit=refit,
        encoder=(
            EncoderUse(
                name=choice.name,
                title=encoder.ENCODERS[choice.name].title,
                reason=choice.reason,
                languages=choice.languages,
                used=isinstance(model, StackedLinear),
                warning=choice.warning,
            )
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
        "rule": report.rule,
        "max_quality_loss": report.max_quality_loss,
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


def check_memory(path: str | os.PathLike[str], columns: list[str], max_memory_gb: float | None = None) -> None:
    """Refuse, before reading, a file whose training would need more memory than the budget
    (``max_memory_gb``, default 80% of this machine's memory)."""
    import math

    from offramp.data.io import data_bytes
    from offramp.training.large import default_memory_budget, training_memory

    if max_memory_gb is not None and not max_memory_gb > 0:
        raise UsageError(f"the memory budget must be greater than zero, got {max_memory_gb}", param="max_memory")
    budget = int(max_memory_gb * 2**30) if max_memory_gb else default_memory_budget()
    size = data_bytes(path, columns)
    need = training_memory(size)
    if need > budget:
        gb = math.ceil(need / 2**30 * 10) / 10
        stated = "the memory budget given" if max_memory_gb else "the default budget, 80% of this machine's memory"
        raise UsageError(
            f"{path} holds {size / 2**20:,.1f} MB of data; training on it needs about {gb:g} GB of memory, "
            f"over {budget / 2**30:.1f} GB ({stated})",
            f"train on a part of the file, or give a memory budget of {gb:g} GB on a machine with that much memory",
            param="max_memory",
        )


def _gate_holdout(ds: Dataset, seed: int) -> tuple[Dataset, tuple[list[str], list[str], str]]:
    """(training part, (gate texts, gate labels, source)): a stratified 20% held out of ``ds`` as
    a new registry's frozen gate set. The held-out rows count as left out of the training part, so
    its rows still name the file's rows."""
    from offramp.registry.versions import gate_split

    assert ds.labels is not None
    held = gate_split(ds.labels, seed=seed)
    if not len(held):
        raise UsageError(
            f"{ds.path} is too small to hold out a gate set (no label has 5 examples)",
            "give a labelled gate set",
            param="gate",
        )
    mask = set(held.tolist())
    keep = [i for i in range(len(ds.texts)) if i not in mask]
    rest = Dataset(
        [ds.texts[i] for i in keep],
        [ds.labels[i] for i in keep],
        ds.path,
        ds.warnings + [f"{len(held)} rows ({len(held) / len(ds.texts):.0%}, stratified) are held out as the gate set"],
        ds.rows_read,
    )
    file_rows = ds.data_rows()
    rest.skipped_rows = sorted(set(ds.skipped_rows) | set(file_rows[held].tolist()))
    return rest, ([ds.texts[i] for i in held], [ds.labels[i] for i in held], f"20% of {ds.path} (seed {seed})")


def _read(
    data: DataLike, labels: Labels | None, text_col: str, label_col: str, max_chars: int, need_labels: bool = True
) -> Dataset:
    """``data`` as a Dataset: a path is read, a Dataset kept, texts paired with ``labels``."""
    from offramp.data.io import read_dataset

    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        if labels is not None:
            raise UsageError("give labels with texts, not with a file (the file has a label column)")
        return read_dataset(data, text_col=text_col, label_col=label_col, max_chars=max_chars, need_labels=need_labels)
    texts = as_texts(data)
    return Dataset(texts, list(as_labels(labels, len(texts))), "<memory>", rows_read=len(texts))


def train(
    data: DataLike,
    labels: Labels | None = None,
    *,
    text_col: str = "text",
    label_col: str = "label",
    max_chars: int | None = None,
    max_memory: float | None = None,
    quality: str = "auto",
    time_limit: float | str | None = "auto",
    seed: int = 0,
    val: DataLike | tuple[Texts, Labels] | None = None,
    oos_label: str | None = None,
    reject_target: RejectTarget | str | None = None,
    reject_confidence: float | None = None,
    refit_with_val: bool = False,
    latency_budget_ms: float | None = None,
    search_rows: int | None = None,
    encoder_name: str = "auto",
    multi_label: bool = False,
    label_sep: str = "|",
    label_precision: float | None = None,
    drop_suspects: bool = False,
    registry: str | os.PathLike[str] | None = None,
    gate: DataLike | tuple[Texts, Labels] | None = None,
    promote: bool | None = None,
    on_progress: Callable[[str], None] | None = None,
    measure_speed: bool = True,
    max_quality_loss: float | None = None,
    featurizer: NgramFeaturizer | None = None,
) -> tuple[TextClassifier, TrainReport | MultiLabelReport]:
    """Choose, calibrate and fit a classifier; return it with a report of the search.

    Parameters
    ----------
    data, labels : the training data: texts and labels (lists, arrays, pandas or pyarrow columns of
        strings), a :class:`~offramp.data.io.Dataset`, or the path of a CSV, TSV, JSONL or Parquet
        file (then ``labels`` is left out and ``text_col`` / ``label_col`` name the columns; the
        file is refused before it is read if training on it would need more than ``max_memory``
        GB, default 80% of this machine's memory). ``max_chars``: longer texts are cut (20,000).
    quality : "fast" (TF-IDF only), "balanced" or "best" (add the static tier and sentence-
        embedding candidates; the highest cross-validated macro-F1 wins), or "auto" (the default):
        balanced's candidates when the encoder is installed, else fast's, and the cheapest
        candidate (measured cost per message) whose score is within one standard error of the
        best one wins (fast for ``multi_label``).
    max_quality_loss : with "auto" (or "balanced"/"fast"), the cheapest candidate within this much
        cross-validated macro-F1 of the best one wins, instead of within one standard error.
    time_limit : seconds the search may take ("auto": 60 / 180 / 1,800 by quality). Candidates that
        would not fit are skipped and reported; ``None`` tries every candidate, so the same data
        and seed give the same model on any machine.
    seed : fixes the folds and the solvers: the same data, seed and candidates give the same model.
    val : held-out data (``(texts, labels)``, a Dataset or a path) to fit the "don't know" threshold
        on (default: the winner's out-of-fold predictions); needs ``reject_target``.
    oos_label : the label of out-of-scope examples, also the answer when the model does not know
        (default ``UNKNOWN``).
    reject_target : "in_scope_precision>=P" or "oos_recall>=R": fit a "don't know" threshold;
        ``reject_confidence`` is the level its held-out lower bound must reach (default 0.95).
    refit_with_val : once the threshold is fitted on ``val``, refit the winner on the training rows
        plus the ``val`` rows whose label it knows, keeping its calibration, threshold and nearness
        weight. The held-out figures in the report are those of the model before this refit.
    latency_budget_ms : only candidates whose single-message p99 fits can win.
    search_rows : cross-validate the candidates on at most this many rows (a stratified sample);
        with more rows the fast tier's winner is then refitted on every row in chunks, in bounded
        memory (see :mod:`offramp.training.large`). Default: every row up to 300,000, else 100,000.
    encoder_name : the accurate tier's sentence encoder (see :data:`offramp.encoders.sentence.ENCODERS`):
        ``auto`` picks by the languages of a sample of the texts.
    multi_label : a message may carry several labels or none: ``labels`` are label sets (lists),
        or strings joined by ``label_sep``; ``label_precision`` fits each label's threshold to that
        precision (default: best F1). Returns a :class:`~offramp.training.multilabel.MultiLabelReport`.
    drop_suspects : leave out the rows :func:`~offramp.training.noise.check_labels` ranks as
        mislabelled (a fast-tier check, same seed); the report lists them.
    registry : add the model to this registry (created if missing) as its next version instead of
        only returning it; the first version becomes current, later ones when ``promote`` is True.
        At the registry's first version a gate set is frozen: ``gate`` (labelled data) or a
        stratified 20% held out of ``data``.
    measure_speed : False leaves the speed figures out (the winner's latency and throughput, and
        each candidate's latency unless ``latency_budget_ms`` needs it): for a model trained only to
        be scored, as a student in :func:`~offramp.evaluation.distill.teacher_student` is.
    featurizer : an n-gram featurizer fitted already, which the n-gram candidates that build the same
        n-grams use as it is (a hierarchy's child models use their router's: a chain then computes
        a message's features once for both).

    Returns
    -------
    (model, report) : the fitted model (``model.save(dir)`` writes a model directory with its
    card) and a :class:`~offramp.training.report.TrainReport` (multi-label: a MultiLabelReport).

    Example
    -------
    >>> from offramp import train
    >>> texts = ["reset my pin", "thanks a lot", "how do I reset the pin", "thank you!"] * 5
    >>> labels = ["SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE"] * 5
    >>> model, report = train(texts, labels, quality="fast", time_limit=None)
    >>> str(model.predict(["pin reset please"])[0])
    'SUPPORT'
    """
    from offramp.data.io import DEFAULT_MAX_CHARS

    max_chars = DEFAULT_MAX_CHARS if max_chars is None else max_chars
    if featurizer is not None:
        if not isinstance(featurizer, NgramFeaturizer) or getattr(featurizer, "idf_", None) is None:
            raise UsageError(
                f"featurizer must be a fitted NgramFeaturizer, got {type(featurizer).__name__}",
                "pass a trained n-gram model's featurizer_, or leave it out",
                param="featurizer",
            )
        if multi_label:
            raise UsageError("a shared featurizer is for one label per message", param="featurizer")
    if multi_label or label_precision is not None:
        if not multi_label:
            raise UsageError("a label precision goes with several labels per message", param="label_precision")
        if reject_target is not None or val is not None or search_rows or oos_label:
            raise UsageError(
                "multi-label training does not take a reject target, validation data, search rows or an "
                "out-of-scope label",
                "leave them out: the pipeline's routing.unsure_band sends doubtful labels to the LLM",
            )
    target = RejectTarget.parse(reject_target, reject_confidence) if isinstance(reject_target, str) else reject_target
    if val is not None and target is None:
        raise UsageError(
            "validation data is used to fit the rejection threshold; give a reject target too",
            "for example in_scope_precision>=0.98",
            param="reject_target",
        )
    if refit_with_val and val is None:
        raise UsageError("refitting with the validation data needs validation data", param="val")
    if registry is None and (promote is not None or gate is not None):
        raise UsageError("promote and gate go with a registry", param="registry")
    resolve_time_limit(time_limit, "fast")  # a bad limit is refused before the data is read
    if encoder_name != "auto":
        encoder.encoder_info(encoder_name)
    reg = None
    if registry is not None:
        from offramp.registry.versions import Registry

        reg = Registry.create(registry)
        if gate is not None and reg.gate_set() is not None:
            raise UsageError(
                f"registry {registry} already has a frozen gate set",
                "leave the gate out, or give it to retrain for one run",
                param="gate",
            )
    if isinstance(data, (str, os.PathLike)):
        check_memory(data, [text_col, label_col], max_memory)
    if multi_label:
        return _train_multilabel(
            data, labels, text_col, label_col, max_chars, label_sep, label_precision, seed, quality,
            encoder_name, time_limit, drop_suspects, reg, gate, promote, on_progress,
        )  # fmt: skip
    ds = _read(data, labels, text_col, label_col, max_chars)
    val_ds: Dataset | None
    if val is None or isinstance(val, Dataset):
        val_ds = val
    elif isinstance(val, tuple):
        val_ds = _as_dataset(val, "the validation data")
    else:  # a file, or texts with no labels (which the check below refuses)
        val_ds = _read(val, None, text_col, label_col, max_chars)
    from offramp.data.multilabel import looks_multilabel

    joined = looks_multilabel(ds.labels or [], label_sep)
    notes = [joined] if joined else []
    gate_rows = None
    if reg is not None and reg.gate_set() is None:
        if isinstance(gate, tuple):
            gate_texts = as_texts(gate[0])
            gate_rows = (gate_texts, [str(x) for x in as_labels(gate[1], len(gate_texts))], "<memory>")
        elif gate is not None:
            g = _read(gate, None, text_col, label_col, max_chars)
            gate_rows = (g.texts, list(g.labels or []), str(gate) if not isinstance(gate, Dataset) else g.path)
        else:
            ds, gate_rows = _gate_holdout(ds, seed)
    dropped = None
    if drop_suspects:
        from offramp.training.noise import without_suspects

        assert ds.labels is not None
        kept_texts, kept_labels, check = without_suspects(
            ds.texts, ds.labels, quality="fast", seed=seed, near=None, on_progress=on_progress
        )
        rows = ds.data_rows()
        dropped = sorted(int(rows[s.row]) for s in check.suspects)
        ds = Dataset(kept_texts, kept_labels, ds.path, ds.warnings, ds.rows_read)
    model, report = _train_single(
        ds,
        quality=quality,
        time_limit=time_limit,
        seed=seed,
        latency_budget_ms=latency_budget_ms,
        reject_target=target,
        oos_label=oos_label,
        val=val_ds,
        on_progress=on_progress,
        search_rows=search_rows,
        encoder_name=encoder_name,
        refit_with_val=refit_with_val,
        measure_speed=measure_speed,
        max_quality_loss=max_quality_loss,
        featurizer=featurizer,
    )
    report.warnings[:0] = notes
    report.dropped_suspects = dropped
    if reg is not None:
        if on_progress:
            on_progress(f"adding to {reg.path}")
        if gate_rows is not None:
            reg.set_gate(*gate_rows)
        assert ds.labels is not None
        texts, labs = list(ds.texts), [str(lab) for lab in ds.labels]
        if report.rejection is not None and report.rejection.refit_with_val and isinstance(val_ds, Dataset):
            added = val_rows_known(model, val_ds)  # the val rows the model was refitted on
            texts += [val_ds.texts[i] for i in added]
            labs += [str((val_ds.labels or [])[i]) for i in added]
        version = reg.add(model, texts, labs, promote=True if promote else None)
        report.registry = RegistryEntry(str(reg.path), version, reg.current)
    return model, report


def _train_multilabel(
    data: DataLike,
    labels: Labels | None,
    text_col: str,
    label_col: str,
    max_chars: int,
    sep: str,
    label_precision: float | None,
    seed: int,
    quality: str,
    encoder_name: str,
    time_limit: float | str | None,
    drop_suspects: bool,
    reg: Registry | None,
    gate: DataLike | tuple[Texts, Labels] | None,
    promote: bool | None,
    on_progress: Callable[[str], None] | None,
) -> tuple[TextClassifier, MultiLabelReport]:
    """:func:`train` with several labels per message."""
    from offramp.data.multilabel import parse_label_sets, read_label_sets
    from offramp.training.multilabel import train_multilabel

    if isinstance(data, (str, os.PathLike)):
        ds, sets, notes = read_label_sets(data, text_col, label_col, sep, max_chars)
    elif isinstance(data, Dataset):
        ds = data
        sets, notes = parse_label_sets(data.labels or [], sep)
    else:
        texts = as_texts(data)
        raw = _column_of_sets(labels, len(texts), sep)
        ds = Dataset(texts, None, "<memory>", rows_read=len(texts))
        sets, notes = raw, []
    gate_rows = None
    if reg is not None and reg.gate_set() is None:  # the first version: freeze a gate set of label sets
        if gate is not None:
            if isinstance(gate, (str, os.PathLike)):
                g, gsets, _ = read_label_sets(gate, text_col, label_col, sep, max_chars)
                gate_rows = (g.texts, [sep.join(s) for s in gsets], str(gate))
            elif isinstance(gate, Dataset):
                gsets, _ = parse_label_sets(gate.labels or [], sep)
                gate_rows = (list(gate.texts), [sep.join(s) for s in gsets], gate.path)
            elif isinstance(gate, tuple):
                gtexts, glabels = list(gate[0]), gate[1]
                gsets = _column_of_sets(glabels, len(gtexts), sep)
                gate_rows = (gtexts, [sep.join(s) for s in gsets], "<memory>")
            else:
                raise UsageError("give the gate set as a file, a Dataset or (texts, label sets)", param="gate")
        else:
            joined = Dataset(ds.texts, [sep.join(s) for s in sets], ds.path, ds.warnings, ds.rows_read)
            joined.skipped_rows = list(ds.skipped_rows)
            rest, gate_rows = _gate_holdout(joined, seed)
            sets, _ = parse_label_sets(rest.labels or [], sep)
            rest.labels = None
            ds = rest
    dropped = None
    if drop_suspects:
        from offramp.training.noise import check_label_sets

        check = check_label_sets(ds.texts, sets, label_sep=sep, seed=seed, near=None, on_progress=on_progress)
        rows = ds.data_rows()
        gone = {s.row for s in check.suspects}
        dropped = sorted(int(rows[i]) for i in gone)
        keep = [i for i in range(len(ds.texts)) if i not in gone]
        ds = Dataset([ds.texts[i] for i in keep], None, ds.path, ds.warnings, ds.rows_read)
        sets = [sets[i] for i in keep]
    # multi-label: auto is the fast tier (its search stays within a minute on 20k messages);
    # balanced and best add the stacked tier
    quality = "fast" if quality == "auto" else quality
    choice = encoder.choose_encoder(ds.texts, encoder_name, seed)
    warnings = ds.warnings + notes
    if quality != "fast":
        quality, _ = resolve_quality(quality, choice.name)
        if choice.warning:
            warnings.append(choice.warning)
    limit = resolve_time_limit(time_limit, quality)  # auto: 60 s for fast, 180 s for balanced
    model, report = train_multilabel(
        ds.texts,
        sets,
        seed=seed,
        label_precision=label_precision,
        label_sep=sep,
        data_path=ds.path,
        warnings=warnings,
        on_progress=on_progress,
        quality=quality,
        encoder=choice.name,
        time_limit=limit,
    )
    report.dropped_suspects = dropped
    if reg is not None:
        if on_progress:
            on_progress(f"adding to {reg.path}")
        if gate_rows is not None:
            reg.set_gate(*gate_rows)
        version = reg.add(model, ds.texts, [sep.join(s) for s in sets], promote=True if promote else None)
        report.registry = RegistryEntry(str(reg.path), version, reg.current)
    return model, report


def _column_of_sets(labels: Iterable[object] | None, n: int, sep: str) -> list[list[str]]:
    """Label sets given in memory: lists of labels, or strings joined by ``sep``."""
    from offramp.data.multilabel import parse_label_sets

    values = list(labels) if labels is not None else []
    if len(values) != n:
        raise UsageError(f"{n} texts but {len(values)} label sets")
    collections = [v for v in values if isinstance(v, (list, tuple, set, frozenset))]
    if len(collections) == len(values):
        return [sorted({str(x) for x in v}) for v in collections]
    sets, _ = parse_label_sets([None if v is None else str(v) for v in values], sep)
    return sets
