"""The fast tier: word + character n-gram TF-IDF with a linear classifier.

Training uses scikit-learn's liblinear solvers; prediction is a sparse product with the learned
weights, so a loaded model needs only numpy and scipy. Weights are rounded to float16 at fit time
(halving the model directory) and used as float32, so a model predicts exactly the same before
and after a save/load round trip.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar, Union

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import Interval, StrOptions

from offramp.estimators.base import TextClassifier, as_labels, as_texts, register_family
from offramp.estimators.features import NgramFeaturizer, csr_dot
from offramp.types import JSONDict, Labels, Texts

Features = Union["sp.spmatrix", np.ndarray]  # a feature matrix: sparse n-grams, dense embeddings, or both
if TYPE_CHECKING:  # the solvers are imported when a model is fitted, not when one is loaded
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

SMALL_BATCH = 32  # up to this many texts, scores are summed with numpy: cheaper than building a scipy sparse matrix

LOSSES = ("svm", "logreg")
T = TypeVar("T")


def _in_parallel(work: Callable[[Sequence[str]], T], texts: Sequence[str], join: Callable[[list[T]], T]) -> T:
    """``work(texts)``, in chunks on a few threads for a large batch (the numpy work releases the
    GIL); the micro-batches of a service run as they are (no thread pool, nor a look at the cores)."""
    n = len(texts)
    workers = min(os.cpu_count() or 1, 4) if n >= 8192 else 1
    if workers < 2:
        return work(texts)
    step = -(-n // (workers * 4))
    chunks = [texts[i : i + step] for i in range(0, n, step)]
    with ThreadPoolExecutor(workers) as pool:
        return join(list(pool.map(work, chunks)))


def check_ngram_range(name: str, value: object) -> None:
    """``value`` must be None or a (min_n, max_n) pair with 1 <= min_n <= max_n <= 8."""
    if value is None:
        return
    pair = isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value)
    if not (pair and isinstance(value, (tuple, list)) and 1 <= value[0] <= value[1] <= 8):
        raise ValueError(f"{name} must be None or (min_n, max_n) with 1 <= min_n <= max_n <= 8, got {value!r}")


def make_linear(loss: str, C: float, seed: int) -> LinearSVC | LogisticRegression:
    """The scikit-learn linear model behind a loss name."""
    if loss == "svm":
        from sklearn.svm import LinearSVC

        return LinearSVC(C=C, random_state=seed)
    if loss == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=1000, random_state=seed)
    raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")


def model_weights(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A scikit-learn linear model's (1 or n_classes, n_features) weights as a model stores them:
    (n_features, n_classes), float16 precision held as float32, so predictions are the same
    before and after a save. Binary: one score s for the second class becomes (-s/2, s/2)."""
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64).ravel()
    if coef.shape[0] == 1:
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return coef.T.astype(np.float16).astype(np.float32), intercept.astype(np.float32)


