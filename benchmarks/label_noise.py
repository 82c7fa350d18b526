"""How well ``offramp check-labels`` finds wrong labels, and what dropping them recovers.

    python benchmarks/label_noise.py [--share 0.1]

On the demo inbox's training split, a known share of labels is flipped:

* random: to another label chosen uniformly;
* confusable: to the label a clean model ranks second for that text (out-of-fold), the mistake a
  hurried annotator or an LLM teacher makes.

For each, check-labels (fast tier, seed 0) ranks suspects; the table gives precision and recall at
N = the number of flipped rows and over all suspects, then the test-split macro-F1 of the fast tier
trained on the clean labels, on the noisy labels, and on the noisy labels minus the suspects.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
from sklearn.metrics import f1_score

from offramp.data.demo import demo_paths
from offramp.data.io import read_dataset
from offramp.models.noise import check_labels
from offramp.models.selection import candidates_for, select_model
from offramp.models.training import train

from common import print_table


def test_f1(texts, labels, test):
    model, _ = train(texts, labels, quality="fast", time_limit=None, seed=0)
    return f1_score(test.labels, [str(p) for p in model.predict(test.texts)], average="macro")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--share", type=float, default=0.1)
    args = ap.parse_args()
    tr, te, _ = demo_paths()
    train_set, test = read_dataset(tr), read_dataset(te)
    texts, gold = train_set.texts, list(train_set.labels)
    classes = sorted(set(gold))
    rng = random.Random(0)
    flip = sorted(rng.sample(range(len(texts)), int(round(args.share * len(texts)))))
    sel = select_model(texts, gold, candidates_for("fast", len(texts), 0), time_limit=None, seed=0, n_folds=5)
    second = np.argsort(-sel.oof_proba, axis=1)
    noisy = {
        "random": {i: rng.choice([c for c in classes if c != gold[i]]) for i in flip},
        "confusable": {i: next(classes[j] for j in second[i] if classes[j] != gold[i]) for i in flip},
    }
    clean_f1 = test_f1(texts, gold, test)
    rows = []
    for kind, flips in noisy.items():
        y = [flips.get(i, g) for i, g in enumerate(gold)]
        t0 = time.perf_counter()
        res = check_labels(texts, y, quality="fast", seed=0, near=None)
        secs = time.perf_counter() - t0
        ranked = [s.row for s in res.suspects]
        wrong = set(flips)
        top = ranked[: len(wrong)]
        drop = set(ranked)
        kept = [i for i in range(len(texts)) if i not in drop]
        rows.append(
            [
                kind,
                f"{len(wrong)} ({args.share:.0%})",
                f"{sum(i in wrong for i in top) / len(top):.3f} / {sum(i in wrong for i in top) / len(wrong):.3f}",
                f"{len(ranked)}: {sum(i in wrong for i in ranked) / max(1, len(ranked)):.3f} / "
                f"{sum(i in wrong for i in ranked) / len(wrong):.3f}",
                f"{clean_f1:.4f}",
                f"{test_f1(texts, y, test):.4f}",
                f"{test_f1([texts[i] for i in kept], [y[i] for i in kept], test):.4f}",
                f"{secs:.0f}",
            ]
        )
    print_table(
        f"check-labels on the demo inbox ({len(texts)} training texts), fast tier, seed 0; test macro-F1 on "
        f"{len(test.texts)} gold test messages",
        [
            "flips",
            "flipped rows",
            "precision / recall at N = flipped",
            "all suspects: precision / recall",
            "F1 clean",
            "F1 noisy",
            "F1 noisy, suspects dropped",
            "check s",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
