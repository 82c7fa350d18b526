"""How well ``offramp check-labels`` finds wrong labels, and what dropping them recovers.

    python benchmarks/label_noise.py [--share 0.1]

On the demo inbox's training split, a known share of labels is flipped:

* random: to another label chosen uniformly;
* confusable: to the label a clean model ranks second for that text (out-of-fold), the mistake a
  hurried annotator or an LLM teacher makes.

For each, check-labels (fast tier, seed 0) ranks suspects; the table gives precision and recall at
N = the number of flipped rows and over all suspects, then the test-split macro-F1 of the fast tier
trained on the clean labels, on the noisy labels, and on the noisy labels minus the suspects.

    python benchmarks/label_noise.py --multi-label [--share 0.1]

The same for several labels per message (``check-labels --multi-label``), on the two sets of the
multi-label benchmark (benchmarks/multilabel.py): on a share of the training rows one label is
removed (half the time, when the row has one) or a random absent label added; test micro-F1 of the
default multi-label training (fast tier) on clean, noisy and noisy-minus-suspects labels.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
from sklearn.metrics import f1_score

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths
from offramp.estimators.multilabel import indicator, multilabel_metrics
from offramp.training.multilabel import train_multilabel
from offramp.training.noise import check_label_sets, check_labels
from offramp.training.search import candidates_for, select_model
from offramp.training.train import train

from common import print_table


def test_f1(texts, labels, test):
    model, _ = train(texts, labels, quality="fast", time_limit=None, seed=0)
    return f1_score(test.labels, [str(p) for p in model.predict(test.texts)], average="macro")


def micro_f1(texts, sets, test_texts, test_sets):
    model, _ = train_multilabel(texts, sets, seed=0)
    classes = list(model.classes_)
    return multilabel_metrics(indicator(test_sets, classes), model.predict(test_texts).astype(bool), classes)[
        "micro_f1"
    ]


def flip_sets(sets, share, seed):
    """One label removed or one absent label added on ``share`` of the rows; the flipped rows."""
    classes = sorted({lab for s in sets for lab in s})
    rng = random.Random(seed)
    out, flipped = [], set()
    for i, s in enumerate(sets):
        labs = set(s)
        if rng.random() < share:
            if labs and rng.random() < 0.5:
                labs.discard(rng.choice(sorted(labs)))
            else:
                labs.add(rng.choice([c for c in classes if c not in labs]))
            flipped.add(i)
        out.append(sorted(labs))
    return out, flipped


def multilabel_main(share: float) -> None:
    from multilabel import banking, inbox

    rows = []
    for name, load in (("inbox-ml", inbox), ("banking77-ml", banking)):
        (texts, gold), (test_texts, test_sets) = load()
        noisy, wrong = flip_sets(gold, share, 0)
        t0 = time.perf_counter()
        res = check_label_sets(texts, noisy, seed=0, near=None)
        secs = time.perf_counter() - t0
        ranked = [s.row for s in res.suspects]
        hit = sum(i in wrong for i in ranked)
        drop = set(ranked)
        kept = [i for i in range(len(texts)) if i not in drop]
        rows.append(
            [
                f"{name} ({len(texts):,} texts)",
                f"{len(wrong):,} ({share:.0%})",
                f"{len(ranked):,}",
                f"{hit / max(1, len(ranked)):.3f}",
                f"{hit / len(wrong):.3f}",
                f"{micro_f1(texts, gold, test_texts, test_sets):.4f}",
                f"{micro_f1(texts, noisy, test_texts, test_sets):.4f}",
                f"{micro_f1([texts[i] for i in kept], [noisy[i] for i in kept], test_texts, test_sets):.4f}",
                f"{secs:.0f}",
            ]
        )
    print_table(
        "check-labels --multi-label (fast tier, 3 folds, seed 0); test micro-F1 of train --multi-label",
        [
            "set",
            "flipped rows",
            "suspects",
            "precision",
            "recall",
            "micro-F1 clean",
            "micro-F1 noisy",
            "micro-F1 noisy, suspects dropped",
            "check s",
        ],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--share", type=float, default=0.1)
    ap.add_argument("--multi-label", action="store_true", help="the multi-label check instead")
    args = ap.parse_args()
    if args.multi_label:
        multilabel_main(args.share)
        return
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
