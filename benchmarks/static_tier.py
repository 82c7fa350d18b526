"""The static tier (token vectors distilled from MiniLM, stacked with TF-IDF) beside the fast tier
and the MiniLM-stacked accurate tier, and what plain `offramp train` then chooses.

    python benchmarks/static_tier.py                       # inbox, banking77, clinc150; 3 splits each
    python benchmarks/static_tier.py banking77 --splits 1  # the official split only
    python benchmarks/static_tier.py --choice              # also: train's auto choice vs the most accurate
    python benchmarks/static_tier.py --export [--web]      # also: the ONNX export (and onnxruntime-web)
    python benchmarks/static_tier.py --wordllama           # also: wordllama's shipped table, stacked the same way
    python benchmarks/static_tier.py --tiers fast,static   # only these rows (speed after a change to one tier)

Split 0 is each set's published train/test split; split k > 0 pools train and test and draws a
stratified test set of the same size with seed k. Every model is fitted with fixed settings (the
search's first candidate of each tier), saved, reloaded and measured from its directory: test
accuracy, macro-F1 (CLINC150: in-scope accuracy too; out-of-scope is one of the classes here),
fit seconds (MiniLM's from an empty embedding cache on split 0), batch messages/s (up to 30,000
messages or 20 s), single-message p50/p99 in process (2,000 messages or 15 s), directory size (MiniLM's 23 MB encoder is not in it; the static table is).
Each table ends with the mean and the weakest split.

With ``--choice`` each set's split 0 is also trained by `train` as a user would (quality auto:
the cheapest candidate within one standard error of the best CV score) and with the same
candidates where the most accurate wins (quality balanced), no time limit; the winner, its test
macro-F1 and its batch speed are printed side by side.

With ``--wordllama`` a fourth row stacks wordllama's shipped static embeddings (256 dimensions over
Llama-2's 32,000 tokens; ``pip install --no-deps --require-hashes -r requirements/bench-data.txt``)
the same way as offramp's table, read from the package's files.

With ``--export`` a model of static embeddings alone (the exportable family) is trained on split 0,
exported as float and int8 ONNX and run by onnxruntime on the whole test set: label agreement with
offramp, the largest probability difference, accuracy, size. ``--web`` runs the float export in
onnxruntime-web inside headless Chromium too (needs ``npm ci --prefix tests/web`` and Chromium).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import banking77, clinc150, print_table


def inbox():
    import csv

    from offramp.demo.data import demo_paths

    tr, te, _ = demo_paths()

    def load(p):
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [r["text"] for r in rows], [r["label"] for r in rows]

    return load(tr), load(te), None


SETS = {"inbox": inbox, "banking77": banking77, "clinc150": clinc150}


def split(data, k: int):
    (Xtr, ytr), (Xte, yte), _ = data
    if k == 0:
        return Xtr, ytr, Xte, yte
    X, y = list(Xtr) + list(Xte), list(ytr) + list(yte)
    Xtr2, Xte2, ytr2, yte2 = train_test_split(X, y, test_size=len(Xte), stratify=y, random_state=k)
    return Xtr2, ytr2, Xte2, yte2


def register_wordllama() -> None:
    """wordllama's table as a static encoder named ``static-wordllama`` (this process only)."""
    import importlib.util

    from offramp.encoders import sentence
    from offramp.encoders.mpnet import read_safetensors
    from offramp.encoders.static import FORMAT, StaticEncoder, vectors_sha256

    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "wordllama is not installed: pip install --no-deps --require-hashes -r requirements/bench-data.txt"
        )
    root = Path(list(spec.submodule_search_locations)[0])
    vectors = next(iter(read_safetensors(root / "weights" / "l2_supercat_256.safetensors").values()))
    vectors = np.asarray(vectors, dtype=np.float16)
    tok = (root / "tokenizers" / "l2_supercat_tokenizer_config.json").read_text(encoding="utf-8")
    manifest = {
        "format": FORMAT, "name": "static-wordllama", "vocab_size": int(vectors.shape[0]), "dim": int(vectors.shape[1]),
        "vectors_sha256": vectors_sha256(vectors), "source": {"encoder": "wordllama l2_supercat_256"},
    }  # fmt: skip
    enc = StaticEncoder(manifest, vectors, tok)
    sentence.register_encoder(
        sentence.EncoderInfo("static-wordllama", "wordllama l2_supercat_256", "wordllama", "", enc.dim, ("en",),
                             vectors.nbytes / 1e6, "", "MIT", "", lambda: enc, lambda: True)
    )  # fmt: skip
    from offramp.estimators.stacked import StackedLinear

    StackedLinear._parameter_constraints["encoder"][0].options.add("static-wordllama")


