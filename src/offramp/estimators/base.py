"""The estimator contract every offramp model follows: scikit-learn's.

``__init__`` only stores its parameters; ``fit(X, y)`` validates them and the data, learns, and
returns ``self``; learned state ends in ``_`` (``classes_``, ``temperature_``), so ``clone``,
``cross_val_score`` and ``GridSearchCV`` work on a list of texts. ``decision_function`` gives raw
class scores; ``predict_proba`` turns them into calibrated probabilities (softmax of scores /
temperature); ``predict`` picks the most probable label, or the reject label where a fitted
"don't know" rule says so. ``save(dir)`` / ``load(dir)`` go through :mod:`offramp.modeldir.store`,
which writes JSON and ``.npz`` arrays only: nothing that runs code on load.

``X`` may be a list, tuple, NumPy array, pandas Series or pyarrow array of strings, or any iterable
of strings; ``y`` the same, of labels (kept as strings).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from os import PathLike
from typing import Any, ClassVar, TypeVar, Union

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from offramp.errors import InputError, ModelDirError, OfframpError
from offramp.modeldir import store
from offramp.types import JSONDict, Labels, Texts

M = TypeVar("M", bound="TextClassifier")
Score = Union[float, np.ndarray]  # one message's, or an array of them


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return np.asarray(z)


def top_labels(classes: np.ndarray, proba: np.ndarray, k: int) -> list[JSONDict]:
    """The ``k`` most probable labels of one message with their probabilities, best first."""
    order = np.argsort(-proba)[:k]
    return [{"label": str(classes[i]), "score": round(float(proba[i]), 6)} for i in order]


def _column(values: object, what: str = "texts") -> list[object]:
    """A one-dimensional collection as a list (pyarrow and pandas columns, arrays, iterables)."""
    if isinstance(values, (str, bytes)):
        raise InputError(f"expected a collection of {what}, got a single string", "wrap it in a list")
    if hasattr(values, "to_pylist"):  # pyarrow Array / ChunkedArray
        return list(values.to_pylist())
    if hasattr(values, "columns") and hasattr(values, "iloc"):  # a pandas DataFrame
        if len(values.columns) != 1:
            raise InputError(
                f"expected one column of texts, got a table with {len(values.columns)} columns",
                "pass the text column, e.g. df['text']",
            )
        values = values.iloc[:, 0]
    if hasattr(values, "tolist"):  # NumPy arrays, pandas Series
        arr = values.tolist()
        if arr and isinstance(arr[0], list):
            raise InputError("expected a one-dimensional collection of texts, got a table", "pass one column of texts")
        return list(arr)
    if isinstance(values, Iterable):
        return list(values)
    raise InputError(f"expected a collection of {what}, got {type(values).__name__}")


def as_texts(X: Texts) -> list[str]:
    """``X`` as a list of str; anything that is not text is refused by position."""
    texts: list[str] = []
    for i, t in enumerate(_column(X)):
        if not isinstance(t, str):
            raise InputError(
                f"text {i} is {type(t).__name__}, not a string",
                "drop or fill missing texts before training or predicting",
            )
        texts.append(t)
    return texts


def as_labels(y: Labels | None, n: int) -> np.ndarray:
    """``y`` as an array of label strings, as long as the texts."""
    labels = _column(y, "labels")
    if len(labels) != n:
        raise InputError(f"{n} texts but {len(labels)} labels", "give one label per text")
    for i, lab in enumerate(labels):
        if lab is None or (isinstance(lab, float) and lab != lab):
            raise InputError(f"label {i} is missing", "drop or fill rows without a label")
    return np.asarray([str(lab) for lab in labels], dtype=object).astype(str)


class TextClassifier(ClassifierMixin, BaseEstimator):
    """Base class: subclasses implement ``fit``, ``decision_function`` and the state hooks."""

    family: ClassVar[str] = ""
    classes_: np.ndarray
    temperature_: float = 1.0
    reject_threshold_: float | None = None  # below this confidence the answer is reject_label_
    reject_label_: str | None = None
    reject_familiarity_weight_: float = 0.0  # weight of nearest-example similarity in the reject score
    # what train() learned about the data and the search (info, metrics, fingerprints), kept so
    # that save() writes the model card and evaluate() can check for leakage
    training_record_: dict[str, Any] | None = None

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.input_tags.string = True
        return tags

    # -- learning ---------------------------------------------------------------
    def fit(self: M, X: Texts, y: Labels) -> M:  # pragma: no cover - every family implements it
        raise NotImplementedError

    def _reset(self) -> None:
        """Forget what an earlier fit learned beyond the weights (calibration, rejection, record)."""
        self.temperature_ = 1.0
        self.reject_threshold_ = None
        self.reject_label_ = None
        self.reject_familiarity_weight_ = 0.0
        self.training_record_ = None

    def _check_fitted(self) -> None:
        if "classes_" not in self.__dict__:
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(texts, labels) "
                "or load a model directory first"
            )

    def decision_function(self, X: Texts) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def decision_one(self, text: str) -> np.ndarray:
        """Scores for one message; families override this with a faster path."""
        return np.asarray(self.decision_function([text])[0])

    # -- prediction ---------------------------------------------------------------
    def predict_proba(self, X: Texts) -> np.ndarray:
        self._check_fitted()
        return softmax(self.decision_function(X), self.temperature_)

    def reject_score(self, confidence: Score, familiarity: Score | None = None) -> Score:
        """The score the rejection threshold applies to: confidence, plus the weighted similarity to
        the nearest in-scope training message for models that measure it."""
        if familiarity is None or not self.reject_familiarity_weight_:
            return confidence
        return confidence + self.reject_familiarity_weight_ * familiarity

    def rejects(self, confidence: Score, familiarity: Score | None = None) -> Score:
        """The "don't know" rule, stated once for every path (batches, micro-batches, single
        messages): True where the reject score is under the fitted threshold."""
        if self.reject_threshold_ is None:
            return np.zeros(np.shape(confidence), dtype=bool) if np.ndim(confidence) else False
        return self.reject_score(confidence, familiarity) < self.reject_threshold_

    def labels_from_proba(self, proba: np.ndarray, familiarity: np.ndarray | None = None) -> np.ndarray:
        """Top labels, with the reject label where the reject score is under the fitted threshold."""
        labels = self.classes_[np.argmax(proba, axis=1)].astype(object)
        if self.reject_threshold_ is not None:
            if self.reject_familiarity_weight_ and familiarity is None:
                raise ValueError(
                    "this model's don't-know rule needs each message's nearness to the training data; "
                    "use predict_and_proba(texts)"
                )
            labels[self.rejects(proba.max(axis=1), familiarity)] = self.reject_label_
        return np.asarray(labels.astype(str))

    def predict_and_proba(self, X: Texts) -> tuple[np.ndarray, np.ndarray]:
        """(labels, with the reject label where the model does not know; calibrated probabilities)."""
        proba = self.predict_proba(X)
        return self.labels_from_proba(proba), proba

    def predict(self, X: Texts) -> np.ndarray:
        self._check_fitted()
        if self.reject_threshold_ is None:
            return np.asarray(self.classes_[np.argmax(self.decision_function(X), axis=1)])
        return self.predict_and_proba(X)[0]

    def predict_one(self, text: str) -> tuple[str, float, np.ndarray]:
        """(label, confidence, probabilities) for a single message, on the fast path.

        When the reject score is under the rejection threshold the label is the reject label and the
        confidence is the top probability that fell short.
        """
        self._check_fitted()
        p = softmax(self.decision_one(text), self.temperature_)
        i = int(np.argmax(p))
        if self.rejects(p[i]):
            return str(self.reject_label_), float(p[i]), p
        return str(self.classes_[i]), float(p[i]), p

    def common_meta(self) -> JSONDict:
        """State every family stores: classes, temperature, rejection rule."""
        return {
            "classes": [str(c) for c in self.classes_],
            "temperature": float(self.temperature_),
            "reject": None
            if self.reject_threshold_ is None
            else {
                "threshold": float(self.reject_threshold_),
                "label": str(self.reject_label_),
                "familiarity_weight": float(self.reject_familiarity_weight_),
            },
        }

    def load_common(self, meta: dict[str, Any]) -> None:
        self.classes_ = np.asarray(meta["classes"]).astype(str)
        self.temperature_ = float(meta["temperature"])
        reject = meta.get("reject")
        if reject:
            self.reject_threshold_, self.reject_label_ = float(reject["threshold"]), str(reject["label"])
            self.reject_familiarity_weight_ = float(reject.get("familiarity_weight", 0.0))
            if not (
                np.isfinite(self.reject_threshold_)
                and np.isfinite(self.reject_familiarity_weight_)
                and self.reject_familiarity_weight_ >= 0
            ):
                raise ValueError("the don't-know rule's threshold or weight is not a usable number")

    def uncached(self) -> contextlib.AbstractContextManager[object]:
        """A context in which prediction computes everything afresh (for honest speed figures).

        Families that cache work between calls (the accurate tier caches sentence vectors)
        switch their cache off inside it; the fast tier has nothing to switch.
        """
        return contextlib.nullcontext(self)

    # -- persistence --------------------------------------------------------------
    def stored_params(self) -> JSONDict:
        """The constructor parameters as JSON values (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params(deep=False).items()}

    def get_state(self) -> tuple[JSONDict, dict[str, np.ndarray]]:  # pragma: no cover
        """(JSON-able description, named numeric arrays) that rebuild the fitted model."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TextClassifier:  # pragma: no cover
        raise NotImplementedError

    def save(self, path: str | PathLike[str]) -> None:
        """Write the model directory ``path`` (with the model card and metrics when ``train`` made it)."""
        self._check_fitted()
        record = self.training_record_ or {}
        store.save_model(
            self, path, metrics=record.get("metrics"), info=record.get("info"), extra_arrays=record.get("arrays")
        )

    @classmethod
    def load(cls, path: str | PathLike[str]) -> TextClassifier:
        """The model saved in ``path`` (its hashes checked); refused if it is not a ``cls``."""
        model = load_model(path)
        if not isinstance(model, cls):
            raise ModelDirError(f"{path} holds a {model.family} model, not a {cls.family or cls.__name__}")
        return model


# -- families by name ----------------------------------------------------------------
# each family registers itself with @register_family; the store never imports a family, so a new
# family is one module (imported by offramp.estimators, which imports the built-in ones)
_FAMILIES: dict[str, type[TextClassifier]] = {}

F = TypeVar("F", bound="type[TextClassifier]")


def register_family(cls: F) -> F:
    """Class decorator: make ``cls`` loadable from a model directory whose family is ``cls.family``."""
    name = cls.family
    if not name:
        raise ValueError(f"{cls.__name__} has no family name")
    if name in _FAMILIES and _FAMILIES[name] is not cls:
        raise ValueError(f"model family {name!r} is registered twice")
    _FAMILIES[name] = cls
    return cls


def family_class(name: str) -> type[TextClassifier] | None:
    """The class registered under ``name``, or None."""
    return _FAMILIES.get(name)


def load_model(path: str | PathLike[str]) -> TextClassifier:
    """The model in the model directory ``path``, its files checked against its manifest.

    The model keeps what training recorded (``training_record_``: the search, the metrics and the
    training-text fingerprints), so evaluating it can warn about test texts seen in training.
    (A registry's current version is loaded by :func:`offramp.registry.load`.)
    """
    stored = store.read_model_dir(path)
    doc = stored.doc
    cls = family_class(str(doc.get("family")))
    if cls is None:
        raise ModelDirError(
            f"{stored.path} holds a model family this offramp does not know: {doc.get('family')!r}",
            "upgrade offramp or retrain",
        )
    try:
        model = cls.from_state(doc, stored.arrays)
    except OfframpError:  # already says what is wrong and how to fix it (e.g. encoder not installed)
        raise
    except Exception as e:  # a directory whose hashes match but whose content is inconsistent
        raise ModelDirError(f"{stored.path} could not be loaded: {e}", "retrain or restore the directory") from None
    model.training_record_ = {
        "info": doc.get("info") or {},
        "metrics": stored.metrics,
        "arrays": {k[2:]: v for k, v in stored.arrays.items() if k.startswith("x_")},
        "source": str(stored.path),
    }
    return model
