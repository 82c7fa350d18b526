"""Find training rows whose label is probably wrong, and texts labelled two ways.

The suspects come from confident learning (Northcutt, Jiang and Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 2021), the method of the ``cleanlab`` library,
computed here from the model search's out-of-fold probabilities:

1. every label ``k`` gets a threshold ``t_k``: the mean probability of ``k`` over the rows labelled
   ``k`` (how sure the model is, on average, of rows of that label);
2. a row is *confidently* of class ``j`` when ``p_j >= t_j``; with several such classes the most
   probable one; with none the row is not counted;
3. a row confidently of a class other than its given label is a suspect, unless the model's most
   probable label is its given label after all.

Suspects are ranked by self-confidence (the probability of the given label, lowest first); their
``score`` is ``1 - p(given)``. The test suite checks the flagged rows against ``cleanlab``'s
``find_label_issues(..., filter_by="confident_learning")`` row for row.

Duplicates: texts identical after normalisation, and near-identical ones (cosine similarity of
character n-gram TF-IDF vectors at or above ``near``), that carry different labels.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from offramp.data.text import normalize
from offramp.errors import UsageError
from offramp.types import JSONDict

NEAR_SIMILARITY = 0.9
NEAR_MAX_ROWS = 200_000  # the near-duplicate pass compares rows pairwise in chunks; above this, exact only
_EPS = 1e-6


@dataclass
class Suspect:
    row: int  # 0-based data row
    text: str
    given: str
    suggested: str
    score: float  # 1 - the out-of-fold probability of the given label


@dataclass
class Duplicate:
    rows: list[int]
    texts: list[str]
    labels: list[str]
    similarity: float
    kind: str  # "exact" or "near"


@dataclass
class LabelCheck:
    suspects: list[Suspect]
    duplicates: list[Duplicate]
    rows: int
    model: str  # the search winner whose out-of-fold probabilities were used
    folds: int
    thresholds: dict[str, float]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> JSONDict:
        return {
            "suspects": [asdict(s) for s in self.suspects],
            "duplicates": [asdict(d) for d in self.duplicates],
            "rows": self.rows,
            "model": self.model,
            "folds": self.folds,
            "thresholds": self.thresholds,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def confident_thresholds(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per class: the mean probability of that class over the rows labelled with it."""
    k = proba.shape[1]
    t = np.full(k, 2.0)  # a class no row carries: nobody is confidently of it
    for c in range(k):
        sel = y == c
        if sel.any():
            t[c] = proba[sel, c].mean()
    return np.clip(t, 2 * _EPS, None)