def models(wordllama: bool = False, tiers: list[str] | None = None):
    from offramp.estimators.stacked import StackedLinear
    from offramp.estimators.tfidf import TfidfLinear

    tf = dict(word_ngrams=(1, 2), char_ngrams=(1, 4), min_df=2)
    out = {
        "fast (TF-IDF)": lambda: TfidfLinear(**tf, loss="svm", C=0.5),
        "static-stacked": lambda: StackedLinear(**tf, loss="svm", C=1.0, embed_weight=2.0, encoder="static-minilm"),
        "MiniLM-stacked": lambda: StackedLinear(**tf, loss="svm", C=0.5, embed_weight=1.5, encoder="minilm"),
    }
    if wordllama:
        out["wordllama-stacked"] = lambda: StackedLinear(
            **tf, loss="svm", C=1.0, embed_weight=2.0, encoder="static-wordllama"
        )
    if tiers:
        out = {k: v for k, v in out.items() if any(k.lower().startswith(t.lower()) for t in tiers)}
    return out


def latency(fn, texts, n: int = 2000, max_seconds: float = 15.0) -> tuple[float, float]:
    """p50 and p99 ms of single messages: n of them, or fewer when that takes over max_seconds
    (at least 300)."""
    for t in texts[:20]:
        fn(t)
    out, t_end = [], time.perf_counter() + max_seconds
    for i in range(n):
        t0 = time.perf_counter()
        fn(texts[i % len(texts)])
        out.append(time.perf_counter() - t0)
        if i >= 300 and t0 > t_end:
            break
    return float(np.percentile(out, 50) * 1e3), float(np.percentile(out, 99) * 1e3)


def batch_speed(fn, texts, min_n: int = 30_000, max_seconds: float = 20.0) -> float:
    """Messages per second of batch prediction: the test set repeated to min_n messages, or for
    max_seconds when that comes first (whole passes of at most 2,000 messages)."""
    chunk = list(texts[:2000])
    fn(chunk[:200])
    n, t0 = 0, time.perf_counter()
    while n < min_n and time.perf_counter() - t0 < max_seconds:
        fn(chunk)
        n += len(chunk)
    return n / (time.perf_counter() - t0)


def measure(name, make, Xtr, ytr, Xte, yte, tmp: Path) -> dict:
    from offramp import load
    from offramp.modeldir.store import model_bytes

    t0 = time.perf_counter()
    m = make().fit(Xtr, ytr)
    fit_s = time.perf_counter() - t0
    d = tmp / name.split()[0]
    shutil.rmtree(d, ignore_errors=True)
    m.save(d)
    m = load(d)
    y = np.asarray(yte)
    with m.uncached():
        pred = np.asarray(m.predict(Xte))
        p50, p99 = latency(m.predict_one, Xte)
        tput = batch_speed(m.predict, Xte)
    ins = y != "oos"
    return {
        "acc": float((pred == y).mean()),
        "f1": float(f1_score(y, pred, average="macro")),
        "in_scope": float((pred[ins] == y[ins]).mean()) if (~ins).any() else None,
        "fit_s": fit_s,
        "tput": tput,
        "p50": p50,
        "p99": p99,
        "mb": model_bytes(d) / 1e6,
    }


