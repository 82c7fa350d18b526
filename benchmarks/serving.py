"""Requests/s and latency of `offramp serve` beside a bare FastAPI endpoint on the same uvicorn stack.

    apt-get install wrk            # the load generator (a separate process)
    python benchmarks/serving.py [SECONDS] [ROUNDS]

Every server runs one uvicorn worker on loopback with the same HTTP stack (httptools' parser and
uvloop's event loop, what `uvicorn[standard]` installs and `offramp serve` uses); wrk sends
single-message POST /v1/classify requests (2 threads, 32 connections) with real support-inbox
texts. offramp serves the fast tier trained on the bundled inbox data, as a model directory (the
default privacy guard, drift, console statistics on) and as a pipeline with the audit log on too
(one committed record per request). The servers take turns for ROUNDS rounds (default 4) of SECONDS
(default 5) each, so a slow spell of a shared machine hits them alike; the table gives medians, and
the ratio is the median of the rounds' ratios.

Then each server is loaded at half its measured maximum rate (each connection waits between
requests; wrk has no fixed-rate mode, so the rate reached is printed) for the p99 at half load, and
the fast-tier server is topped up to 100,000 requests for its resident memory then.
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
THREADS, CONNECTIONS = 2, 32


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


def lua_script(texts: list[str], delay_ms: float | None = None) -> str:
    bodies = ",".join(json.dumps(json.dumps({"text": t})) for t in texts)
    pace = f"\ndelay = function()\n  return {delay_ms:.3f}\nend\n" if delay_ms else ""
    return f"""
local bodies = {{{bodies}}}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
{pace}"""


def run_wrk(url: str, script: Path, seconds: int) -> dict:
    out = subprocess.run(
        [
            "wrk",
            f"-t{THREADS}",
            f"-c{CONNECTIONS}",
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
    from offramp import read_dataset, train
    from offramp.demo.data import demo_paths

    train_path, test_path, _ = demo_paths()
    texts = [t for t in read_dataset(test_path).texts if len(t) < 2000][:300]
    work = Path(tempfile.mkdtemp(prefix="offramp-serve-bench-"))
    model, _ = train(read_dataset(train_path), quality="fast", time_limit=30)
    model.save(work / "model")
    (work / "guarded.yaml").write_text("model: model\nprivacy: {operator: placeholder}\naudit: audit.sqlite\n")
    script = work / "post.lua"
    script.write_text(lua_script(texts))
    uvicorn_stack = ["--http", "httptools", "--loop", "uvloop", "--log-level", "warning", "--no-access-log"]
    servers = {
        "bare FastAPI endpoint": [sys.executable, "-m", "uvicorn", "bare_app:app", *uvicorn_stack],
        "offramp serve (fast tier)": [sys.executable, "-m", "offramp", "serve", str(work / "model"), "--rate-limit", "1e9"],
        "offramp serve (fast tier + audit log)": [
            sys.executable, "-m", "offramp", "serve", str(work / "guarded.yaml"), "--rate-limit", "1e9",
        ],
    }  # fmt: skip
    procs, urls, after_1k = {}, {}, {}
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    half: dict[str, dict] = {}
    fast = "offramp serve (fast tier)"
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
        served = {name: 1000 for name in servers}
        for _ in range(rounds):
            for name in servers:
                r = run_wrk(urls[name], script, seconds)
                runs[name].append(r)
                served[name] += int(r["rps"] * seconds)
        for name in servers:  # half the measured maximum: each connection waits between requests
            target = statistics.median(r["rps"] for r in runs[name]) / 2
            paced = work / f"paced-{len(half)}.lua"
            paced.write_text(lua_script(texts, delay_ms=1000 * CONNECTIONS / target))
            h = run_wrk(urls[name], paced, max(seconds, 10))
            h["target"] = target
            half[name] = h
            served[name] += int(h["rps"] * max(seconds, 10))
        while served[fast] < 100_000:  # top the fast tier up to 100k requests in total
            served[fast] += int(run_wrk(urls[fast], script, seconds)["rps"] * seconds)
        mem = [[fast, f"{after_1k[fast]:.0f}", f"{rss_mb(procs[fast].pid):.0f}", f"{served[fast]:,}"]]
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
    rows = []
    for name in servers:
        rs = runs[name]
        rows.append(
            [
                name,
                f"{med(r['rps'] for r in rs):,.0f}",
                f"{med(r['p50'] for r in rs):.2f}",
                f"{med(r['p99'] for r in rs):.2f}",
                f"{half[name]['rps']:,.0f}",
                f"{half[name]['p99']:.2f}",
                sum(r["non2xx"] for r in rs) + half[name]["non2xx"],
            ]
        )
    base = runs["bare FastAPI endpoint"]

    def ratio(name):
        return med(a["rps"] / b["rps"] for a, b in zip(runs[name], base))

    print_table(
        f"single-message POST /v1/classify, wrk {THREADS} threads {CONNECTIONS} connections, {rounds} rounds of "
        f"{seconds} s (medians), then half the maximum rate",
        ["server", "requests/s", "p50 ms", "p99 ms", "req/s at half load", "p99 ms at half load", "non-2xx"],
        rows,
    )
    print(
        f"\nofframp at {100 * ratio(fast):.0f}% of the bare endpoint's requests/s (target >= 80%; rounds: "
        + ", ".join(f"{100 * a['rps'] / b['rps']:.0f}%" for a, b in zip(runs[fast], base))
        + f"); p99 at half its maximum rate {half[fast]['p99']:.2f} ms (target <= 5 ms)"
    )
    g = "offramp serve (fast tier + audit log)"
    print(
        f"with the audit log on too: {100 * ratio(g):.0f}% of the bare endpoint, p99 at half load {half[g]['p99']:.2f} ms"
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
