"""Training on the seed's volume: `offramp train` with the fast tier on a ~200 MB CSV of 2.04 M rows,
timed, with the peak RSS of all its processes, then the model loaded and scored on Banking77's
test split.

    python3 benchmarks/large_train.py [--rows 2040000] [--keep DIR]

The rows are Banking77's training texts (77 intents; license in ../shared/benchmarks) with
variations, so that nearly every row is distinct: a customer reference, a channel tag and one of
a few openings and closings around the real text (about 100 bytes a row).

Target (issue: hardening): 2 M rows train in <= 15 minutes at <= 4 GB peak RSS (all processes
together), and the model loads.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from stream import run_measured

from common import print_table

HERE = Path(__file__).resolve().parent

BANKING = HERE.parents[1] / "shared" / "benchmarks" / "banking77"
OPENINGS = ["", "hi, ", "hello, ", "hey team, ", "good morning, ", "excuse me, ", "quick question: "]
CLOSINGS = ["", " thanks", " thank you", " please help", " asap", " (sent from my phone)", "?", " cheers"]
CHANNELS = ["app", "web", "email", "chat", "phone"]


def read(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["text"], r["category"] if "category" in r else r["label"]) for r in csv.DictReader(f)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_040_000)
    ap.add_argument("--keep", default=None, help="write the CSV and the model here instead of a temporary directory")
    args = ap.parse_args()
    base = read(BANKING / "train.csv")
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.keep or tmp)
        d.mkdir(parents=True, exist_ok=True)
        data = d / "large.csv"
        with open(data, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for _ in range(args.rows):
                text, label = base[rng.randrange(len(base))]
                ref = f"[{rng.choice(CHANNELS)} #{rng.randrange(10**7):07d}] "
                w.writerow([ref + rng.choice(OPENINGS) + text + rng.choice(CLOSINGS), label])
        size_mb = data.stat().st_size / 1e6
        model = d / "model"
        cmd = [sys.executable, "-m", "offramp", "train", str(data), "--out", str(model), "--quality", "fast"]
        secs, peak, err = run_measured(cmd)
        if not model.exists():
            raise SystemExit(f"training failed:\n{err}")
        t0 = time.perf_counter()
        from offramp import load

        m = load(model)
        load_s = time.perf_counter() - t0
        test = read(BANKING / "test.csv")
        pred = m.predict([t for t, _ in test])
        from sklearn.metrics import f1_score

        f1 = f1_score([lab for _, lab in test], [str(p) for p in pred], average="macro")
        print(err.strip().splitlines()[-1] if err.strip() else "")
        print_table(
            f"offramp train --quality fast on {args.rows:,} rows ({size_mb:.0f} MB CSV, Banking77 texts with variations)",
            ["rows", "CSV MB", "train s", "peak RSS MB (all processes)", "model loads in s", "Banking77 test macro-F1"],
            [[f"{args.rows:,}", f"{size_mb:.0f}", f"{secs:.0f}", f"{peak:,.0f}", f"{load_s:.2f}", f"{f1:.4f}"]],
        )
        print("\nthe train command said:\n" + err.strip())


if __name__ == "__main__":
    main()
