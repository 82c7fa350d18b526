"""A labelling budget spent by uncertainty vs at random (``offramp label --budget N``).

    python benchmarks/active_label.py            # Banking77 and the demo inbox, N = 200, 500, 1000, 3 seeds

The labeller is an oracle that reads the gold label, so the curve measures the selection, not an
LLM. For each N and seed, N training texts are chosen (a) by ``offramp.llm.active`` (random
warm start, then rounds of least-margin sampling kept diverse) and (b) uniformly at random; the
same fixed model (word + character TF-IDF, logistic regression) is trained on each and scored on
the untouched test split (macro-F1).
"""

from __future__ import annotations

import random
import sys
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline, make_union

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths
from offramp.llm.active import select_and_label

from common import banking77, print_table


def demo():
    tr, te, _ = demo_paths()
    a, b = read_dataset(tr), read_dataset(te)
    return (a.texts, a.labels), (b.texts, b.labels), None


def score(texts, labels, test):
    model = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True),
        ),
        LogisticRegression(C=10.0, max_iter=1000),
    )
    model.fit(texts, labels)
    return f1_score(test[1], model.predict(test[0]), average="macro")


def run(name, load, budgets, seeds):
    (texts, labels), test, _ = load()
    gold = dict(zip(texts, labels))
    rows = []
    for n in budgets:
        act, rnd, secs = [], [], []
        for seed in seeds:
            t0 = time.perf_counter()
            res = select_and_label(texts, n, lambda batch: [gold[t] for t in batch], seed=seed)
            secs.append(time.perf_counter() - t0)
            act.append(score([texts[i] for i in res.picked], [labels[i] for i in res.picked], test))
            picked = random.Random(seed).sample(range(len(texts)), n)
            rnd.append(score([texts[i] for i in picked], [labels[i] for i in picked], test))
        a, r = np.array(act), np.array(rnd)
        rows.append(
            [
                n,
                f"{r.mean():.4f} ± {r.std():.4f}",
                f"{a.mean():.4f} ± {a.std():.4f}",
                f"{a.mean() - r.mean():+.4f}",
                f"{np.mean(secs):.1f}",
            ]
        )
    print_table(
        f"{name}: macro-F1 on the test split, trained on N texts ({len(seeds)} seeds, mean ± sd)",
        ["N", "random", "uncertainty (offramp)", "gain", "selection s"],
        rows,
    )


if __name__ == "__main__":
    which = sys.argv[1:] or ["banking77", "demo"]
    for w in which:
        run(w, {"banking77": banking77, "demo": demo}[w], [200, 500, 1000], [0, 1, 2])
