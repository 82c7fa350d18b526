"""Very many labels: one sparse TF-IDF centroid per label, the nearest one wins.

A linear model keeps a weight for every (feature, label) pair: with 10,000 labels and a few
hundred thousand n-grams that is billions of numbers, and one-vs-rest training fits 10,000
classifiers. This family keeps, for each label, the mean of its messages' TF-IDF rows pruned to
its ``keep`` strongest n-grams and scaled to unit length, so the model grows with labels × keep,
and training is one sparse product, whatever the number of labels. A message's scores are its
cosine similarities to the centroids; a temperature turns them into calibrated probabilities.

:func:`train_many_labels` is what :func:`offramp.training.train.train` runs when the data has
more than ``MANY_LABELS`` labels: figures come from one held-out message per label (up to 2,000),
and the temperature is fitted on them.
"""

from __future__ import annotations

import time
from numbers import Integral
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import Interval

from offramp.estimators.base import register_family, softmax
from offramp.estimators.calibration import expected_calibration_error, fit_temperature
from offramp.estimators.features import NgramFeaturizer
from offramp.estimators.tfidf import Features, TfidfLinear
from offramp.types import JSONDict, Texts

MANY_LABELS = 1000  # above this many labels, train() uses this family
HOLDOUT = 2000  # held-out messages (one per label) for the figures and the temperature
_TEMPERATURE_CELLS = 4_000_000  # the temperature is fitted on at most this many (message, label) scores
_CHUNK = 512  # messages scored at once (keeps the dense block at 512 x labels)


@register_family
class TfidfCentroid(TfidfLinear):
    """Nearest sparse TF-IDF centroid, for thousands of labels.

    Parameters
    ----------
    word_ngrams, char_ngrams, min_df : the fast tier's features.
    keep : n-grams kept per label's centroid (the strongest by weight).
    seed : unused (the fit is deterministic); kept for a uniform interface.
    """

    family = "tfidf-centroid"
    _parameter_constraints: dict = {
        **TfidfLinear._parameter_constraints,
        "keep": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        word_ngrams: Sequence[int] | None = (1, 2),
        char_ngrams: Sequence[int] | None = (1, 4),
        min_df: int = 1,
        keep: int = 256,
        seed: int = 0,
    ):
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.min_df = min_df
        self.keep = keep
        self.seed = seed

    def feature_key(self) -> str:
        return "centroid|" + super().feature_key()

    def fit_features(self, state: object, X: Features, labels: Sequence[str] | np.ndarray) -> TfidfCentroid:
        y = np.asarray(labels, dtype=object).astype(str)
        self._reset()
        classes, inv = np.unique(y, return_inverse=True)
        n, k = X.shape[0], len(classes)
        member = sp.csr_matrix((np.ones(n, dtype=np.float32), (inv, np.arange(n))), shape=(k, n))
        C = (member @ sp.csr_matrix(X, dtype=np.float32)).tocsr()
        C.sum_duplicates()
        indptr, indices, data = C.indptr, C.indices, C.data
        keep_rows, keep_cols, keep_vals = [], [], []
        for r in range(k):  # prune each label's centroid to its strongest n-grams
            a, b = indptr[r], indptr[r + 1]
            cols, vals = indices[a:b], data[a:b]
            if b - a > self.keep:
                top = np.argpartition(-np.abs(vals), self.keep - 1)[: self.keep]
                cols, vals = cols[top], vals[top]
            norm = float(np.sqrt((vals.astype(np.float64) ** 2).sum())) or 1.0
            keep_rows.append(np.full(len(cols), r, dtype=np.int64))
            keep_cols.append(cols.astype(np.int64))
            keep_vals.append((vals / norm).astype(np.float32))
        rows, cols = np.concatenate(keep_rows), np.concatenate(keep_cols)
        centroids = sp.csr_matrix((np.concatenate(keep_vals), (rows, cols)), shape=(k, X.shape[1]), dtype=np.float32)
        self._set_feature_state(state)
        self.classes_ = classes.astype(str)
        self._set_centroids(centroids)
        return self

    def _set_centroids(self, centroids: sp.csr_matrix) -> None:
        self.centroids_ = centroids.tocsr()
        self.coef_ = self.centroids_.T.tocsr()  # features x labels: a message's rows gathered at once
        self.intercept_ = np.zeros(len(self.classes_), dtype=np.float32)

    # ------------------------------------------------------------------ predict
    def _scores(self, texts: Sequence[str]) -> np.ndarray:
        X = self.featurizer_.transform(texts)
        out = np.empty((X.shape[0], len(self.classes_)), dtype=np.float32)
        for a in range(0, X.shape[0], _CHUNK):
            out[a : a + _CHUNK] = (X[a : a + _CHUNK] @ self.coef_).toarray()
        return out

    def decision_function(self, X: Texts) -> np.ndarray:
        from offramp.estimators.base import as_texts

        self._check_fitted()
        return self._scores(as_texts(X))

    def decision_one(self, text: str) -> np.ndarray:
        cols, w = self.featurizer_.transform_one(text)
        return np.asarray(self.coef_[cols].T @ np.asarray(w, dtype=np.float32)).ravel()

    def predict(self, X: Texts) -> np.ndarray:
        """Top labels, block by block (never a dense messages x labels matrix for all of them)."""
        from offramp.estimators.base import as_texts

        self._check_fitted()
        if self.reject_threshold_ is not None:
            return self.predict_and_proba(X)[0]
        texts = as_texts(X)
        out = []
        for a in range(0, len(texts), _CHUNK):
            out.append(self.classes_[np.argmax(self._scores(texts[a : a + _CHUNK]), axis=1)])
        return np.concatenate(out) if out else np.asarray([], dtype=str)

    # ------------------------------------------------------------------ state
    def get_state(self) -> tuple[JSONDict, dict[str, np.ndarray]]:
        meta = {"params": self.stored_params(), "featurizer": self.featurizer_.get_config(), **self.common_meta()}
        c = self.centroids_
        arrays = {
            "centroid_indptr": c.indptr.astype(np.int64),
            "centroid_indices": c.indices.astype(np.int64),
            "centroid_data": c.data.astype(np.float32),
            **self.featurizer_.get_state(),
        }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TfidfCentroid:
        m = cls(**meta["params"])
        m.featurizer_ = NgramFeaturizer.from_state(meta["featurizer"], arrays)
        m.load_common(meta)
        k, f = len(m.classes_), m.featurizer_.n_features_
        indptr = np.asarray(arrays["centroid_indptr"], dtype=np.int64)
        indices = np.asarray(arrays["centroid_indices"], dtype=np.int64)
        data = np.asarray(arrays["centroid_data"], dtype=np.float32)
        if (
            indptr.shape != (k + 1,)
            or indptr[0] != 0
            or indptr[-1] != len(indices)
            or (np.diff(indptr) < 0).any()
            or indices.shape != data.shape
            or (len(indices) and (indices.min() < 0 or indices.max() >= f))
            or not np.isfinite(data).all()
        ):
            raise ValueError("the label centroids do not match the vocabulary and labels")
        if m.reject_familiarity_weight_:
            raise ValueError("a don't-know rule with nearness to the training data needs sentence vectors")
        m._set_centroids(sp.csr_matrix((data, indices, indptr), shape=(k, f)))
        return m


