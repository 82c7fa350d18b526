"""The whole model search as one scikit-learn estimator: :class:`AutoTextClassifier`."""

from __future__ import annotations

import os

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from offramp.estimators.base import TextClassifier
from offramp.training.report import TrainReport
from offramp.training.train import train
from offramp.types import Labels, Texts


class AutoTextClassifier(ClassifierMixin, BaseEstimator):
    """:func:`~offramp.training.train.train` behind scikit-learn's contract: ``fit`` runs the
    model search (candidates, calibration, the "don't know" rule) and keeps the winner, so the
    whole search can run inside ``cross_val_score``, ``GridSearchCV`` or a ``Pipeline``.

    Parameters are those of :func:`~offramp.training.train.train`; after ``fit``, ``model_`` is
    the chosen estimator, ``report_`` the :class:`~offramp.training.report.TrainReport` of the
    search and ``classes_`` its labels.

    Example
    -------
    >>> from sklearn.model_selection import cross_val_score
    >>> from offramp import AutoTextClassifier
    >>> texts = ["reset my pin", "thanks a lot", "how do I reset the pin", "thank you!"] * 6
    >>> labels = ["SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE"] * 6
    >>> clf = AutoTextClassifier(quality="fast", time_limit=None)
    >>> float(cross_val_score(clf, texts, labels, cv=3).mean())
    1.0
    """

    def __init__(
        self,
        quality: str = "auto",
        time_limit: float | str | None = "auto",
        seed: int = 0,
        reject_target: str | None = None,
        oos_label: str | None = None,
        latency_budget_ms: float | None = None,
        encoder_name: str = "auto",
    ):
        self.quality = quality
        self.time_limit = time_limit
        self.seed = seed
        self.reject_target = reject_target
        self.oos_label = oos_label
        self.latency_budget_ms = latency_budget_ms
        self.encoder_name = encoder_name

    def fit(self, X: Texts, y: Labels) -> AutoTextClassifier:
        model, report = train(
            X,
            y,
            quality=self.quality,
            time_limit=self.time_limit,
            seed=self.seed,
            reject_target=self.reject_target,
            oos_label=self.oos_label,
            latency_budget_ms=self.latency_budget_ms,
            encoder_name=self.encoder_name,
        )
        assert isinstance(report, TrainReport)
        self.model_: TextClassifier = model
        self.report_: TrainReport = report
        self.classes_ = model.classes_
        return self

    def predict(self, X: Texts) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict(X)

    def predict_proba(self, X: Texts) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(X)

    def decision_function(self, X: Texts) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.decision_function(X)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the chosen model's directory (load it back with :func:`offramp.load`)."""
        check_is_fitted(self, "model_")
        self.model_.save(path)
