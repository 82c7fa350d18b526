"""Requests/s and latency of `offramp serve` beside a bare FastAPI endpoint, measured in the same run.

    apt-get install wrk            # the load generator (a separate process)
    python benchmarks/serving.py [SECONDS] [ROUNDS]

Every server runs one uvicorn worker on loopback; wrk sends single-message POST /v1/classify
requests (16 connections, 1 thread) with real support-inbox texts. offramp serves the fast tier
trained on the bundled inbox data, as a model directory and as a pipeline with the privacy guard
(fast path) and the audit log on (one committed record per request). The servers take turns for
ROUNDS rounds (default 4) of SECONDS (default 5) each, so a slow spell of a shared machine hits
them alike; the table gives medians, and the ratio is the median of the rounds' ratios. Memory is
the fast-tier server's resident size after 1,000 and after 100,000 requests.
"""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(proc.stderr.read())
        try:
            httpx.get(url + "/docs", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("server did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def lua_script(texts: list[str]) -> str:
    bodies = ",".join(json.dumps(json.dumps({"text": t})) for t in texts)
    return f"""
local bodies = {{{bodies}}}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def run_wrk(url: str, script: Path, seconds: int, connections: int = 16, threads: int = 1) -> dict:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url + "/v1/classify",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label):
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": ms("50"), "p99": ms("99"), "non2xx": int(errors.group(1)) if errors else 0}


def main(seconds: int, rounds: int) -> None:
    from offramp import train
    from offramp.data.io import read_dataset
    from offramp.demo.data import demo_paths

    train_path, test_path, _ = demo_paths()
    texts = [t for t in read_dataset(test_path).texts if len(t) < 2000][:300]
    work = Path(tempfile.mkdtemp(prefix="offramp-serve-bench-"))
    model, _ = train(read_dataset(train_path), quality="fast", time_limit=30)
    model.save(work / "model")
    (work / "guarded.yaml").write_text("model: model\nprivacy: {operator: placeholder}\naudit: audit.sqlite\n")
    script = work / "post.lua"
    script.write_text(lua_script(texts))
    rows, mem = [], []
    servers = {
        "bare FastAPI endpoint": [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        "offramp serve (fast tier)": [
            sys.executable,
            "-m",
            "offramp",
            "serve",
            str(work / "model"),
            "--rate-limit",
            "1e9",
        ],
        "offramp serve (fast tier + privacy guard + audit log)": [
            sys.executable,
            "-m",
            "offramp",
            "serve",
            str(work / "guarded.yaml"),
            "--rate-limit",
            "1e9",
        ],
    }
    procs, urls, after_1k = {}, {}, {}
    try:
        for name, cmd in servers.items():
            port = free_port()
            procs[name] = subprocess.Popen(
                cmd + ["--port", str(port)], cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            urls[name] = f"http://127.0.0.1:{port}"
            wait_up(urls[name], procs[name])
            with httpx.Client() as c:
                for t in (texts * 4)[:1000]:
                    c.post(urls[name] + "/v1/classify", json={"text": t})
            after_1k[name] = rss_mb(procs[name].pid)
        runs = {name: [] for name in servers}
        served = {name: 1000 for name in servers}
        for _ in range(rounds):
            for name in servers:
                r = run_wrk(urls[name], script, seconds)
                runs[name].append(r)
                served[name] += int(r["rps"] * seconds)
        fast = "offramp serve (fast tier)"
        while served[fast] < 100_000:  # top the fast tier up to 100k requests in total
            served[fast] += int(run_wrk(urls[fast], script, seconds)["rps"] * seconds)
        mem.append([fast, f"{after_1k[fast]:.0f}", f"{rss_mb(procs[fast].pid):.0f}", f"{served[fast]:,}"])
        counted: dict[str, float] = {}  # each metric summed over its labels
        for line in httpx.get(urls[fast] + "/metrics").text.splitlines():
            if line and not line.startswith("#"):
                name = line.split("{")[0].split()[0]
                counted[name] = counted.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        per_call = counted.get("offramp_decisions_total", 0) / max(1.0, counted.get("offramp_model_calls_total", 0))
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=10)
    med = statistics.median
    for name in servers:
        rs = runs[name]
        rows.append(
            [
                name,
                f"{med(r['rps'] for r in rs):,.0f}",
                f"{med(r['p50'] for r in rs):.2f}",
                f"{med(r['p99'] for r in rs):.2f}",
                f"{max(r['p99'] for r in rs):.2f}",
                sum(r["non2xx"] for r in rs),
            ]
        )
    base = runs["bare FastAPI endpoint"]

    def ratio(name):
        return med(a["rps"] / b["rps"] for a, b in zip(runs[name], base))

    print_table(
        f"single-message POST /v1/classify, wrk 1 thread 16 connections, {rounds} rounds of {seconds} s (medians)",
        ["server", "requests/s", "p50 ms", "p99 ms", "worst p99 ms", "non-2xx"],
        rows,
    )
    ours = "offramp serve (fast tier)"
    print(
        f"\nofframp at {100 * ratio(ours):.0f}% of the bare endpoint's requests/s (target >= 60%; rounds: "
        + ", ".join(f"{100 * a['rps'] / b['rps']:.0f}%" for a, b in zip(runs[ours], base))
        + f"), p99 {med(r['p99'] for r in runs[ours]):.2f} ms (target <= 20 ms)"
    )
    g = "offramp serve (fast tier + privacy guard + audit log)"
    print(
        f"with the guard and the audit log: {100 * ratio(g):.0f}% of the bare endpoint, "
        f"p99 {med(r['p99'] for r in runs[g]):.2f} ms"
    )
    print(f"messages per small-model call under this load (requests that arrive together share one): {per_call:.1f}")
    print_table(
        "memory (resident set)", ["server", "MB after 1k requests", "MB after all requests", "requests served"], mem
    )


if __name__ == "__main__":
    args = sys.argv[1:3]
    if not all(a.isdigit() and int(a) > 0 for a in args):
        raise SystemExit("usage: python benchmarks/serving.py [SECONDS] [ROUNDS]  (whole numbers above 0)")
    main(int(args[0]) if args else 5, int(args[1]) if len(args) > 1 else 4)
