"""Streaming predictions at scale: N messages (real inbox texts repeated with variations) as Parquet
shards through `offramp predict --input DIR --output DIR`, with 1 and 2 workers, against the
in-process batch throughput on the same messages; peak RSS of all processes together (sampled
from /proc every 50 ms).

    python3 benchmarks/stream.py [--n 2000000] [--shard-rows 250000] [--ray]

Targets (issue: scale out): peak RSS <= 1 GB for all processes; end to end >= 80% of the
in-process batch throughput; >= 30,000 rows/s with the fast tier on short inbox-style messages.

With --ray it also runs `--engine ray` on the same shards: a Ray started in process (one node, two
CPUs), then a local cluster of one node process with two CPUs and of two node processes with one
CPU each (`ray start --head` + `ray start --address`); each output is compared with the local
engine's, row for row. Target: Ray on one node >= 70% of the local engine's rows/s.
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

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths

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


def same_output(a: Path, b: Path) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(p: Path):
        return pa.concat_tables([pq.read_table(f) for f in sorted(p.iterdir())])

    return table(a).equals(table(b))


def ray_rows(model_dir: Path, shards: Path, d: Path, n: int, local_row: list[str], inproc: float) -> list[list[str]]:
    """The Ray engine on the same shards: in process, then local clusters of one and two node processes."""
    import shutil
    import socket

    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    local_rate = float(local_row[2].replace(",", ""))
    out_rows = []

    def predict(label: str, extra: list[str], nodes: str) -> None:
        out = d / f"ray-{len(out_rows)}"
        cmd = [sys.executable, "-m", "offramp", "predict", str(model_dir), "--input", str(shards)]
        cmd += ["--output", str(out), "--keep-columns", "id", "--engine", "ray", "--quiet", *extra]
        secs, peak, err = run_measured(cmd)
        if not out.exists():
            raise SystemExit(f"{label} failed: {err}")
        rate = n / secs
        same = "yes" if same_output(out, d / "out2") else "NO"
        out_rows.append(
            [label, nodes, f"{rate:,.0f}", f"{peak:,.0f}", f"{rate / inproc:.0%}", f"{rate / local_rate:.0%}", same]
        )
        shutil.rmtree(out)

    predict("offramp predict --engine ray (Ray started in process)", [], "1 (2 CPUs)")
    import secrets

    # the clusters below use token authentication, as Ray 2.60 does by default: one token for all
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    os.environ.update(RAY_AUTH_MODE=env["RAY_AUTH_MODE"], RAY_AUTH_TOKEN=env["RAY_AUTH_TOKEN"])
    for layout in ([2], [1, 1]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)
        subprocess.run(
            [ray_bin, "start", "--head", f"--port={port}", f"--num-cpus={layout[0]}", "--include-dashboard=false"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        try:
            for cpus in layout[1:]:
                subprocess.run(
                    [ray_bin, "start", f"--address=127.0.0.1:{port}", f"--num-cpus={cpus}"],
                    env=env, check=True, capture_output=True,
                )  # fmt: skip
            label = f"offramp predict --engine ray --address (local cluster, {len(layout)} node process(es))"
            predict(label, ["--address", f"127.0.0.1:{port}"], " + ".join(f"{c} CPU" for c in layout))
        finally:
            subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)
    return out_rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--shard-rows", type=int, default=250_000)
    ap.add_argument("--model", default=None, help="a fast-tier model directory (default: train one on the inbox)")
    ap.add_argument("--ray", action="store_true", help="also the Ray engine, in process and on local clusters")
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
        rows = [
            ["in process, model.predict on a list (no reading or writing)", "1", f"{inproc:,.0f}", "—", "—", "—", "—"]
        ]
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
                    "—",
                    "—",
                ]
            )
        if args.ray:
            rows += ray_rows(model_dir, shards, d, args.n, rows[-1], inproc)
        print(
            f"{args.n:,} messages in {written // args.shard_rows} Parquet shards; median length {median_chars:.0f} characters"
        )
        print_table(
            "streaming predictions (fast tier)",
            [
                "how",
                "workers / nodes",
                "rows/s",
                "peak RSS MB (all processes)",
                "of in-process",
                "of local engine (2 workers)",
                "same output as local",
            ],
            rows,
        )


if __name__ == "__main__":
    main()
