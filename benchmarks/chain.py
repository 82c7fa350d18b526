"""A chain (router → one model per parent) against one flat model, on two-level label sets.

    python3 benchmarks/chain.py [--quality fast] [--splits 3] [--sets clinc,inbox-banking]

Sets (labels ``parent/child``):
- ``clinc``: CLINC150's 150 in-scope intents under their 10 domains (15 each). Split 0 is the
  published one (train + val to train on, test to score); splits 1.. are random stratified
  re-splits of all in-scope rows with the same test share.
- ``inbox-banking``: the bundled support inbox's router labels with SUPPORT refined into Banking77's
  77 intents: Banking77 rows are ``SUPPORT/<intent>``; the inbox's GRATITUDE, TRY_TO_HACK and OTHER
  rows are their own parents with one child each (no child model). Split 0: Banking77's test file
  and the inbox's test file; splits 1..: random re-splits.

Each split trains with ``train_hierarchy`` (which holds the same gate rows out of every model and
trains the flat model on the same rows), then scores both on the test rows: macro-F1 over the full
labels. Then the speed of a 4-stage chain (guard, router, child, action) against a single-stage
pipeline (guard, the flat model, action), measured in the same run: single-message p99 and batch
throughput on 2,000 test messages.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from offramp.chain.hierarchy import train_hierarchy
from offramp.chain.run import Chain, possible_labels
from offramp.data.io import Dataset
from offramp.demo.data import demo_paths
from offramp.evaluation.metrics import classification_metrics
from offramp.privacy.guard import PrivacyGuard
from offramp.registry.records import load
from offramp.runtime.actions import Reply
from offramp.runtime.cascade import Cascade

from common import DATA, latency_ms, print_table, throughput


def _clinc() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    d = json.loads((DATA / "clinc150" / "data_full.json").read_text())
    domains = json.loads((DATA / "clinc150" / "domains.json").read_text())
    parent = {i: dom for dom, intents in domains.items() for i in intents}

    def rows(*keys):
        return [(t, f"{parent[i]}/{i}") for k in keys for t, i in d[k]]

    return rows("train", "val"), rows("test")


def _inbox_banking() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    def read(path, text_col, label_col):
        with open(path, newline="", encoding="utf-8") as f:
            return [(r[text_col], r[label_col]) for r in csv.DictReader(f)]

    names = {"GRATITUDE": "GRATITUDE/thanks", "TRY_TO_HACK": "TRY_TO_HACK/attempt", "OTHER": "OTHER/other"}
    train_i, test_i, _ = demo_paths()
    inbox = [read(train_i, "text", "label"), read(test_i, "text", "label")]
    bank = [read(DATA / "banking77" / n, "text", "category") for n in ("train.csv", "test.csv")]
    out = []
    for b, i in zip(bank, inbox):
        out.append([(t, f"SUPPORT/{c}") for t, c in b] + [(t, names[lab]) for t, lab in i if lab in names])
    return out[0], out[1]


def _resplit(train, test, seed):
    """A random stratified split of all rows with the same test share."""
    rows = train + test
    share = len(test) / len(rows)
    by = defaultdict(list)
    for r in rows:
        by[r[1]].append(r)
    rng = random.Random(seed)
    tr, te = [], []
    for lab in sorted(by):
        group = by[lab][:]
        rng.shuffle(group)
        k = max(1, round(len(group) * share))
        te += group[:k]
        tr += group[k:]
    rng.shuffle(tr)
    return tr, te


def _macro(truth, pred) -> float:
    return classification_metrics(truth, pred)["macro_f1"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quality", default="fast")
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--sets", default="clinc,inbox-banking")
    args = ap.parse_args()
    sets = {"clinc": _clinc, "inbox-banking": _inbox_banking}
    quality_rows, speed_rows = [], []
    summary = []
    for name in args.sets.split(","):
        base_train, base_test = sets[name]()
        deltas = []
        for split in range(args.splits):
            train, test = (base_train, base_test) if split == 0 else _resplit(base_train, base_test, split)
            with tempfile.TemporaryDirectory() as d:
                ds = Dataset([t for t, _ in train], [lab for _, lab in train], f"{name}-train")
                t0 = time.perf_counter()
                rep = train_hierarchy(ds, Path(d) / "h", sep="/", quality=args.quality, seed=split)
                took = time.perf_counter() - t0
                chain = Chain.from_pipeline(rep.pipeline, llm=False)
                flat = load(Path(d) / "h" / "flat")
                texts, truth = [t for t, _ in test], [lab for _, lab in test]
                c_pred = chain.predict(texts)
                f_pred = [str(x) for x in flat.predict(texts)]
                c_f1, f_f1 = _macro(truth, c_pred), _macro(truth, f_pred)
                deltas.append(c_f1 - f_f1)
                winners = sorted({s.winner for s in rep.stages})
                quality_rows.append(
                    [
                        name,
                        split,
                        f"{len(train):,}/{len(test):,}",
                        len(rep.stages),
                        f"{c_f1:.4f}",
                        f"{f_f1:.4f}",
                        f"{c_f1 - f_f1:+.4f}",
                        ", ".join(winners) + f" / {rep.flat.winner if rep.flat else ''}",
                        f"{took:.0f}",
                    ]
                )
                print(quality_rows[-1], file=sys.stderr, flush=True)
                if split == 0:
                    speed_rows.append(_speed(name, rep, chain, flat, texts))
                chain.close()
        summary.append([name, f"{np.mean(deltas):+.4f}", f"{min(deltas):+.4f}", "✓" if min(deltas) >= -0.005 else "✗"])
    print_table(
        f"chain vs flat model, macro-F1 over full labels (quality {args.quality})",
        ["set", "split", "train/test", "models", "chain", "flat", "chain − flat", "chosen (stages / flat)", "train s"],
        quality_rows,
    )
    print_table("target: chain ≥ flat − 0.005 on every split", ["set", "mean", "weakest", ""], summary)
    print_table(
        "speed: 4-stage chain (guard, router, child, action) vs single-stage pipeline (guard, flat model, action)",
        [
            "set",
            "chain p50 ms",
            "chain p99 ms",
            "single p99 ms",
            "p99 ratio",
            "chain msg/s",
            "single msg/s",
            "batch ratio",
        ],
        speed_rows,
    )


def _speed(name: str, rep, chain: Chain, flat, texts: list[str]) -> list:
    """The chain with an action stage added, against the flat model in a one-model cascade."""
    import yaml

    doc = yaml.safe_load(Path(rep.pipeline).read_text())
    first = possible_labels(chain)[0]
    doc["stages"].append({"name": "act", "kind": "action", "actions": {first: {"type": "reply", "text": "ok"}}})
    p = Path(rep.pipeline).with_name("pipeline-act.yaml")
    p.write_text(yaml.safe_dump(doc))
    four = Chain.from_pipeline(p, llm=False)
    assert [s.kind for s in four.stages][:2] == ["guard", "classify"]
    single = Cascade(flat, guard=PrivacyGuard(), actions={first: Reply("ok")})
    sample = texts[:2000]
    c50, c99 = latency_ms(four.run, sample, n=2000)
    s50, s99 = latency_ms(single.run, sample, n=2000)
    # best of three runs each, taken in turns (a shared machine's noise hits both alike)
    c_rate = s_rate = 0.0
    for _ in range(3):
        c_rate = max(c_rate, throughput(lambda b: four.run_many(b), sample, min_n=20_000))
        s_rate = max(s_rate, throughput(lambda b: single.run_many(b, [None] * len(b)), sample, min_n=20_000))
    four.close()
    return [
        name,
        f"{c50:.3f}",
        f"{c99:.3f}",
        f"{s99:.3f}",
        f"{c99 / s99:.2f}× (≤ 3×)",
        f"{c_rate:,.0f}",
        f"{s_rate:,.0f}",
        f"{c_rate / s_rate:.0%} (≥ 50%)",
    ]


if __name__ == "__main__":
    main()
