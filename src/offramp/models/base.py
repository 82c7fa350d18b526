"""The estimator contract every offramp model follows.

``fit(texts, labels)`` learns and returns ``self``; ``decision_function`` gives raw class scores;
``predict_proba`` turns them into calibrated probabilities (softmax of scores / temperature);
``predict`` picks the most probable label. ``save(dir)`` / ``load(dir)`` go through
:mod:`offramp.models.store`, which writes JSON and ``.npz`` arrays only: nothing that runs code on load.
Learned attributes end with ``_`` (``classes_``, ``temperature_``), as in scikit-learn.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Sequence

import numpy as np


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


class TextClassifier:
    """Base class: subclasses implement ``fit``, ``decision_function`` and the state hooks."""

    family: ClassVar[str] = ""
    classes_: np.ndarray
    temperature_: float = 1.0
    reject_threshold_: float | None = None  # below this confidence the answer is reject_label_
    reject_label_: str | None = None
    reject_familiarity_weight_: float = 0.0  # weight of nearest-example similarity in the reject score

    # -- learning ---------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> "TextClassifier":  # pragma: no cover
        raise NotImplementedError

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def decision_one(self, text: str) -> np.ndarray:
        """Scores for one message; families override this with a faster path."""
        return self.decision_function([text])[0]

    # -- prediction ---------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.decision_function(texts), self.temperature_)

    def reject_score(self, confidence, familiarity=None):
        """The score the rejection threshold applies to: confidence, plus the weighted similarity to
        the nearest in-scope training message for models that measure it."""
        if familiarity is None or not self.reject_familiarity_weight_:
            return confidence
        return confidence + self.reject_familiarity_weight_ * familiarity

    def labels_from_proba(self, proba: np.ndarray, familiarity: np.ndarray | None = None) -> np.ndarray:
        """Top labels, with the reject label where the reject score is under the fitted threshold."""
        labels = self.classes_[np.argmax(proba, axis=1)].astype(object)
        if self.reject_threshold_ is not None:
            if self.reject_familiarity_weight_ and familiarity is None:
                raise ValueError("this model's don't-know rule needs each message's nearness to the training data; "
                                 "use predict_and_proba(texts)")
            labels[self.reject_score(proba.max(axis=1), familiarity) < self.reject_threshold_] = self.reject_label_
        return labels.astype(str)

    def predict_and_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(labels, with the reject label where the model does not know; calibrated probabilities)."""
        proba = self.predict_proba(texts)
        return self.labels_from_proba(proba), proba

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        if self.reject_threshold_ is None:
            return self.classes_[np.argmax(self.decision_function(texts), axis=1)]
        return self.predict_and_proba(texts)[0]

    def predict_one(self, text: str) -> tuple[str, float, np.ndarray]:
        """(label, confidence, probabilities) for a single message, on the fast path.

        When the reject score is under the rejection threshold the label is the reject label and the
        confidence is the top probability that fell short.
        """
        p = softmax(self.decision_one(text), self.temperature_)
        i = int(np.argmax(p))
        if self.reject_threshold_ is not None and p[i] < self.reject_threshold_:
            return str(self.reject_label_), float(p[i]), p
        return str(self.classes_[i]), float(p[i]), p

    def common_meta(self) -> dict[str, Any]:
        """State every family stores: classes, temperature, rejection rule."""
        return {
            "classes": [str(c) for c in self.classes_],
            "temperature": float(self.temperature_),
            "reject": None if self.reject_threshold_ is None
            else {"threshold": float(self.reject_threshold_), "label": str(self.reject_label_),
                  "familiarity_weight": float(self.reject_familiarity_weight_)},
        }

    def load_common(self, meta: dict[str, Any]) -> None:
        self.classes_ = np.asarray(meta["classes"]).astype(str)
        self.temperature_ = float(meta["temperature"])
        reject = meta.get("reject")
        if reject:
            self.reject_threshold_, self.reject_label_ = float(reject["threshold"]), str(reject["label"])
            self.reject_familiarity_weight_ = float(reject.get("familiarity_weight", 0.0))
            if not (np.isfinite(self.reject_threshold_) and np.isfinite(self.reject_familiarity_weight_)
                    and self.reject_familiarity_weight_ >= 0):
                raise ValueError("the don't-know rule's threshold or weight is not a usable number")

    def uncached(self):
        """A context in which prediction computes everything afresh (for honest speed figures).

        Families that cache work between calls (the accurate tier caches sentence vectors)
        switch their cache off inside it; the fast tier has nothing to switch.
        """
        return contextlib.nullcontext(self)

    # -- persistence --------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # pragma: no cover
        """(JSON-able description, named numeric arrays) that rebuild the fitted model."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "TextClassifier":  # pragma: no cover
        raise NotImplementedError

    def save(self, path, **extra) -> None:
        from offramp.models.store import save_model

        save_model(self, path, **extra)

    @classmethod
    def load(cls, path) -> "TextClassifier":
        from offramp.models.store import load_model

        return load_model(path)
