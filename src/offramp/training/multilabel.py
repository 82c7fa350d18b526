"""Multi-label training: the one-vs-rest candidates cross-validated by micro-F1, each label
calibrated and thresholded on the winner's out-of-fold scores, the winner refitted on every row."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from offramp.errors import UsageError
from offramp.estimators.multilabel import (
    MIN_POSITIVES,
    Cooccurrence,
    MultiLabelScores,
    StackedMultiLabel,
    TfidfMultiLabel,
    fit_platt,
    fit_threshold,
    indicator,
    multilabel_metrics,
    sigmoid,
)
from offramp.training.report import RegistryEntry
from offramp.types import JSONDict

# per-label linear SVMs: in a trial on 20,006 messages with 77 labels, logistic regression (C=8)
# cost 2.7 times an SVM's time and scored lower, so the candidates are SVMs of three strengths
CANDIDATES: list[tuple[str, float]] = [("svm", 0.5), ("svm", 1.0), ("svm", 0.1)]


def multilabel_candidates(
    quality: str, seed: int = 0, encoder: str = "minilm"
) -> list[tuple[str, Callable[[], TfidfMultiLabel]]]:
    """(name, factory) per candidate: the fast tier's SVMs; ``balanced``/``best`` put the stacked
    tier (TF-IDF + sentence embeddings from ``encoder``) first, and for English data the static
    tier (TF-IDF + static embeddings distilled from MiniLM) beside it."""
    fast: list[tuple[str, Callable[[], TfidfMultiLabel]]] = [
        (f"{loss}-C{C:g}", partial(TfidfMultiLabel, loss=loss, C=C, seed=seed)) for loss, C in CANDIDATES
    ]
    if quality == "fast":
        return fast
    tag = "" if encoder == "minilm" else f"-{encoder}"
    stacked: list[tuple[str, Callable[[], TfidfMultiLabel]]] = [
        (
            f"stacked{tag}-e1.5-svm-C0.5",
            partial(StackedMultiLabel, loss="svm", C=0.5, seed=seed, embed_weight=1.5, encoder=encoder),
        )
    ]
    if encoder == "minilm":
        stacked.append(
            (
                "static-stacked-e2-svm-C1",
                partial(StackedMultiLabel, loss="svm", C=1.0, seed=seed, embed_weight=2.0, encoder="static-minilm"),
            )
        )
    return stacked + fast[:1] if quality == "balanced" else stacked + fast


@dataclass
class MultiLabelReport:
    winner: str
    candidates: list[dict[str, Any]]
    cv: MultiLabelScores
    thresholds: dict[str, float]
    cooccurrence: list[Cooccurrence]
    n_train: int
    label_counts: dict[str, int]
    empty_rows: int
    train_seconds: float
    n_folds: int
    warnings: list[str] = field(default_factory=list)
    multi_label: bool = True
    # the winner's calibrated out-of-fold probabilities (messages x classes), for the label check;
    # not part of the report's JSON
    oof_proba: np.ndarray | None = field(default=None, repr=False)
    classes: list[str] = field(default_factory=list)
    # drop_suspects: the 0-based data rows left out; registry=: the version the model became
    dropped_suspects: list[int] | None = None
    registry: RegistryEntry | None = None

    def to_dict(self) -> JSONDict:
        d = asdict(self)
        for key in ("oof_proba", "classes", "registry", "dropped_suspects"):
            d.pop(key)
        if self.dropped_suspects is not None:
            d["dropped_suspects"] = list(self.dropped_suspects)
        if self.registry is not None:
            d.update(registry=self.registry.path, version=self.registry.version, current=self.registry.current)
        return d


def train_multilabel(
    texts: Sequence[str],
    label_sets: Sequence[Sequence[str]],
    *,
    seed: int = 0,
    n_folds: int = 3,
    label_precision: float | None = None,
    label_sep: str = "|",
    time_limit: float | None = 60.0,
    data_path: str = "<memory>",
    warnings: Sequence[str] = (),
    on_progress: Callable[[str], None] | None = None,
    quality: str = "fast",
    encoder: str = "minilm",
) -> tuple[TfidfMultiLabel, MultiLabelReport]:
    """Cross-validate the one-vs-rest candidates by micro-F1, calibrate and threshold each label on
    the winner's out-of-fold scores, refit on everything. ``quality`` "fast" tries the TF-IDF tier,
    "balanced" and "best" the stacked tier (sentence embeddings from ``encoder``) too."""
    from sklearn.model_selection import KFold

    t0 = time.perf_counter()
    say = on_progress or (lambda _m: None)
    texts = list(texts)
    sets = [sorted(set(s)) for s in label_sets]
    if len(texts) != len(sets):
        raise UsageError(f"{len(texts)} texts but {len(sets)} label sets")
    classes = sorted({lab for s in sets for lab in s})
    counts = {c: int(sum(c in s for s in sets)) for c in classes}
    rare = [c for c, n in counts.items() if n < MIN_POSITIVES]
    if rare:
        raise UsageError(
            f"label(s) on fewer than {MIN_POSITIVES} messages: {', '.join(rare[:10])}",
            "add examples of them or drop them from the label column",
        )
    everywhere = [c for c, n in counts.items() if n == len(texts)]
    if everywhere:
        raise UsageError(f"label(s) on every message: {', '.join(everywhere)}", "such a label tells nothing apart")
    if label_precision is not None and not 0 < label_precision <= 1:
        raise UsageError(f"the label precision must be in (0, 1], got {label_precision}", param="label_precision")
    Y = indicator(sets, classes)
    folds = list(KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(len(texts))))
    results = []
    best: tuple[float, int, np.ndarray] | None = None
    costs: list[float] = []
    candidates = multilabel_candidates(quality, seed, encoder)
    features: dict[str, tuple[Any, Any]] = {}
    for ci, (name, make) in enumerate(candidates):
        # the first candidate always runs; a further one only if it, the refit on every row after it
        # (1 / (n_folds - 1) of a cross-validation's fitting) and the calibration (about 15%) fit
        spent = time.perf_counter() - t0
        if ci and time_limit is not None and spent + max(costs) * (1 + 1 / (n_folds - 1) + 0.15) > time_limit:
            results.append({"name": name, "status": "skipped: time limit", "seconds": 0.0})
            continue
        c0 = time.perf_counter()
        proto = make()
        key = proto.feature_key()
        if key not in features:
            say("building features" if ci == 0 else f"building features for {name}")
            features[key] = proto.build_features(texts)
        state, X = features[key]
        say(f"cross-validating {name}")
        oof = np.zeros(Y.shape)
        try:
            for tr, te in folds:
                sub = [sets[i] for i in tr]
                if any(not Y[tr, j].any() or Y[tr, j].all() for j in range(len(classes))):
                    raise ValueError("a fold lacks a label's positives or negatives")
                m = make().fit_features(state, X[tr], sub)
                cols = np.searchsorted(classes, m.classes_)
                oof[np.ix_(te, cols)] = np.asarray(X[te] @ m.coef_) + m.intercept_
            P = oof > 0
            score = multilabel_metrics(Y, P, classes)["micro_f1"]
            results.append(
                {
                    "name": name,
                    "status": "scored",
                    "cv_micro_f1_at_0": round(score, 4),
                    "seconds": round(time.perf_counter() - c0, 2),
                }
            )
            if best is None or score > best[0] + 1e-4:
                best = (score, ci, oof.copy())
        except ValueError as e:
            results.append({"name": name, "status": f"failed: {e}", "seconds": round(time.perf_counter() - c0, 2)})
        costs.append(time.perf_counter() - c0)
    if best is None:
        raise UsageError("no candidate could be trained: " + "; ".join(str(r["status"]) for r in results))
    _, ci, oof = best
    name, make = candidates[ci]
    say("calibrating each label")
    platt = fit_platt(oof, Y)
    proba = sigmoid(oof * platt[:, 0] + platt[:, 1])
    thr = np.array([fit_threshold(proba[:, j], Y[:, j], label_precision) for j in range(len(classes))])
    cv = multilabel_metrics(Y, proba >= thr, classes)
    say(f"refitting {name} on all {len(texts)} texts")
    state, X = features[make().feature_key()]
    model = make().fit_features(state, X, sets)
    model.platt_, model.thresholds_, model.label_sep_ = platt, thr, label_sep
    pair_counts = Y.T.astype(np.int64) @ Y.astype(np.int64)
    co = [
        Cooccurrence(labels=[classes[a], classes[b]], messages=int(pair_counts[a, b]))
        for a in range(len(classes))
        for b in range(a + 1, len(classes))
        if pair_counts[a, b]
    ]
    co.sort(key=lambda d: -d["messages"])
    report = MultiLabelReport(
        winner=name,
        candidates=results,
        cv=cv,
        thresholds={str(c): round(float(t), 6) for c, t in zip(classes, thr)},
        cooccurrence=co[:20],
        n_train=len(texts),
        label_counts=counts,
        empty_rows=int(sum(1 for s in sets if not s)),
        train_seconds=time.perf_counter() - t0,
        n_folds=n_folds,
        warnings=list(warnings),
        oof_proba=proba,
        classes=list(classes),
    )
    info = {
        "multi_label": True,
        "winner": report.winner,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "label_sep": label_sep,
        "label_precision": label_precision,
        # the search, as a retrain repeats it
        "quality": quality,
        "encoder": encoder if quality != "fast" else None,
        "time_limit": time_limit,
        "data": {"path": data_path, "n": len(texts), "label_counts": counts, "empty_rows": report.empty_rows},
        "candidates": results,
        "thresholds": report.thresholds,
        "cooccurrence": report.cooccurrence,
    }
    metrics = {"cv": cv, "train_seconds": report.train_seconds, "multi_label": True}
    model.training_record_ = {"info": info, "metrics": metrics}
    return model, report
