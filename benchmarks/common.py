"""Shared helpers for the benchmark scripts: data loading, timing, table printing."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"


def banking77():
    def load(name):
        with open(DATA / "banking77" / name, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [r["text"] for r in rows], [r["category"] for r in rows]

    return load("train.csv"), load("test.csv"), None


def clinc150(oos_as_class: bool = True):
    """((train texts, labels), (test texts, labels), (val texts, labels)); oos items labelled 'oos'."""
    d = json.loads((DATA / "clinc150" / "data_full.json").read_text())

    def split(*keys):
        items = [x for k in keys for x in d[k]]
        return [t for t, _ in items], [lab for _, lab in items]

    if oos_as_class:
        return split("train", "val", "oos_train", "oos_val"), split("test", "oos_test"), None
    return split("train", "oos_train"), split("test", "oos_test"), split("val", "oos_val")


def latency_ms(fn, texts, n=2000):
    sample = [texts[i % len(texts)] for i in range(n)]
    for t in sample[:50]:
        fn(t)
    out = np.empty(n)
    for i, t in enumerate(sample):
        t0 = time.perf_counter()
        fn(t)
        out[i] = time.perf_counter() - t0
    return float(np.percentile(out, 50) * 1e3), float(np.percentile(out, 99) * 1e3)


def throughput(fn, texts, min_n=30_000):
    batch = list(texts) * max(1, -(-min_n // len(texts)))
    fn(batch[:1000])
    t0 = time.perf_counter()
    fn(batch)
    return len(batch) / (time.perf_counter() - t0)


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