def compare(names: list[str], n_splits: int, wordllama: bool = False, tiers: list[str] | None = None) -> None:
    os.environ["OFFRAMP_CACHE_DIR"] = tempfile.mkdtemp(prefix="offramp-bench-cache-")
    tmp = Path(tempfile.mkdtemp(prefix="offramp-static-bench-"))
    for set_name in names:
        data = SETS[set_name]()
        per: dict[str, list[dict]] = {}
        rows = []
        for k in range(n_splits):
            Xtr, ytr, Xte, yte = split(data, k)
            for mname, make in models(wordllama, tiers).items():
                r = measure(mname, make, Xtr, ytr, Xte, yte, tmp)
                per.setdefault(mname, []).append(r)
                rows.append(
                    [k, mname, f"{r['acc']:.4f}", f"{r['f1']:.4f}", "—" if r["in_scope"] is None else f"{r['in_scope']:.4f}",
                     f"{r['fit_s']:.1f}", f"{r['tput']:,.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}", f"{r['mb']:.1f}"]
                )  # fmt: skip
                print(f"  {set_name} split {k} {mname}: acc {r['acc']:.4f}", file=sys.stderr, flush=True)
        for mname, rs in per.items():
            acc = [r["acc"] for r in rs]
            ins = [r["in_scope"] for r in rs if r["in_scope"] is not None]
            rows.append(
                ["mean", mname, f"{np.mean(acc):.4f}", f"{np.mean([r['f1'] for r in rs]):.4f}",
                 f"{np.mean(ins):.4f}" if ins else "—", "", f"{np.mean([r['tput'] for r in rs]):,.0f}",
                 "", f"{np.mean([r['p99'] for r in rs]):.2f}", ""]
            )  # fmt: skip
            rows.append(
                ["weakest", mname, f"{min(acc):.4f}", f"{min(r['f1'] for r in rs):.4f}",
                 f"{min(ins):.4f}" if ins else "—", "", f"{min(r['tput'] for r in rs):,.0f}",
                 "", f"{max(r['p99'] for r in rs):.2f}", ""]
            )  # fmt: skip
        print_table(
            f"{set_name}: {len(Xtr):,} train / {len(Xte):,} test, {n_splits} split(s)",
            [
                "split",
                "model",
                "accuracy",
                "macro-F1",
                "in-scope acc",
                "fit s",
                "batch msg/s",
                "p50 ms",
                "p99 ms",
                "MB",
            ],
            rows,
        )
        if not {"static-stacked", "MiniLM-stacked", "fast (TF-IDF)"} <= set(per):
            continue
        gaps = [s["acc"] - t["acc"] for s, t in zip(per["static-stacked"], per["MiniLM-stacked"])]
        print(
            f"\nstatic-stacked minus MiniLM-stacked accuracy: mean {np.mean(gaps):+.4f}, weakest {min(gaps):+.4f}; "
            f"minus fast: mean {np.mean([s['acc'] - f['acc'] for s, f in zip(per['static-stacked'], per['fast (TF-IDF)'])]):+.4f}"
        )
    shutil.rmtree(tmp, ignore_errors=True)


def choice(names: list[str]) -> None:
    from offramp import train
    from offramp.data.io import Dataset

    rows = []
    for set_name in names:
        Xtr, ytr, Xte, yte = split(SETS[set_name](), 0)
        y = np.asarray(yte)
        for quality in ("auto", "balanced"):
            t0 = time.perf_counter()
            model, rep = train(Dataset(list(Xtr), list(ytr), set_name), quality=quality, time_limit=None)
            secs = time.perf_counter() - t0
            with model.uncached():
                pred = np.asarray(model.predict(Xte))
                tput = batch_speed(model.predict, Xte)
            win = next(c for c in rep.candidates if c.name == rep.winner)
            rows.append(
                [set_name, "auto (cheapest within 1 SE)" if quality == "auto" else "balanced (most accurate)",
                 rep.winner, f"{win.cv_macro_f1:.4f} ± {win.cv_macro_f1_se:.4f}",
                 f"{f1_score(y, pred, average='macro'):.4f}", f"{tput:,.0f}", f"{secs:.0f}"]
            )  # fmt: skip
            print(f"  {set_name} {quality}: {rep.winner}", file=sys.stderr, flush=True)
    print_table(
        "what train chooses (split 0, every candidate)",
        ["set", "rule", "winner", "CV macro-F1 ± SE", "test macro-F1", "batch msg/s", "train s"],
        rows,
    )


