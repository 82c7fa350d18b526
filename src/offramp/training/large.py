"""Training on more rows than one feature matrix can hold: search on a sample, refit by streaming.

Above :data:`LARGE_ROWS` training rows, the candidates are cross-validated on a stratified sample
(:data:`SEARCH_ROWS`, every label kept) and the winner is then refitted on every row but a
stratified held-out slice, in chunks: each chunk of texts becomes features, updates a linear model
by stochastic gradient descent (the winner's loss and regularisation, averaged), and is dropped.
Memory is one chunk's features plus the weights, whatever the number of rows. The held-out slice
then decides, on texts neither model saw, whether the refit beats the sample's model (it is kept
only if it does) and calibrates the kept model's probabilities.

The featurizer (which n-grams are kept, their IDF) is the one fitted on the sample: a sample of
this size estimates document frequencies well, and n-grams seen only outside it carry no weight.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import f1_score

from offramp.estimators.base import softmax
from offramp.estimators.calibration import expected_calibration_error, fit_temperature
from offramp.estimators.tfidf import TfidfLinear, model_weights

LARGE_ROWS = 300_000  # above this many rows, search on a sample and refit by streaming
SEARCH_ROWS = 100_000  # the search's sample
HOLDOUT_ROWS = 20_000  # the slice that judges and calibrates the refit
CHUNK_ROWS = 50_000
EPOCHS = 3
# peak resident memory of `offramp train` per byte of data read, measured with the fast tier on a
# 240 MB CSV of 2.04 M rows (2.48 GB: the rows as Python strings while they are read, the sample's
# search, the streamed refit), rounded up; plus what the process holds before reading anything
BYTES_PER_DATA_BYTE = 11
BASE_BYTES = 400 * 2**20


def training_memory(data_bytes: int) -> int:
    """About the peak memory `offramp train` needs for ``data_bytes`` of data (see above)."""
    return BASE_BYTES + BYTES_PER_DATA_BYTE * data_bytes


def default_memory_budget() -> int:
    """80% of this machine's memory (what the kernel would otherwise enforce by killing us)."""
    try:
        return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return 4 * 2**30


@dataclass
class Refit:
    kept: str  # "refit" or "sample"
    rows: int  # rows the refit learned from
    epochs: int
    holdout_rows: int
    holdout_macro_f1_sample: float
    holdout_macro_f1_refit: float
    seconds: float
    ece_before: float
    ece_after: float
    note: str


def stratified_sample(y: np.ndarray, k: int, seed: int, at_least: int = 3, at_most: float = 1.0) -> np.ndarray:
    """Sorted indices of about ``k`` rows: each label in proportion, at least min(its count,
    ``at_least``) times and at most ``at_most`` of its rows."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(y))
    labels, inverse = np.unique(y, return_inverse=True)
    share = k / max(1, len(idx))
    picked = []
    for c in range(len(labels)):
        members = idx[inverse == c]
        take = min(int(len(members) * at_most), max(at_least, int(round(len(members) * share))))
        picked.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def refit_streaming(
    model: TfidfLinear,
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    seed: int = 0,
    deadline: float | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Refit:
    """Refit ``model``'s linear part on every row of ``texts`` in chunks (see the module docstring);
    ``model`` is changed in place only if the refit scores better on the held-out slice.
    ``deadline`` (a ``time.perf_counter()`` value) stops after the epoch that passes it."""
    from sklearn.linear_model import SGDClassifier

    t0 = time.perf_counter()
    say = on_progress or (lambda _m: None)
    y_str = np.asarray(labels).astype(str)
    classes = np.asarray(model.classes_).astype(str)
    y = np.searchsorted(classes, y_str)
    # at most a fifth of any label: a rare label keeps most of its rows for learning
    hold = stratified_sample(y_str, min(HOLDOUT_ROWS, max(1000, len(y) // 50)), seed + 1, at_least=0, at_most=0.2)
    rest = np.ones(len(y), dtype=bool)
    rest[hold] = False
    order = np.random.default_rng(seed).permutation(np.flatnonzero(rest))
    feat = model.featurizer_
    clf = SGDClassifier(
        loss="hinge" if model.loss == "svm" else "log_loss",
        alpha=1.0 / (model.C * len(order)),  # the same objective as the solver's C on these rows
        average=True,
        random_state=seed,
        n_jobs=os.cpu_count() or 1,
    )
    all_classes = np.arange(len(classes))
    epochs = 0
    note = ""
    for epoch in range(EPOCHS):
        for start in range(0, len(order), CHUNK_ROWS):
            part = order[start : start + CHUNK_ROWS]
            X = feat.transform([texts[i] for i in part])
            clf.partial_fit(X, y[part], classes=all_classes)
            say(f"refitting on all rows: epoch {epoch + 1}, {min(start + CHUNK_ROWS, len(order)):,} of {len(order):,}")
        epochs += 1
        if deadline is not None and time.perf_counter() > deadline and epoch + 1 < EPOCHS:
            note = f"the refit stopped after {epochs} of {EPOCHS} passes over the rows: the time limit"
            break
    coef, intercept = model_weights(clf.coef_, clf.intercept_)
    Xh = feat.transform([texts[i] for i in hold])
    yh = y[hold]
    before = np.asarray(Xh @ model.coef_) + model.intercept_
    after = np.asarray(Xh @ coef) + intercept
    f1_before = float(f1_score(yh, before.argmax(axis=1), average="macro"))
    f1_after = float(f1_score(yh, after.argmax(axis=1), average="macro"))
    kept = "refit" if f1_after >= f1_before else "sample"
    scores = after if kept == "refit" else before
    if kept == "refit":
        model.coef_, model.intercept_ = coef, intercept
    temperature = fit_temperature(scores, yh)
    model.temperature_ = temperature
    return Refit(
        kept=kept,
        rows=len(order),
        epochs=epochs,
        holdout_rows=len(hold),
        holdout_macro_f1_sample=f1_before,
        holdout_macro_f1_refit=f1_after,
        seconds=time.perf_counter() - t0,
        ece_before=expected_calibration_error(softmax(scores, 1.0), yh),
        ece_after=expected_calibration_error(softmax(scores, temperature), yh),
        note=note,
    )
