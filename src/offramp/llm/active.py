"""Spend a labelling budget where it helps, and never worse than drawing texts at random.

``select_and_label`` asks a labeller (the LLM teacher, or anything that maps texts to labels) for
exactly ``budget`` distinct texts:

1. **a diverse warm start**: the data is clustered (k-means, as many clusters as the budget, up
   to 2,000) and the texts nearest their centres come first, the biggest cluster's and then each
   time the one farthest from those taken (a quarter of the budget, at least 20), so the first labels cover the data's regions rather than its most
   frequent ones — cluster-based initial selection, as in Zhu et al. (2008), "Active learning
   with sampling by uncertainty and density for word sense disambiguation and text
   classification" (COLING), and Yuan et al. (2020), "Cold-start active learning through
   self-supervised language modeling" (EMNLP);
2. **coverage while labels are still being found**: while at least a fifth of a round's texts
   show a label not seen before (many labels, few labelled yet: 150 intents and a budget of 100),
   the next round takes the next cluster centres — an uncertain model knows too few labels to be
   uncertain about the right things yet;
3. **then rounds that mix exploration and uncertainty**: each round fits a small model (word and
   character TF-IDF + logistic regression) on the texts labelled so far; ``explore`` of the round
   is drawn at random from the unlabelled texts, the rest are the least certain texts (margin: top
   probability minus the second), taken **class-balanced** — one per predicted label in turn,
   labels with the fewest labels so far first — so that pure least-margin sampling cannot spend
   the budget on outliers of a few confusable classes and starve the rare ones (the failure
   Ein-Dor et al. (2020), "Active Learning for BERT: An Empirical Study" (EMNLP), and Bengar et al.
   (2022), "Class-Balanced Active Learning for Image Classification" (WACV), describe at small
   budgets and on imbalanced data); within a round a text too similar (cosine ≥ ``diversity``) to
   one already taken is skipped;
4. until the budget is spent. Texts the labeller cannot label still count against the budget.

``benchmarks/active_label.py`` checks the result against random draws on sets of different shapes.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from offramp.errors import UsageError

LabelFn = Callable[[list[str]], list["str | None"]]
MAX_CLUSTERS = 2_000
NEW_LABELS = 0.2  # a round in which at least this share of the texts showed a label not seen before


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


def _warm_start(X, k: int, seed: int) -> list[int]:
    """Rows of ``X`` nearest the centres of ``k`` k-means clusters (on a 64-dimensional SVD of
    the TF-IDF rows), distinct; k-means++ seeding, one run, ``seed``."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import TruncatedSVD

    n = X.shape[0]
    if k >= n:
        return list(range(n))
    dims = max(2, min(64, X.shape[1] - 1, n - 1))
    Z = TruncatedSVD(dims, random_state=seed).fit_transform(X)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = MiniBatchKMeans(k, random_state=seed, n_init=1, batch_size=max(1024, 3 * k)).fit(Z)
    assigned = km.labels_
    sizes = np.bincount(assigned, minlength=k)
    order = np.argsort(assigned, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    taken: list[int] = []
    for c in _spread_order(km.cluster_centers_, sizes):
        members = order[starts[c] : starts[c + 1]]
        if len(members):
            dist = np.linalg.norm(Z[members] - km.cluster_centers_[c], axis=1)
            taken.append(int(members[np.argmin(dist)]))
    return taken


def _spread_order(centres: np.ndarray, sizes: np.ndarray) -> list[int]:
    """The clusters in the order that covers the space soonest: the biggest first, then each time
    the one farthest from every cluster already taken (farthest-first traversal); empty ones left out."""
    live = np.nonzero(sizes > 0)[0]
    if len(live) == 0:
        return []
    first = int(live[np.argmax(sizes[live])])
    out = [first]
    nearest = np.linalg.norm(centres[live] - centres[first], axis=1)
    nearest[live == first] = -1.0
    for _ in range(len(live) - 1):
        j = int(np.argmax(nearest))
        out.append(int(live[j]))
        # a taken cluster stays at -1 (distances are never negative), so it is never taken twice
        nearest = np.minimum(nearest, np.linalg.norm(centres[live] - centres[live[j]], axis=1))
        nearest[j] = -1.0
    return out


def _balanced(order_by_margin: np.ndarray, predicted: np.ndarray, counts: dict[str, int]) -> list[int]:
    """Pool positions, least certain first within each predicted label, interleaved across labels
    (the labels with the fewest labelled texts first)."""
    groups: dict[str, list[int]] = {}
    for i in order_by_margin:
        groups.setdefault(str(predicted[i]), []).append(int(i))
    labels = sorted(groups, key=lambda lab: (counts.get(lab, 0), lab))
    out: list[int] = []
    depth = 0
    while len(out) < len(order_by_margin):
        for lab in labels:
            if depth < len(groups[lab]):
                out.append(groups[lab][depth])
        depth += 1
    return out


def _margins(X, labelled: list[int], y: list[str], pool: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(top probability minus the second, the predicted label) for every pool row (lower margin =
    less certain)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=10.0, max_iter=300, random_state=seed)
    with warnings.catch_warnings():  # early rounds: many labels, few texts each, as expected
        warnings.simplefilter("ignore")
        clf.fit(X[labelled], y)
    p = clf.predict_proba(X[pool])
    predicted = clf.classes_[np.argmax(p, axis=1)]
    if p.shape[1] < 2:
        return np.zeros(len(pool)), predicted
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0], predicted


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
    explore: float = 0.5,
    on_progress: Callable[[int, int], None] | None = None,
) -> ActiveRun:
    """Label ``budget`` distinct texts of ``texts``: a clustered warm start, then rounds of random
    and class-balanced uncertain picks (see the module)."""
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
    if not 0 <= explore <= 1:
        raise UsageError(f"explore must be between 0 and 1, got {explore}", param="explore")
    rng = random.Random(seed)
    warm = warm_start or max(1, min(budget, max(20, budget // 4)))
    step = round_size or max(10, budget // 10)
    X = _features([texts[i] for i in candidates])
    # the texts nearest the centres of as many clusters as the budget (up to 2,000), biggest first:
    # the warm start, and the picks of rounds that still find new labels
    spread = [int(candidates[r]) for r in _warm_start(X, min(budget, MAX_CLUSTERS), seed)]
    first = spread[: min(warm, budget)]
    spread = spread[len(first) :]
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
    pos = {int(c): j for j, c in enumerate(candidates)}
    seen_before: set[str] = set()
    while len(picked) < budget:
        done = set(picked)
        k = min(step, budget - len(picked))
        last = rounds[-1]
        labels_now = {a for a in answers if a is not None}
        found = {a for a in answers[-last:] if a is not None} - seen_before
        seen_before = labels_now
        fresh = [i for i in spread if i not in done]
        if fresh and len(found) >= NEW_LABELS * last:  # the data still shows new labels: cover it first
            spread = fresh[k:]
            send(fresh[:k])
            continue
        pool = np.asarray([c for c in candidates if c not in done])
        shuffled = np.asarray(rng.sample(range(len(pool)), len(pool)))
        known = [(pos[i], a) for i, a in zip(picked, answers) if a is not None]
        n_random = k if len({a for _, a in known}) < 2 else int(round(k * explore))
        chosen = [int(i) for i in shuffled[:n_random]]  # exploration: as a random draw would
        if k > n_random:  # nothing to be uncertain between until two labels are known
            m, predicted = _margins(
                X, [j for j, _ in known], [a for _, a in known], np.asarray([pos[c] for c in pool]), seed
            )
            counts: dict[str, int] = {}
            for _, a in known:
                counts[a] = counts.get(a, 0) + 1
            taken = set(chosen)
            order = [i for i in _balanced(np.lexsort((shuffled, m)), predicted, counts) if i not in taken]
            rows = _diverse(X, np.asarray([pos[int(c)] for c in pool[order]]), k - n_random, diversity)
            back = {pos[int(c)]: i for i, c in enumerate(pool)}
            chosen += [back[r] for r in rows]
        send([int(pool[i]) for i in chosen])
    return ActiveRun(picked, answers, rounds)
