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
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Sequence, TypedDict

import numpy as np

from offramp.estimators.base import as_texts, register_family
from offramp.estimators.stacked import StackedLinear
from offramp.estimators.tfidf import Features, TfidfLinear, make_linear
from offramp.types import JSONDict, Labels, Texts

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

    def fit(self, X: Texts, y: Labels) -> TfidfMultiLabel:
        """Learn from texts ``X`` and their label sets ``y`` (each a list of labels, possibly empty)."""
        self._check_params()
        texts = as_texts(X)
        sets = as_label_sets(y, len(texts))
        state, features = self.build_features(texts)
        return self.fit_features(state, features, sets)

    def fit_features(
        self, state: object, X: Features, labels: Sequence[Sequence[str]] | Sequence[str] | np.ndarray
    ) -> TfidfMultiLabel:
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

    def predict_proba(self, X: Texts) -> np.ndarray:
        self._check_fitted()
        return self.proba_from_scores(self.decision_function(X))

    def predict(self, X: Texts) -> np.ndarray:
        """Indicator matrix (messages × ``classes_``): 1 where the label is predicted."""
        return (self.predict_proba(X) >= self.thresholds_).astype(np.int8)

    def sets_from_proba(self, proba: np.ndarray) -> list[list[str]]:
        on = proba >= self.thresholds_
        return [[str(c) for c in self.classes_[row]] for row in on]

    def predict_sets(self, X: Texts) -> list[list[str]]:
        return self.sets_from_proba(self.predict_proba(X))

    def labels_from_proba(self, proba: np.ndarray, familiarity: np.ndarray | None = None) -> np.ndarray:
        """The most probable label of each message (for consumers of one label)."""
        return np.asarray(self.classes_[np.argmax(proba, axis=1)]).astype(str)

    def predict_and_proba(self, X: Texts) -> tuple[np.ndarray, np.ndarray]:
        proba = self.predict_proba(X)
        return self.labels_from_proba(proba), proba

    def predict_one(self, text: str) -> tuple[str, float, np.ndarray]:
        self._check_fitted()
        p = self.proba_from_scores(self.decision_one(text))
        i = int(np.argmax(p))
        return str(self.classes_[i]), float(p[i]), p

    # ------------------------------------------------------------------ state
    def get_state(self) -> tuple[JSONDict, dict[str, np.ndarray]]:
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


class MultiLabelScores(TypedDict):
    """How indicator predictions score against the truth, over all labels and per label."""

    n: int
    micro_f1: float
    macro_f1: float
    samples_f1: float
    subset_accuracy: float
    hamming_loss: float
    per_label: dict[str, dict[str, float]]


class Cooccurrence(TypedDict):
    """Two labels given together, and on how many training messages."""

    labels: list[str]
    messages: int


class ConfusedPair(TypedDict):
    true: str
    predicted: str
    count: int


def multilabel_metrics(Y: np.ndarray, P: np.ndarray, classes: Sequence[str]) -> MultiLabelScores:
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


def confused_pairs(Y: np.ndarray, P: np.ndarray, classes: Sequence[str], top: int = 10) -> list[ConfusedPair]:
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
