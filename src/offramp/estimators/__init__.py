"""The estimators: scikit-learn classifiers over texts, calibrated, with a "don't know", saved without pickle."""

from offramp.estimators import centroid, multilabel, stacked, tfidf  # noqa: F401  (each registers its family)
