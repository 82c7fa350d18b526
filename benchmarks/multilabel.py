"""Multi-label: offramp's fast tier vs scikit-learn's binary relevance, in the same run.

    python benchmarks/multilabel.py

No real multi-label text set was found in a package registry (see docs/benchmarks/multilabel.md),
so both sets are constructed from real messages and say so:

* inbox-ml: the demo inbox's multi-label variant (offramp.demo.data.multilabel_inbox): thanks +
  question joined, jailbreak + question joined, OTHER as the empty set; 3,158 / 1,052 messages;
* banking77-ml: Banking77 with 30% of the messages joined to another one, carrying both intents
  (77 labels), two draws of the training split (20,006 messages), the test split drawn once.

Baseline: word TF-IDF (1-2 grams) + one-vs-rest logistic regression, threshold 0.5 (scikit-learn).
offramp: `train_multilabel` (one-vs-rest on word + character TF-IDF, per-label Platt calibration
and F1-fitted thresholds), the fast tier (60 s search limit, as `train --multi-label`) and with
`quality="balanced"` (the stacked tier, TF-IDF + MiniLM embeddings, first; no time limit; the
embedding cache may hold vectors from earlier runs, as it would for a user retraining). Figures: micro/macro-F1 on the test split, train seconds, single-message
p99 latency.
"""

from __future__ import annotations

import random
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MultiLabelBinarizer

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths, multilabel_inbox
from offramp.estimators.multilabel import multilabel_metrics
from offramp.training.multilabel import train_multilabel

from common import banking77, latency_ms, print_table


def joined(texts, labels, share, seed):
    rng = random.Random(seed)
    out = []
    for t, y in zip(texts, labels):
        if rng.random() < share:
            j = rng.randrange(len(texts))
            if labels[j] != y:
                out.append((f"{t} {texts[j]}", sorted({y, labels[j]})))
                continue
        out.append((t, [y]))
    return out


def inbox():
    tr, te, _ = demo_paths()
    a, b = read_dataset(tr), read_dataset(te)
    split = lambda rows: ([t for t, _ in rows], [y.split("|") if y else [] for _, y in rows])  # noqa: E731
    return split(multilabel_inbox(a.texts, a.labels, 0)), split(multilabel_inbox(b.texts, b.labels, 1))


def banking():
    (tx, ty), (sx, sy), _ = banking77()
    train = joined(tx, ty, 0.3, 0) + joined(tx, ty, 0.3, 1)
    test = joined(sx, sy, 0.3, 2)
    return ([t for t, _ in train], [y for _, y in train]), ([t for t, _ in test], [y for _, y in test])


def run(name, load):
    (xtr, ytr), (xte, yte) = load()
    mlb = MultiLabelBinarizer().fit(ytr + yte)
    classes = list(mlb.classes_)
    Ytr, Yte = mlb.transform(ytr), mlb.transform(yte)
    rows = []
    t0 = time.perf_counter()
    base = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        OneVsRestClassifier(LogisticRegression(max_iter=1000)),
    ).fit(xtr, Ytr)
    secs = time.perf_counter() - t0
    P = base.predict_proba(xte) >= 0.5
    m = multilabel_metrics(Yte, P, classes)
    _, p99 = latency_ms(lambda t: base.predict_proba([t]), xte, n=1000)
    rows.append(
        [
            "scikit-learn binary relevance (word TF-IDF + LR, 0.5)",
            f"{m['micro_f1']:.4f}",
            f"{m['macro_f1']:.4f}",
            f"{m['subset_accuracy']:.4f}",
            f"{secs:.1f}",
            f"{p99:.2f}",
        ]
    )
    for quality, what in (("fast", "fast tier"), ("balanced", "stacked tier (TF-IDF + MiniLM), quality balanced")):
        t0 = time.perf_counter()
        model, rep = train_multilabel(xtr, ytr, seed=0, quality=quality, time_limit=60.0 if quality == "fast" else None)
        secs = time.perf_counter() - t0
        P = np.zeros_like(Yte, dtype=bool)
        pred = model.predict(xte)
        cols = [classes.index(c) for c in model.classes_]
        P[:, cols] = pred.astype(bool)
        m = multilabel_metrics(Yte, P, classes)
        with model.uncached():
            _, p99 = latency_ms(model.predict_one, xte, n=1000)
        rows.append(
            [
                f"offramp {what}, multi-label (winner {rep.winner})",
                f"{m['micro_f1']:.4f}",
                f"{m['macro_f1']:.4f}",
                f"{m['subset_accuracy']:.4f}",
                f"{secs:.1f}",
                f"{p99:.2f}",
            ]
        )
    multi = sum(len(y) > 1 for y in ytr) / len(ytr)
    print_table(
        f"{name}: {len(xtr):,} training / {len(xte):,} test messages, {len(classes)} labels, {multi:.0%} of training messages with 2+ labels",
        ["model", "micro-F1", "macro-F1", "subset accuracy", "train s", "p99 ms (one message)"],
        rows,
    )


if __name__ == "__main__":
    run("inbox-ml (constructed from the demo inbox)", inbox)
    run("banking77-ml (constructed from Banking77)", banking)
