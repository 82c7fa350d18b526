"""Requests/s and latency of `offramp serve` beside a bare FastAPI endpoint, measured in the same run.

    apt-get install wrk            # the load generator (a separate process)
    python benchmarks/serving.py [SECONDS]

Both servers run one uvicorn worker on loopback; wrk sends single-message POST /v1/classify
requests (16 connections, 1 thread) with real support-inbox texts for SECONDS (default 10) each.
offramp serves the fast tier trained on the bundled inbox data, as a model directory and as a
pipeline with the privacy guard (fast path) and the audit log on (one committed record per
request). Memory is the server's resident size after 1,000 and after 100,000 requests.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402

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


def run_wrk(url: str, script: Path, seconds: int, connections: int = 16) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url + "/v1/classify"], capture_output=True, text=True, check=True).stdout

    def ms(label):
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": ms("50"), "p99": ms("99"), "non2xx": int(errors.group(1)) if errors else 0}


def main(seconds: int) -> None:
    from offramp.data.demo import demo_paths
    from offramp.data.io import read_dataset
    from offramp.models.training import train

    train_path, test_path, _ = demo_paths()
    texts = [t for t in read_dataset(test_path).texts if len(t) < 2000][:300]
    work = Path(tempfile.mkdtemp(prefix="offramp-serve-bench-"))
    train(read_dataset(train_path), work / "model", quality="fast", time_limit=30)
    (work / "guarded.yaml").write_text("model: model\nprivacy: {operator: placeholder}\naudit: audit.sqlite\n")
    script = work / "post.lua"
    script.write_text(lua_script(texts))
    rows, mem = [], []
    servers = {
        "bare FastAPI endpoint": [sys.executable, "-m", "uvicorn", "bare_app:app", "--log-level", "warning", "--no-access-log"],
        "offramp serve (fast tier)": [sys.executable, "-m", "offramp", "serve", str(work / "model"), "--rate-limit", "1e9"],
        "offramp serve (fast tier + privacy guard + audit log)": [
            sys.executable, "-m", "offramp", "serve", str(work / "guarded.yaml"), "--rate-limit", "1e9"],
    }
    results = {}
    for name, cmd in servers.items():
        port = free_port()
        proc = subprocess.Popen(cmd + ["--port", str(port)], cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_up(url, proc)
            with httpx.Client() as c:
                for t in (texts * 4)[:1000]:
                    c.post(url + "/v1/classify", json={"text": t})
            after_1k = rss_mb(proc.pid)
            r = run_wrk(url, script, seconds)
            results[name] = r
            rows.append([name, f"{r['rps']:,.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}", r["non2xx"]])
            if name == "offramp serve (fast tier)":
                done = 1000 + int(r["rps"] * seconds)
                while done < 100_000:  # top up to 100k requests in total
                    extra = run_wrk(url, script, seconds)
                    done += int(extra["rps"] * seconds)
                mem.append([name, f"{after_1k:.0f}", f"{rss_mb(proc.pid):.0f}", f"{done:,}"])
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print_table(f"single-message POST /v1/classify, wrk 1 thread 16 connections, {seconds} s", 
                ["server", "requests/s", "p50 ms", "p99 ms", "non-2xx"], rows)
    base, ours = results["bare FastAPI endpoint"], results["offramp serve (fast tier)"]
    print(f"\nofframp at {100 * ours['rps'] / base['rps']:.0f}% of the bare endpoint's requests/s (target >= 60%), "
          f"p99 {ours['p99']:.2f} ms (target <= 20 ms)")
    g = results["offramp serve (fast tier + privacy guard + audit log)"]
    print(f"with the guard and the audit log: {100 * g['rps'] / base['rps']:.0f}% of the bare endpoint, p99 {g['p99']:.2f} ms")
    print_table("memory (resident set)", ["server", "MB after 1k requests", "MB after all requests", "requests served"], mem)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