def export_check(names: list[str], web: bool) -> None:
    import onnxruntime as ort

    from offramp.estimators.stacked import StackedLinear
    from offramp.export.onnx import encode_for_onnx, export_onnx

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="offramp-export-bench-"))
    for set_name in names:
        Xtr, ytr, Xte, yte = split(SETS[set_name](), 0)
        y = np.asarray(yte)
        m = StackedLinear(None, None, loss="logreg", C=10.0, encoder="static-minilm").fit(Xtr, ytr)
        q = m.predict_proba(Xte)
        acc = float((m.classes_[q.argmax(1)] == y).mean())
        for int8 in (False, True):
            res = export_onnx(m, tmp / f"{set_name}-{int(int8)}", int8=int8)
            feed = encode_for_onnx((Path(res.path) / "tokenizer.json").read_text(encoding="utf-8"), list(Xte))
            s = ort.InferenceSession(str(Path(res.path) / "model.onnx"), providers=["CPUExecutionProvider"])
            runs = [("onnxruntime", s.run(None, feed)[0])]
            if web and not int8:
                runs.append(("onnxruntime-web", run_in_browser(Path(res.path), feed, tmp / f"site-{set_name}")))
            for runtime, p in runs:
                rows.append(
                    [set_name, "int8" if int8 else "float", runtime, f"{(p.argmax(1) == q.argmax(1)).mean():.4%}",
                     f"{np.abs(p - q).max():.1e}", f"{acc:.4f}", f"{(m.classes_[p.argmax(1)] == y).mean():.4f}",
                     f"{res.size_bytes / 1e6:.1f}"]
                )  # fmt: skip
    print_table(
        "ONNX export of static embeddings alone (split 0, whole test set)",
        ["set", "table", "runtime", "same label", "max prob diff", "offramp acc", "export acc", "MB"],
        rows,
    )
    shutil.rmtree(tmp, ignore_errors=True)


def run_in_browser(model_dir: Path, feed: dict, site: Path) -> np.ndarray:
    """Run ``model_dir``'s graph on ``feed`` in onnxruntime-web inside headless Chromium (the test
    suite's runner, tests/test_export.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_export import run_in_chromium

    title, text = run_in_chromium(model_dir, feed, site, timeout_ms=300_000)
    if title != "done":
        raise RuntimeError(text)
    return np.asarray(json.loads(text), dtype=np.float64).reshape(feed["input_ids"].shape[0], -1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("sets", nargs="*", default=list(SETS))
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--choice", action="store_true", help="also compare train's auto choice with the most accurate")
    ap.add_argument("--export", action="store_true", help="also check the ONNX export on each test set")
    ap.add_argument("--web", action="store_true", help="with --export: in onnxruntime-web in Chromium too")
    ap.add_argument("--no-compare", action="store_true", help="skip the tier comparison")
    ap.add_argument("--wordllama", action="store_true", help="also stack wordllama's shipped table")
    ap.add_argument("--tiers", help="comma-separated rows to run (fast, static, minilm, wordllama); default all")
    args = ap.parse_args()
    if args.wordllama:
        register_wordllama()
    if not args.no_compare:
        compare(args.sets, args.splits, args.wordllama, args.tiers.split(",") if args.tiers else None)
    if args.choice:
        choice(args.sets)
    if args.export:
        export_check(args.sets, args.web)