def label_issues(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confident learning on integer labels ``y`` and probabilities ``proba`` (rows sum to 1).

    Returns (mask of suspect rows, the confidently guessed class of every row or -1, thresholds).
    """
    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or len(proba) != len(y):
        raise ValueError("proba must be (rows, classes) and match the labels")
    t = confident_thresholds(y, proba)
    confident = proba >= t - _EPS
    n_conf = confident.sum(axis=1)
    guess = np.where(n_conf > 1, proba.argmax(axis=1), confident.argmax(axis=1))
    guess = np.where(n_conf > 0, guess, -1)
    mask = (guess >= 0) & (guess != y)
    nudged = proba.copy()  # the model's own top label, ties going to the given label
    nudged[np.arange(len(y)), y] += _EPS
    mask &= nudged.argmax(axis=1) != y
    return mask, guess, t


def conflicting_duplicates(
    texts: Sequence[str], labels: Sequence[str], near: float | None = NEAR_SIMILARITY, chunk: int = 2000
) -> tuple[list[Duplicate], list[str]]:
    """Pairs of rows with the same (or, with ``near``, nearly the same) text and different labels."""
    if near is not None and not 0.5 <= near <= 1.0:  # below that, most pairs of texts would be listed
        raise UsageError(f"near-duplicate similarity must be between 0.5 and 1, got {near}", param="near")
    notes: list[str] = []
    out: list[Duplicate] = []
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(normalize(t).casefold(), []).append(i)
    first_of: list[int] = []  # one representative row per distinct normalised text
    for rows in groups.values():
        first_of.append(rows[0])
        if len({labels[i] for i in rows}) > 1:
            out.append(Duplicate(rows, [texts[i] for i in rows], [labels[i] for i in rows], 1.0, "exact"))
    if near is None:
        return out, notes
    if len(first_of) > NEAR_MAX_ROWS:
        notes.append(f"{len(first_of):,} distinct texts: near duplicates are looked for up to {NEAR_MAX_ROWS:,} only")
        return out, notes
    from sklearn.feature_extraction.text import TfidfVectorizer

    reps = np.asarray(first_of)
    # punctuation and spacing apart: "thanks a lot!" and "thanks a lot!!" are one text said twice
    docs = [" ".join(re.sub(r"[^\w\s]", " ", normalize(texts[i]).casefold()).split()) for i in reps]
    try:
        X = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=1, dtype=np.float32).fit_transform(docs)
    except ValueError:  # nothing but very short texts
        return out, notes
    lab = np.asarray([labels[i] for i in reps], dtype=object)
    XT = X.T.tocsr()
    for start in range(0, X.shape[0], chunk):
        S = (X[start : start + chunk] @ XT).tocoo()
        i = S.row + start
        keep = (S.col > i) & (S.data >= near)
        for a, b, s in zip(i[keep], S.col[keep], S.data[keep]):
            if lab[a] != lab[b]:
                ra, rb = int(reps[a]), int(reps[b])
                out.append(
                    Duplicate([ra, rb], [texts[ra], texts[rb]], [labels[ra], labels[rb]], round(float(s), 4), "near")
                )
    out.sort(key=lambda d: (-d.similarity, d.rows[0]))
    return out, notes


def check_labels(
    data: Any,
    labels: Any = None,
    *,
    text_col: str = "text",
    label_col: str = "label",
    max_chars: int | None = None,
    multi_label: bool = False,
    label_sep: str = "|",
    quality: str = "fast",
    seed: int = 0,
    folds: int = 5,
    near: float | None = NEAR_SIMILARITY,
    time_limit: float | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> LabelCheck:
    """Rank the rows whose given label is likely wrong, most suspicious first, and list texts that
    carry different labels.

    ``data`` is texts (with ``labels``), a :class:`~offramp.data.io.Dataset`, or the path of a
    labelled file (``text_col``, ``label_col``; ``max_chars`` cuts longer texts); the suspects'
    and duplicates' ``row`` is then the file's 0-based data row. ``quality`` is the model search's
    (``fast``: TF-IDF candidates). ``multi_label``: each label of each row is checked (labels
    joined by ``label_sep``; given and suggested are label sets), with the fast tier.

    Example
    -------
    >>> from offramp import check_labels
    >>> texts = ["reset my pin", "thanks a lot", "how do I reset the pin", "thank you!"] * 6
    >>> labels = ["SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE"] * 6
    >>> labels[0] = "GRATITUDE"  # a wrong label
    >>> check_labels(texts, labels).rows
    24
    """
    from offramp.data.io import DEFAULT_MAX_CHARS, Dataset, read_dataset

    limit = DEFAULT_MAX_CHARS if max_chars is None else max_chars
    if multi_label:
        from offramp.data.multilabel import parse_label_sets, read_label_sets

        if quality != "fast":
            raise UsageError("checking several labels per message uses the fast tier", param="quality")
        if isinstance(data, (str, os.PathLike)):
            ds, sets, notes = read_label_sets(data, text_col, label_col, label_sep, limit)
        else:
            texts = list(data.texts) if isinstance(data, Dataset) else list(data)
            raw = data.labels if isinstance(data, Dataset) else labels
            ds = data if isinstance(data, Dataset) else Dataset(texts, None)
            if raw is not None and all(isinstance(v, (list, tuple, set)) for v in raw):
                sets, notes = [sorted(set(map(str, v))) for v in raw], []
            else:
                sets, notes = parse_label_sets(list(raw or []), label_sep)
        res = check_label_sets(ds.texts, sets, label_sep=label_sep, seed=seed, near=near, on_progress=on_progress)
        res.notes[:0] = ds.warnings + notes
    else:
        if isinstance(data, (str, os.PathLike)):
            ds = read_dataset(data, text_col=text_col, label_col=label_col, max_chars=limit)
        elif isinstance(data, Dataset):
            ds = data
        else:
            ds = Dataset(list(data), None)
            if labels is None:
                raise UsageError("give the labels with the texts")
            res = _check_single(
                ds.texts, labels, quality=quality, seed=seed, folds=folds, near=near, time_limit=time_limit,
                on_progress=on_progress,
            )  # fmt: skip
            return res
        if ds.labels is None:
            raise UsageError(f"{ds.path} has no labels to check", param="label_col")
        res = _check_single(
            ds.texts, ds.labels, quality=quality, seed=seed, folds=folds, near=near, time_limit=time_limit,
            on_progress=on_progress,
        )  # fmt: skip
        res.notes[:0] = ds.warnings
    rows = ds.data_rows()  # suspects and duplicates name the file's rows
    for sus in res.suspects:
        sus.row = int(rows[sus.row])
    for dup in res.duplicates:
        dup.rows = [int(rows[r]) for r in dup.rows]
    return res


def _check_single(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    quality: str = "fast",
    seed: int = 0,
    folds: int = 5,
    near: float | None = NEAR_SIMILARITY,
    time_limit: float | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> LabelCheck:
    """:func:`check_labels` on texts and labels in memory."""
    from offramp.training.search import candidates_for, n_folds_for, resolve_quality, select_model

    t0 = time.perf_counter()
    texts = list(texts)
    y_str = np.asarray(labels, dtype=object).astype(str)
    if len(texts) != len(y_str):
        raise UsageError(f"{len(texts)} texts but {len(y_str)} labels")
    classes, counts = np.unique(y_str, return_counts=True)
    if len(classes) < 2:
        raise UsageError("checking labels needs at least two labels in the data")
    rare = [str(c) for c, n in zip(classes, counts) if n < 2]
    if rare:
        raise UsageError(
            f"label(s) with fewer than 2 rows cannot be cross-validated: {', '.join(rare[:10])}",
            "add examples or drop those rows",
        )
    quality, notes = resolve_quality(quality)
    k = n_folds_for(y_str, folds)
    sel = select_model(
        texts,
        y_str,
        candidates_for(quality, len(texts), seed),
        time_limit=time_limit,
        seed=seed,
        n_folds=k,
        on_progress=on_progress,
        time_candidates=False,  # only the out-of-fold probabilities are wanted here
    )
    assert sel.oof_proba is not None
    y = np.searchsorted(classes, y_str)
    mask, guess, t = label_issues(y, sel.oof_proba)
    rows = np.flatnonzero(mask)
    p_given = sel.oof_proba[rows, y[rows]]
    order = rows[np.lexsort((rows, p_given))]
    suspects = [
        Suspect(
            int(i),
            texts[i],
            str(classes[y[i]]),
            str(classes[guess[i]]),
            round(float(1.0 - sel.oof_proba[i, y[i]]), 6),
        )
        for i in order
    ]
    if on_progress:
        on_progress("looking for duplicates with different labels")
    dups, dup_notes = conflicting_duplicates(texts, list(y_str), near)
    return LabelCheck(
        suspects,
        dups,
        len(texts),
        sel.winner,
        k,
        {str(c): round(float(v), 6) for c, v in zip(classes, t)},
        time.perf_counter() - t0,
        notes + sel.notes + dup_notes,
    )


def label_set_issues(Y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Confident learning for several labels per message: each label is its own two-class problem
    (carries it or not) on its calibrated out-of-fold probability. Returns a (messages x labels)
    mask of the label decisions that look wrong: a label given but confidently absent, or not
    given but confidently present."""
    Y = np.asarray(Y).astype(bool)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != Y.shape:
        raise ValueError("proba must be (rows, labels) and match the label indicator")
    out = np.zeros(Y.shape, dtype=bool)
    for j in range(Y.shape[1]):
        p = np.clip(proba[:, j], 0.0, 1.0)
        out[:, j] = label_issues(Y[:, j].astype(np.int64), np.stack([1.0 - p, p], axis=1))[0]
    return out


def check_label_sets(
    texts: Sequence[str],
    label_sets: Sequence[Sequence[str]],
    *,
    label_sep: str = "|",
    seed: int = 0,
    near: float | None = NEAR_SIMILARITY,
    time_limit: float | None = 60.0,
    on_progress: Callable[[str], None] | None = None,
) -> LabelCheck:
    """:func:`check_labels` for several labels per message: the fast tier's one-vs-rest search gives
    out-of-fold probabilities per label; a message is a suspect when any of its label decisions
    looks wrong. ``given`` and ``suggested`` are label sets joined by ``label_sep`` (the suggestion
    flips the doubtful labels); ``score`` is the largest doubt, 1 - p(the given decision)."""
    from offramp.estimators.multilabel import indicator
    from offramp.training.multilabel import train_multilabel

    t0 = time.perf_counter()
    texts = list(texts)
    sets = [sorted(set(s)) for s in label_sets]
    _, rep = train_multilabel(texts, sets, seed=seed, time_limit=time_limit, on_progress=on_progress)
    assert rep.oof_proba is not None
    classes = rep.classes
    Y = indicator(sets, classes).astype(bool)
    doubt = label_set_issues(Y, rep.oof_proba)
    p_given = np.where(Y, rep.oof_proba, 1.0 - rep.oof_proba)
    rows = np.flatnonzero(doubt.any(axis=1))
    score = np.asarray([(1.0 - p_given[i][doubt[i]]).max() for i in rows]) if len(rows) else np.zeros(0)
    order = rows[np.lexsort((rows, -score))] if len(rows) else rows
    by_row = dict(zip(rows.tolist(), score.tolist()))
    suspects = []
    for i in order:
        flipped = Y[i] ^ doubt[i]
        suggested = [c for c, on in zip(classes, flipped) if on]
        suspects.append(
            Suspect(int(i), texts[i], label_sep.join(sets[i]), label_sep.join(suggested), round(by_row[int(i)], 6))
        )
    if on_progress:
        on_progress("looking for duplicates with different label sets")
    dups, dup_notes = conflicting_duplicates(texts, [label_sep.join(s) for s in sets], near)
    t = {}
    for j, c in enumerate(classes):  # the mean probability of a label over the messages carrying it
        t[str(c)] = round(float(rep.oof_proba[Y[:, j], j].mean()), 6)
    return LabelCheck(
        suspects, dups, len(texts), rep.winner, rep.n_folds, t, time.perf_counter() - t0, rep.warnings + dup_notes
    )


def without_suspects(
    texts: Sequence[str], labels: Sequence[str], **check: Any
) -> tuple[list[str], list[str], LabelCheck]:
    """The data minus the rows :func:`check_labels` ranks as mislabelled, and the check itself."""
    res = check_labels(texts, labels, **check)
    drop = {s.row for s in res.suspects}
    keep = [i for i in range(len(texts)) if i not in drop]
    return [texts[i] for i in keep], [labels[i] for i in keep], res
