"""A labelling budget spent by offramp's selection vs at random (``offramp label --budget N``).

    python benchmarks/active_label.py                      # every set, N = 100, 300, 1000, 5 seeds
    python benchmarks/active_label.py inbox banking77 --budgets 100 300 --seeds 0 1

The labeller is an oracle that reads the gold label, so the figures measure the selection, not an
LLM. For each set, N and seed, N training texts are chosen (a) by ``offramp.llm.active`` and (b)
uniformly at random (the same seed); the same fixed model (word + character TF-IDF, logistic
regression) is trained on each and scored on the untouched test split (macro-F1 over the labels of
the test split). The sets differ in shape:

* ``inbox``: the demo's support inbox, 4 labels, imbalanced (the rarest 3.5%), short and long texts;
* ``banking77``: 77 intents, mildly imbalanced, short texts;
* ``clinc150``: 150 intents plus out-of-scope as a 151st label, balanced, short texts;
* ``clinc-domains-tail``: CLINC150's intents folded into their 10 domains and subsampled to a
  long tail (each domain 0.55 times the size of the one before it: 1,000 texts down to 5 — the
  rarest 0.2% of 2,236; out-of-scope left out), few labels, very imbalanced; the test split is
  the domains' whole test split.

The table shows, per set and N, the mean and the weakest seed of each method and the gain of the
means; the last line says whether offramp's mean is ever more than 0.005 below random's.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline, make_union

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths
from offramp.llm.active import select_and_label

from common import DATA, banking77, clinc150, print_table


def inbox():
    tr, te, _ = demo_paths()
    a, b = read_dataset(tr), read_dataset(te)
    return (a.texts, a.labels), (b.texts, b.labels)


def clinc_domains_tail():
    d = json.loads((DATA / "clinc150" / "data_full.json").read_text())
    domain_of = {
        i: dom for dom, intents in json.loads((DATA / "clinc150" / "domains.json").read_text()).items() for i in intents
    }
    rng = random.Random(0)

    def fold(items):
        return [(t, domain_of[i]) for t, i in items]

    train = fold(d["train"] + d["val"])
    domains = sorted({lab for _, lab in train})
    rng.shuffle(domains)
    rows = []
    for rank, dom in enumerate(domains):
        group = [r for r in train if r[1] == dom]
        rows += rng.sample(group, max(5, int(1000 * 0.55**rank)))
    rng.shuffle(rows)
    test = fold(d["test"])
    return ([t for t, _ in rows], [lab for _, lab in rows]), ([t for t, _ in test], [lab for _, lab in test])


SETS = {
    "inbox": inbox,
    "banking77": lambda: banking77()[:2],
    "clinc150": lambda: clinc150()[:2],
    "clinc-domains-tail": clinc_domains_tail,
}


def score(texts, labels, test):
    model = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True),
        ),
        LogisticRegression(C=10.0, max_iter=1000),
    )
    model.fit(texts, labels)
    return f1_score(test[1], model.predict(test[0]), average="macro", labels=sorted(set(test[1])))


def run(name, budgets, seeds):
    (texts, labels), test = SETS[name]()
    gold = dict(zip(texts, labels))
    counts = sorted(np.unique(labels, return_counts=True)[1])
    rows, worst_gap = [], np.inf
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
        worst_gap = min(worst_gap, a.mean() - r.mean())
        rows.append(
            [
                n,
                f"{r.mean():.4f} (weakest {r.min():.4f})",
                f"{a.mean():.4f} (weakest {a.min():.4f})",
                f"{a.mean() - r.mean():+.4f}",
                f"{(a > r).sum()} of {len(seeds)}",
                f"{np.mean(secs):.1f}",
            ]
        )
    print_table(
        f"{name} ({len(texts):,} training texts, {len(set(labels))} labels, the rarest {counts[0]} "
        f"= {counts[0] / len(labels):.1%}; {len(test[0]):,} test texts): macro-F1, {len(seeds)} seeds",
        ["N", "random", "offramp", "gain of the means", "seeds offramp ahead", "selection s"],
        rows,
    )
    return worst_gap


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("sets", nargs="*", default=list(SETS))
    ap.add_argument("--budgets", nargs="+", type=int, default=[100, 300, 1000])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    args = ap.parse_args()
    gaps = {s: run(s, args.budgets, args.seeds) for s in args.sets}
    worst = min(gaps, key=lambda s: gaps[s])
    print(
        f"\nweakest gain of the means: {gaps[worst]:+.4f} ({worst}); "
        + ("never more than 0.005 below random" if gaps[worst] >= -0.005 else "BELOW random by more than 0.005")
    )
