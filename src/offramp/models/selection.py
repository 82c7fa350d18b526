"""Choose a model by stratified cross-validation on macro-F1, within a time limit.

Candidates that share a featurizer share its features: the featurizer is fitted once on all the
training texts (it sees no labels), and only the classifier is cross-validated. The winner's
out-of-fold scores then fit its temperature, so its probabilities are calibrated on texts it had
not seen, and it is refitted on all the data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from offramp.models.calibration import expected_calibration_error, fit_temperature
from offramp.models.base import softmax
from offramp.models.tfidf import TfidfLinear


@dataclass
class Candidate:
    """A named model configuration to try."""

    name: str
    make: Callable[[], TfidfLinear]
    description: str = ""


@dataclass
class CandidateResult:
    name: str
    description: str
    status: str  # "scored", "skipped: ..." or "failed: ..."
    cv_macro_f1: float | None = None
    cv_accuracy: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Selection:
    model: TfidfLinear
    winner: str
    results: list[CandidateResult]
    n_folds: int
    ece_before: float
    ece_after: float
    seconds: float
    notes: list[str] = field(default_factory=list)


def fast_candidates(n_texts: int, seed: int = 0) -> list[Candidate]:
    """The fast tier's search space, most promising first (the first one always runs)."""
    min_df = 1 if n_texts < 2000 else 2
    chars14 = dict(word_ngrams=(1, 2), char_ngrams=(1, 4), min_df=min_df, seed=seed)
    chars25 = dict(word_ngrams=(1, 2), char_ngrams=(2, 5), min_df=min_df, seed=seed)
    return [
        Candidate("svm-w12-c14-C0.5", lambda: TfidfLinear(**chars14, loss="svm", C=0.5),
                  "words 1-2 + chars 1-4, linear SVM C=0.5"),
        Candidate("svm-w12-c14-C1", lambda: TfidfLinear(**chars14, loss="svm", C=1.0),
                  "words 1-2 + chars 1-4, linear SVM C=1"),
        Candidate("svm-w12-c25-C1", lambda: TfidfLinear(**chars25, loss="svm", C=1.0),
                  "words 1-2 + chars 2-5, linear SVM C=1"),
        Candidate("svm-w12-c14-C0.2", lambda: TfidfLinear(**chars14, loss="svm", C=0.2),
                  "words 1-2 + chars 1-4, linear SVM C=0.2"),
        Candidate("logreg-w12-c14-C20", lambda: TfidfLinear(**chars14, loss="logreg", C=20.0),
                  "words 1-2 + chars 1-4, logistic regression C=20"),
    ]


def n_folds_for(labels: Sequence[str], wanted: int = 3) -> int:
    _, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    return int(max(2, min(wanted, counts.min())))


def select_model(
    texts: Sequence[str],
    labels: Sequence[str],
    candidates: Sequence[Candidate],
    *,
    time_limit: float = 60.0,
    seed: int = 0,
    n_folds: int = 3,
    on_progress: Callable[[str], None] | None = None,
) -> Selection:
    """Cross-validate ``candidates`` and return the best one, calibrated and refitted on everything.

    The first candidate is always scored; each further one only if the time spent so far plus its
    expected cost (measured on the candidates before it) stays within ``time_limit`` seconds.
    """
    t0 = time.perf_counter()
    texts = list(texts)
    y_str = np.asarray(labels, dtype=object).astype(str)
    classes, y = np.unique(y_str, return_inverse=True)
    n_folds = n_folds_for(y_str, n_folds)
    folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    say = on_progress or (lambda _msg: None)

    feature_cache: dict[str, tuple] = {}
    results: list[CandidateResult] = []
    oof_by_name: dict[str, np.ndarray] = {}
    fit_cost: list[float] = []  # seconds per candidate, to forecast the next one
    for i, cand in enumerate(candidates):
        proto = cand.make()
        key = repr(proto.make_featurizer().get_config())
        elapsed = time.perf_counter() - t0
        forecast = max(fit_cost) if fit_cost else 0.0
        if key not in feature_cache and fit_cost:
            forecast *= 1.3
        # keep room for the final refit of the winner (about one fold's worth)
        if i > 0 and elapsed + forecast * (1 + 1 / n_folds) > time_limit:
            results.append(CandidateResult(cand.name, cand.description, "skipped: time limit"))
            continue
        say(f"cross-validating {cand.name}")
        c0 = time.perf_counter()
        try:
            if key not in feature_cache:
                feat = proto.make_featurizer().fit(texts)
                feature_cache[key] = (feat, feat.transform(texts))
            feat, X = feature_cache[key]
            oof = np.zeros((len(y), len(classes)), dtype=np.float64)
            for tr, te in folds:
                m = cand.make().fit_features(feat, X[tr], y_str[tr])
                scores = np.asarray(X[te] @ m.coef_) + m.intercept_
                # a fold may lack a rare class: place its scores in the right columns
                cols = np.searchsorted(classes, m.classes_)
                fill = np.full((len(te), len(classes)), -1e3)
                fill[:, cols] = scores
                oof[te] = fill
            pred = oof.argmax(axis=1)
            res = CandidateResult(
                cand.name, cand.description, "scored",
                cv_macro_f1=float(f1_score(y, pred, average="macro")),
                cv_accuracy=float((pred == y).mean()),
                seconds=time.perf_counter() - c0,
            )
            oof_by_name[cand.name] = oof
        except Exception as e:  # one failing configuration should not sink the search
            res = CandidateResult(cand.name, cand.description, f"failed: {e}", seconds=time.perf_counter() - c0)
        fit_cost.append(res.seconds)
        results.append(res)

    scored = [r for r in results if r.status == "scored"]
    if not scored:
        raise RuntimeError("no candidate could be trained: " + "; ".join(r.status for r in results))
    best = max(scored, key=lambda r: (round(r.cv_macro_f1, 4), -results.index(r)))
    oof = oof_by_name[best.name]
    temperature = fit_temperature(oof, y)
    ece_before = expected_calibration_error(softmax(oof, 1.0), y)
    ece_after = expected_calibration_error(softmax(oof, temperature), y)

    say(f"refitting {best.name} on all {len(y)} texts")
    cand = next(c for c in candidates if c.name == best.name)
    proto = cand.make()
    feat, X = feature_cache[repr(proto.make_featurizer().get_config())]
    model = proto.fit_features(feat, X, y_str)
    model.temperature_ = temperature
    return Selection(model, best.name, results, n_folds, ece_before, ece_after, time.perf_counter() - t0)