@register_family
class TfidfLinear(TextClassifier):
    """TF-IDF (words + characters) and a linear classifier.

    Parameters
    ----------
    word_ngrams, char_ngrams, min_df : see :class:`NgramFeaturizer`.
    loss : "svm" (LinearSVC) or "logreg" (LogisticRegression).
    C : inverse regularisation strength.
    seed : random seed passed to the solver.

    Example
    -------
    >>> m = TfidfLinear(min_df=1).fit(["reset my pin", "thank you", "pin reset please", "thanks!"],
    ...                              ["SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE"])
    >>> str(m.predict(["how do I reset my pin"])[0])
    'SUPPORT'
    """

    family = "tfidf-linear"
    featurizer_: NgramFeaturizer
    coef_: np.ndarray
    intercept_: np.ndarray

    _parameter_constraints: dict = {
        "word_ngrams": [tuple, list, None],
        "char_ngrams": [tuple, list, None],
        "min_df": [Interval(Integral, 1, None, closed="left")],
        "loss": [StrOptions(set(LOSSES))],
        "C": [Interval(Real, 0, None, closed="neither")],
        "seed": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        word_ngrams: Sequence[int] | None = (1, 2),
        char_ngrams: Sequence[int] | None = (1, 4),
        min_df: int = 2,
        loss: str = "svm",
        C: float = 1.0,
        seed: int = 0,
    ):
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.min_df = min_df
        self.loss = loss
        self.C = C
        self.seed = seed

    def _check_params(self) -> None:
        """The parameters' types and ranges (scikit-learn's declared constraints), and the n-gram ranges."""
        self._validate_params()
        check_ngram_range("word_ngrams", self.word_ngrams)
        check_ngram_range("char_ngrams", self.char_ngrams)
        if not (self.word_ngrams or self.char_ngrams):
            raise ValueError("word_ngrams and char_ngrams cannot both be None: the model would have no features")

    def make_featurizer(self) -> NgramFeaturizer:
        return NgramFeaturizer(self.word_ngrams, self.char_ngrams, min_df=self.min_df)

    # Model selection shares features between candidates: candidates with the same feature_key()
    # reuse one build_features() result, and only the linear part is fitted per fold.
    def feature_key(self) -> str:
        return repr(self.make_featurizer().get_config())

    def build_features(self, texts: Sequence[str]) -> tuple[object, Features]:
        """(feature state, feature matrix) for ``texts``; the state is fitted without labels."""
        featurizer = self.make_featurizer().fit(texts)
        return featurizer, featurizer.transform(texts)

    def _set_feature_state(self, state: object) -> None:
        assert isinstance(state, NgramFeaturizer)
        self.featurizer_ = state

    # ------------------------------------------------------------------ fit
    def fit(self, X: Texts, y: Labels) -> TfidfLinear:
        """Learn from texts ``X`` and their labels ``y`` (at least two distinct labels)."""
        self._check_params()
        texts = as_texts(X)
        labels = as_labels(y, len(texts))
        if len(set(labels)) < 2:
            raise ValueError(f"a classifier needs at least two labels; got {sorted(set(labels))}")
        state, features = self.build_features(texts)
        return self.fit_features(state, features, labels)

    def fit_features(self, state: object, X: Features, labels: Sequence[str] | np.ndarray) -> TfidfLinear:
        """Fit the linear part on a feature matrix that ``build_features`` produced."""
        y = np.asarray(labels, dtype=object).astype(str)
        self._reset()
        clf = make_linear(self.loss, self.C, self.seed).fit(X, y)
        self._set_feature_state(state)
        self.classes_ = np.asarray(clf.classes_).astype(str)
        self.coef_, self.intercept_ = model_weights(clf.coef_, clf.intercept_)
        return self

    # ------------------------------------------------------------------ predict
    def _scores(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) <= SMALL_BATCH:
            indptr, cols, data = self.featurizer_.transform_arrays(texts)
            return csr_dot(indptr, cols, data, self.coef_) + self.intercept_
        return np.asarray(self.featurizer_.transform(texts) @ self.coef_) + self.intercept_

    def decision_function(self, X: Texts) -> np.ndarray:
        self._check_fitted()
        return _in_parallel(self._scores, as_texts(X), np.vstack)

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        """The n-gram features of ``texts`` (what :meth:`scores_of` takes); a model whose featurizer
        has the same :meth:`~NgramFeaturizer.fingerprint` gives the same matrix."""
        self._check_fitted()
        return _in_parallel(self.featurizer_.transform, list(texts), lambda parts: sp.vstack(parts, format="csr"))

    def scores_of(self, features: sp.csr_matrix) -> np.ndarray:
        """:meth:`decision_function` from the texts' :meth:`features` (a model that scores with more
        than its n-grams, as the stacked and centroid ones do, has no such shortcut)."""
        if type(self).decision_function is not TfidfLinear.decision_function:
            raise NotImplementedError(f"{type(self).__name__} scores with more than its n-gram features")
        return np.asarray(features @ self.coef_) + self.intercept_

    def decision_one(self, text: str) -> np.ndarray:
        cols, w = self.featurizer_.transform_one(text)
        return w @ self.coef_[cols] + self.intercept_

    # ------------------------------------------------------------------ state
    def get_state(self) -> tuple[JSONDict, dict[str, np.ndarray]]:
        f_arrays = self.featurizer_.get_state()
        meta = {
            "params": self.stored_params(),
            "featurizer": self.featurizer_.get_config(),
            **self.common_meta(),
        }
        arrays = {"coef": self.coef_.astype(np.float16), "intercept": self.intercept_, **f_arrays}
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TfidfLinear:
        m = cls(**meta["params"])
        m.featurizer_ = NgramFeaturizer.from_state(meta["featurizer"], arrays)
        m.load_common(meta)
        m.coef_ = np.asarray(arrays["coef"]).astype(np.float32)
        m.intercept_ = np.asarray(arrays["intercept"]).astype(np.float32)
        if m.coef_.shape != (m.featurizer_.n_features_, len(m.classes_)) or m.intercept_.shape != (len(m.classes_),):
            raise ValueError("weights do not match the vocabulary and classes")
        if m.reject_familiarity_weight_:
            raise ValueError(
                "a don't-know rule with nearness to the training data needs sentence vectors, "
                "which this model family does not have"
            )
        return m