def holdout_rows(y: np.ndarray, seed: int, size: int = HOLDOUT) -> np.ndarray:
    """One message of each label that has at least two (so it stays in training), at most ``size``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for lab in y:
        counts[lab] = counts.get(lab, 0) + 1
    out = []
    for i in order:
        lab = y[i]
        if counts[lab] >= 2 and lab not in seen:
            seen.add(lab)
            out.append(i)
            if len(out) >= size:
                break
    return np.sort(np.asarray(out, dtype=np.int64))


def train_many_labels(texts: list[str], y: np.ndarray, seed: int = 0) -> tuple[TfidfCentroid, dict[str, Any]]:
    """Fit the centroid model: figures and temperature from held-out messages, then a refit on
    every message. Returns the model and its figures (held-out macro-F1 and accuracy on the
    held-out messages' labels, calibration error before and after, seconds)."""
    from sklearn.metrics import accuracy_score, f1_score

    t0 = time.perf_counter()
    proto = TfidfCentroid(seed=seed)
    state, X = proto.build_features(texts)
    held = holdout_rows(y, seed)
    figures: dict[str, Any] = {"holdout": int(len(held))}
    temperature = 0.05
    if len(held):
        rest = np.setdiff1d(np.arange(len(y)), held)
        m = TfidfCentroid(seed=seed).fit_features(state, X[rest], y[rest])
        scores = np.vstack([(X[held[a : a + _CHUNK]] @ m.coef_).toarray() for a in range(0, len(held), _CHUNK)])
        pos = {c: j for j, c in enumerate(m.classes_)}
        truth = np.asarray([pos[lab] for lab in y[held]])
        # one number to fit: a random subset of the held-out rows keeps each of its ~50 trials
        # to a few million scores, whatever the number of labels
        fit_rows = max(200, _TEMPERATURE_CELLS // max(1, len(m.classes_)))
        pick = np.random.default_rng(seed).permutation(len(held))[:fit_rows]
        temperature = fit_temperature(scores[pick], truth[pick])
        pred = m.classes_[np.argmax(scores, axis=1)]
        figures.update(
            macro_f1=float(f1_score(y[held], pred, average="macro", labels=np.unique(y[held]))),
            accuracy=float(accuracy_score(y[held], pred)),
            ece_before=float(expected_calibration_error(softmax(scores, 1.0), truth)),
            ece_after=float(expected_calibration_error(softmax(scores, temperature), truth)),
            confidence=softmax(scores, temperature).max(axis=1).astype(np.float32),
            predicted=np.argmax(scores, axis=1).astype(np.int32),
        )
    model = TfidfCentroid(seed=seed).fit_features(state, X, y)
    model.temperature_ = float(temperature)
    figures["seconds"] = time.perf_counter() - t0
    return model, figures
