"""Temperature scaling and the calibration error it is judged by.

The temperature is fitted on out-of-fold scores (scores a model gave to texts it was not trained
on), so the probabilities it yields on new data mean what they say: among messages given 0.9,
about 90% are right. Expected calibration error (ECE) measures how far that holds.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from offramp.estimators.base import softmax


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """Temperature T minimising the negative log-likelihood of softmax(scores / T).

    ``y`` holds the index of the true class per row.
    """
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        p = softmax(scores, np.exp(log_t))
        return float(-np.log(np.clip(p[rows, y], 1e-12, None)).mean())

    res = minimize_scalar(nll, bounds=(np.log(1e-3), np.log(1e3)), method="bounded")
    return float(np.exp(res.x))


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| * share."""
    return ece_of(*_conf_correct(proba, y), n_bins=n_bins)


def ece_of(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE from each message's confidence and whether its top label was right (no probability
    matrix needed: what an evaluation of thousands of labels keeps, block by block)."""
    conf, correct = np.asarray(conf), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def reliability_bins(proba: np.ndarray, y: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Per confidence bin: mean confidence, accuracy and count (for a reliability diagram)."""
    return reliability_of(*_conf_correct(proba, y), n_bins=n_bins)


def reliability_of(conf: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> list[dict]:
    """:func:`reliability_bins` from each message's confidence and correctness."""
    conf, correct = np.asarray(conf), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "count": int(m.sum()),
                "confidence": float(conf[m].mean()) if m.any() else None,
                "accuracy": float(correct[m].mean()) if m.any() else None,
            }
        )
    return out


def _conf_correct(proba: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba)
    pred = proba.argmax(axis=1)
    return proba.max(axis=1), (pred == np.asarray(y)).astype(np.float64)
