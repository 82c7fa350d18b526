"""Several labels per message: one-vs-rest over the fast tier's features, a calibrated
probability per label, a decision threshold per label, and "none of these".

* Each label gets its own linear scorer on the shared word + character TF-IDF features.
* Its scores are turned into a probability by Platt scaling fitted on out-of-fold scores
  (``sigmoid(a * score + b)``), so a 0.8 means "about 80% of such messages carry it".
* Its threshold is fitted on the same out-of-fold probabilities: the one that maximises that
  label's F1 (default), or the lowest that reaches a precision target. A message whose labels all
  fall under their thresholds gets none: the empty set is an answer, not an error.

``predict`` follows scikit-learn's multi-label contract (an indicator matrix, ``classes_`` as
columns); ``predict_sets`` gives the label lists; ``predict_one`` gives the most probable label
for single-label consumers.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from offramp.errors import UsageError
from offramp.estimators.base import as_texts, register_family
from offramp.estimators.stacked import StackedLinear
from offramp.estimators.tfidf import TfidfLinear, make_linear

MIN_POSITIVES = 2


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40, 40))))


def as_label_sets(y: Any, n: int) -> list[list[str]]:
    """``y`` as one sorted list of labels per text (lists, tuples or sets of labels)."""
    sets = []
    for i, s in enumerate(list(y)):
        if isinstance(s, str) or not hasattr(s, "__iter__"):
            raise ValueError(f"label set {i} is {type(s).__name__}: give each text a list of labels")
        sets.append(sorted({str(x) for x in s}))
    if len(sets) != n:
        raise ValueError(f"{n} texts but {len(sets)} label sets")
    return sets


def indicator(sets: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    pos = {c: j for j, c in enumerate(classes)}
    Y = np.zeros((len(sets), len(classes)), dtype=np.int8)
    for i, s in enumerate(sets):
        for lab in s:
            if lab in pos:
                Y[i, pos[lab]] = 1
    return Y


@register_family
class TfidfMultiLabel(TfidfLinear):
    """TF-IDF (words + characters) with one linear scorer per label.

    Parameters are :class:`TfidfLinear`'s; ``loss`` ``svm`` or ``logreg`` is the per-label scorer.

    Example
    -------
    >>> texts = ["thanks! and how do I reset my pin", "reset my pin", "thank you", "hello"] * 5
    >>> sets = [["GRATITUDE", "SUPPORT"], ["SUPPORT"], ["GRATITUDE"], []] * 5
    >>> m = TfidfMultiLabel(min_df=1).fit(texts, sets)
    >>> m.predict_sets(["thanks, how do I reset the pin"])
    [['GRATITUDE', 'SUPPORT']]
    """

    family = "tfidf-multilabel"
    multi_label: ClassVar[bool] = True
    label_sep_: str = "|"

    def fit(self, X: Any, y: Any) -> TfidfMultiLabel:
        """Learn from texts ``X`` and their label sets ``y`` (each a list of labels, possibly empty)."""
        self._check_params()
        texts = as_texts(X)
        sets = as_label_sets(y, len(texts))
        state, features = self.build_features(texts)
        return self.fit_features(state, features, sets)

    def fit_features(self, state: Any, X: Any, labels: Any) -> TfidfMultiLabel:
        sets = [list(s) for s in labels]
        classes = sorted({lab for s in sets for lab in s})
        if not classes:
            raise ValueError("no message carries a label")
        Y = indicator(sets, classes)
        self._reset()
        coef = np.zeros((X.shape[1], len(classes)), dtype=np.float64)
        intercept = np.zeros(len(classes))
        for j in range(len(classes)):
            if Y[:, j].all() or not Y[:, j].any():
                raise ValueError(f"label {classes[j]!r} is on every message or on none: nothing to learn")

        def fit_one(j: int) -> None:  # liblinear releases the GIL: labels are fitted on every core
            clf = make_linear(self.loss, self.C, self.seed).fit(X, Y[:, j])
            coef[:, j] = np.asarray(clf.coef_).ravel()
            intercept[j] = float(np.asarray(clf.intercept_).ravel()[0])

        workers = max(1, min(len(classes), os.cpu_count() or 1))
        if workers == 1:
            for j in range(len(classes)):
                fit_one(j)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(fit_one, range(len(classes))))
        self._set_feature_state(state)
        self.classes_ = np.asarray(classes).astype(str)
        self.coef_ = coef.astype(np.float16).astype(np.float32)
        self.intercept_ = intercept.astype(np.float32)
        self.platt_ = np.tile([1.0, 0.0], (len(classes), 1))
        self.thresholds_ = np.full(len(classes), 0.5)
        return self

    def _reset(self) -> None:
        super()._reset()
        self.label_sep_ = "|"

    # ------------------------------------------------------------------ predict
    def proba_from_scores(self, scores: np.ndarray) -> np.ndarray:
        return sigmoid(np.asarray(scores) * self.platt_[:, 0] + self.platt_[:, 1])

    def predict_proba(self, X: Any) -> np.ndarray:
        self._check_fitted()
        return self.proba_from_scores(self.decision_function(X))

    def predict(self, X: Any) -> np.ndarray:
        """Indicator matrix (messages × ``classes_``): 1 where the label is predicted."""
        return (self.predict_proba(X) >= self.thresholds_).astype(np.int8)

    def sets_from_proba(self, proba: np.ndarray) -> list[list[str]]:
        on = proba >= self.thresholds_
        return [[str(c) for c in self.classes_[row]] for row in on]

    def predict_sets(self, X: Any) -> list[list[str]]:
        return self.sets_from_proba(self.predict_proba(X))

    def labels_from_proba(self, proba: np.ndarray, familiarity: np.ndarray | None = None) -> np.ndarray:
        """The most probable label of each message (for consumers of one label)."""
        return np.asarray(self.classes_[np.argmax(proba, axis=1)]).astype(str)

    def predict_and_proba(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        proba = self.predict_proba(X)
        return self.labels_from_proba(proba), proba

    def predict_one(self, text: str) -> tuple[str, float, np.ndarray]:
        self._check_fitted()
        p = self.proba_from_scores(self.decision_one(text))
        i = int(np.argmax(p))
        return str(self.classes_[i]), float(p[i]), p

    # ------------------------------------------------------------------ state
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super().get_state()
        meta["multi_label"] = {"sep": self.label_sep_}
        arrays = {**arrays, "platt": np.asarray(self.platt_, dtype=np.float64), "thresholds": self.thresholds_}
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TfidfMultiLabel:
        m = super().from_state(meta, arrays)
        assert isinstance(m, TfidfMultiLabel)
        k = len(m.classes_)
        m.platt_ = np.asarray(arrays["platt"], dtype=np.float64)
        m.thresholds_ = np.asarray(arrays["thresholds"], dtype=np.float64)
        if m.platt_.shape != (k, 2) or m.thresholds_.shape != (k,) or not np.isfinite(m.platt_).all():
            raise ValueError("the per-label calibration or thresholds do not match the labels")
        m.label_sep_ = str((meta.get("multi_label") or {}).get("sep") or "|")
        return m


@register_family
class StackedMultiLabel(TfidfMultiLabel, StackedLinear):
    """The accurate tier with several labels per message: one scorer per label over
    ``[TF-IDF | weight * sentence embedding]`` (see :class:`~offramp.estimators.stacked.StackedLinear`
    for the features and the encoder; :class:`TfidfMultiLabel` for calibration and thresholds)."""

    family = "stacked-multilabel"


# ---------------------------------------------------------------------- training


def multilabel_metrics(Y: np.ndarray, P: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """micro/macro/samples F1, subset accuracy, Hamming loss and per-label figures of indicator
    predictions ``P`` against ``Y``."""
    Y, P = np.asarray(Y, dtype=bool), np.asarray(P, dtype=bool)
    tp = (Y & P).sum(axis=0).astype(float)
    fp = (~Y & P).sum(axis=0).astype(float)
    fn = (Y & ~P).sum(axis=0).astype(float)
    prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    rec = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    micro = 2 * tp.sum() / max(1.0, 2 * tp.sum() + fp.sum() + fn.sum())
    row_tp = (Y & P).sum(axis=1)
    denom = Y.sum(axis=1) + P.sum(axis=1)
    samples = np.where(denom > 0, 2 * row_tp / np.maximum(denom, 1), 1.0)  # both empty: a perfect answer
    return {
        "n": int(len(Y)),
        "micro_f1": float(micro),
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
        "samples_f1": float(samples.mean()) if len(samples) else 0.0,
        "subset_accuracy": float((Y == P).all(axis=1).mean()) if len(Y) else 0.0,
        "hamming_loss": float((Y != P).mean()) if Y.size else 0.0,
        "per_label": {
            str(c): {
                "precision": float(prec[j]),
                "recall": float(rec[j]),
                "f1": float(f1[j]),
                "support": int(Y[:, j].sum()),
            }
            for j, c in enumerate(classes)
        },
    }


def confused_pairs(Y: np.ndarray, P: np.ndarray, classes: Sequence[str], top: int = 10) -> list[dict[str, Any]]:
    """The most frequent (true label, predicted label) pairs where one was missed and the other
    wrongly added on the same message."""
    Y, P = np.asarray(Y, dtype=bool), np.asarray(P, dtype=bool)
    missed, extra = Y & ~P, ~Y & P
    counts = missed.T.astype(np.int64) @ extra.astype(np.int64)
    pairs = [(int(counts[a, b]), a, b) for a in range(len(classes)) for b in range(len(classes)) if counts[a, b]]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [{"true": str(classes[a]), "predicted": str(classes[b]), "count": c} for c, a, b in pairs[:top]]


def fit_platt(scores: np.ndarray, Y: np.ndarray, iters: int = 100) -> np.ndarray:
    """Platt scaling of every label at once: (labels, 2) rows (a, b) of sigmoid(a * s + b), fitted
    by Newton's method on all labels together, with Platt's smoothed targets ((n+ + 1) / (n+ + 2)
    and 1 / (n- + 2)) so that perfectly separated scores still get finite, sensible slopes."""
    S0 = np.asarray(scores, dtype=np.float64)
    Y = np.asarray(Y, dtype=bool)
    scale = S0.std(axis=0) + 1e-12
    S = S0 / scale  # unit-variance scores: Newton from a = 1 starts near the answer
    n = len(S)
    pos = Y.sum(axis=0)
    T = np.where(Y, (pos + 1.0) / (pos + 2.0), 1.0 / (n - pos + 2.0))

    def loss(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        z = S * a + b
        return np.asarray((np.logaddexp(0, z) - T * z).sum(axis=0))

    a, b = np.ones(S.shape[1]), np.zeros(S.shape[1])
    current = loss(a, b)
    for _ in range(iters):
        p = sigmoid(S * a + b)
        w = p * (1 - p) + 1e-12
        g = p - T
        ga, gb = (g * S).sum(axis=0), g.sum(axis=0)
        haa, hab, hbb = (w * S * S).sum(axis=0) + 1e-9, (w * S).sum(axis=0), w.sum(axis=0) + 1e-9
        det = haa * hbb - hab * hab
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        step = np.ones_like(a)
        for _ in range(30):  # backtracking, label by label: the loss never goes up
            new = loss(a - step * da, b - step * db)
            worse = new > current + 1e-12
            if not worse.any():
                break
            step = np.where(worse, step / 2, step)
        a, b, current = a - step * da, b - step * db, np.minimum(current, loss(a - step * da, b - step * db))
        if max(np.abs(step * da).max(), np.abs(step * db).max()) < 1e-10:
            break
    return np.stack([a / scale, b], axis=1)


def fit_threshold(p: np.ndarray, y: np.ndarray, precision: float | None = None) -> float:
    """The threshold on one label's probabilities maximising its F1, or the lowest reaching
    ``precision`` (the highest probability seen, if none does)."""
    order = np.argsort(-p)
    ps, ys = p[order], y[order].astype(float)
    tp = np.cumsum(ys)
    k = np.arange(1, len(ps) + 1)
    last = np.r_[ps[1:] != ps[:-1], True]  # cut only between distinct probabilities
    if precision is not None:
        ok = last & (tp / k >= precision)
        if not ok.any():
            return float(min(1.0, ps[0] + 1e-9))
        i = int(np.flatnonzero(ok)[-1])
        return float(ps[i])
    f1 = 2 * tp / (k + ys.sum())
    f1 = np.where(last, f1, -1.0)
    i = int(np.argmax(f1))
    nxt = ps[i + 1] if i + 1 < len(ps) else 0.0
    return float((ps[i] + nxt) / 2)  # halfway to the next probability: robust to small shifts


# per-label linear SVMs: in a trial on 20,006 messages with 77 labels, logistic regression (C=8)
# cost 2.7 times an SVM's time and scored lower, so the candidates are SVMs of three strengths
CANDIDATES: list[tuple[str, float]] = [("svm", 0.5), ("svm", 1.0), ("svm", 0.1)]


def multilabel_candidates(
    quality: str, seed: int = 0, encoder: str = "minilm"
) -> list[tuple[str, Callable[[], TfidfMultiLabel]]]:
    """(name, factory) per candidate: the fast tier's SVMs; ``balanced``/``best`` put the stacked
    tier (TF-IDF + sentence embeddings from ``encoder``) first."""
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
    return stacked + fast[:1] if quality == "balanced" else stacked + fast


@dataclass
class MultiLabelReport:
    winner: str
    candidates: list[dict[str, Any]]
    cv: dict[str, Any]
    thresholds: dict[str, float]
    cooccurrence: list[dict[str, Any]]
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("oof_proba")
        d.pop("classes")
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
        {"labels": [classes[a], classes[b]], "messages": int(pair_counts[a, b])}
        for a in range(len(classes))
        for b in range(a + 1, len(classes))
        if pair_counts[a, b]
    ]
    co.sort(key=lambda d: -int(d["messages"]))  # type: ignore[call-overload]
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
