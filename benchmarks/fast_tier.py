"""The fast tier on Banking77 and CLINC150, beside the plain scikit-learn recipe in the same run.

    python benchmarks/fast_tier.py            # both sets
    python benchmarks/fast_tier.py banking77  # one

Plain recipe: word 1-2-gram TfidfVectorizer + LogisticRegression (scikit-learn defaults otherwise).
Strong plain recipe: scikit-learn word 1-2 + char_wb 2-5 TfidfVectorizer (sublinear tf) + LinearSVC,
the same kind of features as the fast tier, to compare the featurizers' speed.
offramp: `offramp train`'s model search (time limit 30 s), saved and reloaded from its directory.
Latency is one message at a time in process; throughput is one batch call.
"""

from __future__ import annotations

import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offramp import train
from offramp.data.io import Dataset
from offramp.modeldir.store import model_bytes
from offramp.registry.records import load

from common import banking77, clinc150, latency_ms, print_table, throughput

TARGETS = {"accuracy": 0.91, "train_s": 30, "p99_ms": 1.0, "throughput": 30_000, "mb": 10}


def run_plain(Xtr, ytr, Xte):
    t0 = time.perf_counter()
    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=1000)).fit(Xtr, ytr)
    fit_s = time.perf_counter() - t0
    pred = pipe.predict(Xte)
    p50, p99 = latency_ms(lambda t: pipe.predict([t]), Xte)
    thr = throughput(pipe.predict, Xte)
    size = len(pickle.dumps(pipe))  # measured only; offramp itself never loads pickle
    return pred, fit_s, p50, p99, thr, size


def run_plain_wordchar(Xtr, ytr, Xte):
    from sklearn.pipeline import make_union
    from sklearn.svm import LinearSVC

    t0 = time.perf_counter()
    pipe = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
        ),
        LinearSVC(C=0.5),
    ).fit(Xtr, ytr)
    fit_s = time.perf_counter() - t0
    pred = pipe.predict(Xte)
    p50, p99 = latency_ms(lambda t: pipe.predict([t]), Xte)
    thr = throughput(pipe.predict, Xte)
    return pred, fit_s, p50, p99, thr, len(pickle.dumps(pipe))


def run_offramp(Xtr, ytr, Xte):
    with tempfile.TemporaryDirectory() as d:
        trained, res = train(Dataset(Xtr, ytr, "bench"), time_limit=30, seed=0, quality="fast")
        trained.save(Path(d) / "m")
        fit_s = res.train_seconds
        model = load(Path(d) / "m")
        size = model_bytes(Path(d) / "m")
    pred = model.predict(Xte)
    p50, p99 = latency_ms(model.predict_one, Xte)
    thr = throughput(model.predict, Xte)
    return pred, fit_s, p50, p99, thr, size, res.winner


def main(which: list[str]) -> None:
    rows, checks = [], []
    sets = {"banking77": banking77, "clinc150": clinc150}
    for name in which:
        (Xtr, ytr), (Xte, yte), _ = sets[name]()
        yte_a = np.asarray(yte)
        for recipe, fn in (
            ("plain: word TF-IDF + LogReg", run_plain),
            ("sklearn word+char TF-IDF + LinearSVC", run_plain_wordchar),
            ("offramp fast tier", run_offramp),
        ):
            pred, fit_s, p50, p99, thr, size, *winner = fn(Xtr, ytr, Xte)
            acc = float((pred == yte_a).mean())
            f1 = float(f1_score(yte_a, pred, average="macro"))
            extra = ""
            if name == "clinc150":
                ins = yte_a != "oos"
                acc = float((pred[ins] == yte_a[ins]).mean())
                extra = f"{(pred[~ins] == 'oos').mean():.3f}"
            label = recipe + (f" ({winner[0]})" if winner else "")
            rows.append(
                [
                    name,
                    label,
                    f"{acc:.4f}",
                    f"{f1:.4f}",
                    extra or "—",
                    f"{fit_s:.1f}",
                    f"{p50:.3f}",
                    f"{p99:.3f}",
                    f"{thr:,.0f}",
                    f"{size / 1e6:.2f}",
                ]
            )
            if name == "banking77" and winner:
                checks += [
                    ("accuracy >= 0.91", acc >= TARGETS["accuracy"], f"{acc:.4f}"),
                    ("training <= 30 s", fit_s <= TARGETS["train_s"], f"{fit_s:.1f} s"),
                    ("p99 <= 1 ms", p99 <= TARGETS["p99_ms"], f"{p99:.3f} ms"),
                    ("batch >= 30,000 msg/s", thr >= TARGETS["throughput"], f"{thr:,.0f}/s"),
                    ("model <= 10 MB", size / 1e6 <= TARGETS["mb"], f"{size / 1e6:.2f} MB"),
                ]
    print_table(
        "fast tier vs plain recipe (same run)",
        [
            "set",
            "recipe",
            "accuracy (in-scope)",
            "macro-F1",
            "oos recall",
            "train s",
            "p50 ms",
            "p99 ms",
            "batch msg/s",
            "size MB",
        ],
        rows,
    )
    if checks:
        print_table(
            "Banking77 targets (offramp fast tier)",
            ["target", "met", "measured"],
            [[c, "yes" if ok else "NO", v] for c, ok, v in checks],
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["banking77", "clinc150"])
