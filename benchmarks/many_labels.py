"""Thousands of labels: `offramp train --time-limit 30` on 2,000 to 20,000 distinct labels.

    python3 benchmarks/many_labels.py

The sets are synthetic (no public set has this many labels): each label has three key words of its
own, and each message two of them among four words of shared noise; 3 messages per label (and 10
for one 10,000-label set). Each run is a separate `offramp train` process, measured from outside:
wall time, peak RSS (of that process, from wait4), the held-out accuracy and the single-message
p99 latency train reports, and the model directory's size; beside it, the size a linear model's
weights (features x labels, float32) would take on the same features. Then `offramp eval` of each
model on one new message per label (another seed), also a separate process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from offramp.registry.records import load

from common import print_table


def write_set(path: Path, n_labels: int, per_label: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    noise = [f"n{i}" for i in range(5000)]
    texts, labels = [], []
    for lab in range(n_labels):
        key = [f"k{lab}a", f"k{lab}b", f"k{lab}c"]
        for _ in range(per_label):
            texts.append(" ".join(list(rng.choice(key, 2, replace=False)) + list(rng.choice(noise, 4, replace=False))))
            labels.append(f"L{lab}")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    return texts, labels


def run(cmd: list[str]) -> tuple[str, float, float]:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = p.stdout.read() if p.stdout else ""
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.read() if p.stderr else ''}")
    return out, time.perf_counter() - t0, usage.ru_maxrss / 1024 / 1024  # GiB (ru_maxrss is KiB on Linux)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n_labels, per in ((2_000, 3), (10_000, 3), (20_000, 3)):
            data = tmp / f"l{n_labels}x{per}.csv"
            write_set(data, n_labels, per)
            out = tmp / f"m{n_labels}x{per}"
            cmd = [sys.executable, "-m", "offramp", "train", str(data), "--out", str(out)]
            text, secs, rss = run(cmd + ["--time-limit", "30", "--json", "-q"])
            rep = json.loads(text)
            p99 = rep["latency_ms"]["p99"]
            test = tmp / f"t{n_labels}.csv"  # one new message per label
            write_set(test, n_labels, 1, seed=1)
            ev_text, ev_secs, ev_rss = run(
                [sys.executable, "-m", "offramp", "eval", str(out), str(test), "--json", "-q"]
            )
            ev = json.loads(ev_text)
            n_features = load(out).coef_.shape[0]
            size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
            rows.append(
                [
                    f"{n_labels:,}",
                    f"{n_labels * per:,}",
                    rep["winner"],
                    f"{rep['cv_accuracy']:.4f}",
                    f"{secs:.1f}",
                    f"{rss:.2f}",
                    f"{size:.1f}",
                    f"{n_features * n_labels * 4 / 1e9:.1f}",
                    f"{p99:.2f}",
                    f"{ev['accuracy']:.4f}",
                    f"{ev_secs:.1f}",
                    f"{ev_rss:.2f}",
                ]
            )
        print_table(
            "offramp train --time-limit 30 (separate processes)",
            [
                "labels",
                "rows",
                "model",
                "held-out accuracy",
                "wall s",
                "peak RSS GiB",
                "model MB",
                "linear weights would be GB",
                "p99 ms (one message)",
                "eval accuracy (new messages)",
                "eval wall s",
                "eval peak RSS GiB",
            ],
            rows,
        )


if __name__ == "__main__":
    main()
