"""Streaming predictions at scale: N messages (real inbox texts repeated with variations) as Parquet
shards through `offramp predict --input DIR --output DIR`, with 1 and 2 workers, against the
in-process batch throughput on the same messages; peak RSS of all processes together (sampled
from /proc every 50 ms).

    python3 benchmarks/stream.py [--n 2000000] [--shard-rows 250000]

Targets (issue: scale out): peak RSS <= 1 GB for all processes; end to end >= 80% of the
in-process batch throughput; >= 30,000 rows/s with the fast tier on short inbox-style messages.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from offramp.data.demo import demo_paths
from offramp.data.io import read_dataset

from common import print_table


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parts = f.read().rsplit(")", 1)[1].split()
                children.setdefault(int(parts[1]), []).append(int(d))
            except OSError:
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
        todo += children.get(p, [])
    return total / 1024


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    done.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return time.perf_counter() - t0, peak[0], err


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--shard-rows", type=int, default=250_000)
    ap.add_argument("--model", default=None, help="a fast-tier model directory (default: train one on the inbox)")
    args = ap.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    from offramp import load, train

    base = read_dataset(demo_paths()[0])
    inbox = [t for t, lab in zip(base.texts, base.labels or []) if lab != "TRY_TO_HACK"]  # short inbox-style
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        model_dir = Path(args.model) if args.model else d / "model"
        if not args.model:
            model, _ = train(base.texts, base.labels, quality="fast", time_limit=None)
            model.save(model_dir)
        rng = random.Random(0)
        suffixes = ["", " please", " thanks", "!", " asap", " (sent from my phone)", " ?", " - urgent"]
        shards = d / "in"
        shards.mkdir()
        written = 0
        while written < args.n:
            n = min(args.shard_rows, args.n - written)
            texts = [rng.choice(inbox) + rng.choice(suffixes) for _ in range(n)]
            pq.write_table(
                pa.table({"id": range(written, written + n), "text": texts}), shards / f"{written:09d}.parquet"
            )
            written += n
        median_chars = statistics.median(len(t) for t in texts)
        model = load(model_dir)
        sample = texts[:200_000]
        model.predict(sample[:2000])
        t0 = time.perf_counter()
        model.predict(sample)
        inproc = len(sample) / (time.perf_counter() - t0)
        rows = [["in process, model.predict on a list (no reading or writing)", "1", f"{inproc:,.0f}", "—", "—"]]
        for workers in (1, 2):
            out = d / f"out{workers}"
            secs, peak, err = run_measured(
                [
                    sys.executable,
                    "-m",
                    "offramp",
                    "predict",
                    str(model_dir),
                    "--input",
                    str(shards),
                    "--output",
                    str(out),
                    "--keep-columns",
                    "id",
                    "--workers",
                    str(workers),
                    "--quiet",
                ]
            )
            rate = args.n / secs
            rows.append(
                [
                    "offramp predict, Parquet shards in and out",
                    str(workers),
                    f"{rate:,.0f}",
                    f"{peak:,.0f}",
                    f"{rate / inproc:.0%}",
                ]
            )
        print(
            f"{args.n:,} messages in {written // args.shard_rows} Parquet shards; median length {median_chars:.0f} characters"
        )
        print_table(
            "streaming predictions (fast tier)",
            ["how", "workers", "rows/s", "peak RSS MB (all processes)", "of in-process"],
            rows,
        )


if __name__ == "__main__":
    main()
