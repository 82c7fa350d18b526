"""Spend a labelling budget where it helps: a random warm start, then rounds of uncertainty
sampling with a small model, each round kept diverse.

``select_and_label`` asks a labeller (the LLM teacher, or anything that maps texts to labels) for
exactly ``budget`` distinct texts:

1. warm start: a random sample (``seed``) of about a fifth of the budget, at least two per label
   the spec names when the budget allows;
2. each round fits a small model (character and word TF-IDF + logistic regression) on the texts
   labelled so far, scores every unlabelled text by its margin (top probability minus the second)
   and takes the least certain ones, skipping any text too similar (cosine ≥ ``diversity``) to one
   already taken in the same round, so a round does not spend its budget on near-duplicates;
3. until the budget is spent. Texts the labeller cannot label still count against the budget.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from offramp.errors import UsageError

LabelFn = Callable[[list[str]], list["str | None"]]


@dataclass
class ActiveRun:
    picked: list[int]  # indices of the texts sent, in the order they were sent
    labels: list[str | None]  # the labeller's answer for each, None when it gave none
    rounds: list[int] = field(default_factory=list)  # texts sent per round (the warm start first)


def _features(texts: Sequence[str]):
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    word = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, dtype=np.float32)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=1, sublinear_tf=True, dtype=np.float32)
    X = hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    from scipy.sparse import diags

    return diags(1.0 / norms) @ X


def _margins(X, labelled: list[int], y: list[str], pool: np.ndarray, seed: int) -> np.ndarray:
    """Top probability minus the second for every pool row (lower = less certain)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=10.0, max_iter=300, random_state=seed)
    with warnings.catch_warnings():  # early rounds: many labels, few texts each, as expected
        warnings.simplefilter("ignore")
        clf.fit(X[labelled], y)
    p = clf.predict_proba(X[pool])
    if p.shape[1] < 2:
        return np.zeros(len(pool))
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _diverse(X, order: np.ndarray, k: int, diversity: float) -> list[int]:
    """The first ``k`` rows of ``order`` with no two closer than ``diversity`` (cosine); rows
    skipped for closeness fill the remaining places only if too few were left."""
    taken: list[int] = []
    skipped: list[int] = []
    for i in order:
        if len(taken) == k:
            break
        if taken and float((X[taken] @ X[int(i)].T).max()) >= diversity:
            skipped.append(int(i))
            continue
        taken.append(int(i))
    return taken + skipped[: k - len(taken)]


def select_and_label(
    texts: Sequence[str],
    budget: int,
    label_fn: LabelFn,
    *,
    seed: int = 0,
    warm_start: int | None = None,
    round_size: int | None = None,
    diversity: float = 0.9,
    on_progress: Callable[[int, int], None] | None = None,
) -> ActiveRun:
    """Label ``budget`` distinct texts of ``texts`` chosen by uncertainty sampling (see the module)."""
    texts = list(texts)
    distinct: dict[str, int] = {}
    for i, t in enumerate(texts):
        distinct.setdefault(t, i)
    candidates = np.asarray(sorted(distinct.values()))
    if budget < 1:
        raise UsageError(f"the labelling budget must be at least 1, got {budget}", param="budget")
    if budget > len(candidates):
        raise UsageError(
            f"a budget of {budget} texts is larger than the data: {len(candidates)} distinct texts",
            f"use --budget {len(candidates)} or less, or leave --budget out to label every text",
            param="budget",
        )
    rng = random.Random(seed)
    warm = warm_start or max(1, min(budget, max(20, budget // 5)))
    step = round_size or max(10, budget // 10)
    first = rng.sample(list(candidates), min(warm, budget))
    picked: list[int] = []
    answers: list[str | None] = []
    rounds: list[int] = []

    def send(idx: list[int]) -> None:
        got = label_fn([texts[i] for i in idx])
        picked.extend(idx)
        answers.extend(got)
        rounds.append(len(idx))
        if on_progress:
            on_progress(len(picked), budget)

    send(first)
    X = _features([texts[i] for i in candidates]) if len(picked) < budget else None
    pos = {int(c): j for j, c in enumerate(candidates)}
    while len(picked) < budget:
        assert X is not None
        done = set(picked)
        pool = np.asarray([c for c in candidates if c not in done])
        k = min(step, budget - len(picked))
        known = [(pos[i], a) for i, a in zip(picked, answers) if a is not None]
        if len({a for _, a in known}) < 2:  # nothing to be uncertain between yet: spread out instead
            order = np.asarray(rng.sample(range(len(pool)), len(pool)))
        else:
            m = _margins(X, [j for j, _ in known], [a for _, a in known], np.asarray([pos[c] for c in pool]), seed)
            order = np.lexsort((np.asarray(rng.sample(range(len(pool)), len(pool))), m))
        rows = _diverse(X, np.asarray([pos[int(c)] for c in pool[order]]), k, diversity)
        send([int(candidates[r]) for r in rows])
    return ActiveRun(picked, answers, rounds)
