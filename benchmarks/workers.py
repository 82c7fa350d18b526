"""Requests/s of `offramp serve --workers N` against a bare FastAPI endpoint with the same workers.

    apt-get install wrk            # the load generator (a separate process)
    python benchmarks/workers.py [SECONDS] [ROUNDS]

Four servers: the bare endpoint (benchmarks/bare_app.py) under uvicorn with 1 and 2 worker
processes (benchmarks/bare_serve.py: the listening socket made as offramp makes it, see below), and `offramp serve` of the fast tier trained on the bundled inbox with `--workers 1`
and `--workers 2`. wrk (2 threads, 32 connections) sends single-message POST /v1/classify
requests with real inbox texts. The servers take turns for ROUNDS rounds (default 4) of SECONDS
(default 5) each; the table gives medians and the ratios are medians of the rounds' ratios.
wrk runs on the same machine and takes CPU from the servers: on a 2-core machine two workers
share the cores with it, which the table shows as it is.

Target (issue: scale out): 2 workers >= 1.6x the requests/s of 1 worker.

uvicorn's own `--workers N` (0.54) makes its listening socket without marking it TCP, so asyncio
never turns on TCP_NODELAY for the connections it accepts and every keep-alive request after the
first waits about 40 ms for the client's delayed ACK (uvicorn issue #3149: 728 requests/s for the
bare endpoint with 2 workers, here). `offramp serve --workers` and bare_serve.py make the socket
themselves.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import free_port, lua_script, run_wrk, wait_up

from common import print_table

HERE = Path(__file__).resolve().parent


def main(seconds: int, rounds: int) -> None:
    from offramp import train
    from offramp.data.io import read_dataset
    from offramp.demo.data import demo_paths

    train_path, test_path, _ = demo_paths()
    texts = [t for t in read_dataset(test_path).texts if len(t) < 2000][:300]
    work = Path(tempfile.mkdtemp(prefix="offramp-workers-bench-"))
    model, _ = train(read_dataset(train_path), quality="fast", time_limit=30)
    model.save(work / "model")
    script = work / "post.lua"
    script.write_text(lua_script(texts))
    bare = [sys.executable, "bare_serve.py"]
    ours = [sys.executable, "-m", "offramp", "serve", str(work / "model"), "--rate-limit", "1e9"]
    servers = {
        ("bare FastAPI endpoint", 1): bare + ["--workers", "1"],
        ("bare FastAPI endpoint", 2): bare + ["--workers", "2"],
        ("offramp serve (fast tier)", 1): ours + ["--workers", "1"],
        ("offramp serve (fast tier)", 2): ours + ["--workers", "2"],
    }
    runs: dict[tuple[str, int], list[dict]] = {k: [] for k in servers}
    for _ in range(rounds):
        for key, cmd in servers.items():  # one server at a time: the others would take CPU
            port = free_port()
            proc = subprocess.Popen(
                cmd + ["--port", str(port)], cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            try:
                url = f"http://127.0.0.1:{port}"
                wait_up(url, proc)
                run_wrk(url, script, 1, connections=32, threads=2)  # warm every worker
                runs[key].append(run_wrk(url, script, seconds, connections=32, threads=2))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    med = statistics.median
    rows = []
    for (name, w), rs in runs.items():
        one = runs[(name, 1)]
        rows.append(
            [
                name,
                str(w),
                f"{med(r['rps'] for r in rs):,.0f}",
                f"{med(r['p50'] for r in rs):.2f}",
                f"{med(r['p99'] for r in rs):.2f}",
                f"{med(a['rps'] / b['rps'] for a, b in zip(rs, one)):.2f}x",
                sum(r["non2xx"] for r in rs),
            ]
        )
    print_table(
        f"single-message POST /v1/classify, wrk 2 threads 32 connections, {rounds} rounds of {seconds} s (medians)",
        ["server", "workers", "requests/s", "p50 ms", "p99 ms", "of 1 worker", "non-2xx"],
        rows,
    )
    o1, o2 = runs[("offramp serve (fast tier)", 1)], runs[("offramp serve (fast tier)", 2)]
    b2 = runs[("bare FastAPI endpoint", 2)]
    print(
        f"\nofframp with 2 workers: {med(a['rps'] / b['rps'] for a, b in zip(o2, o1)):.2f}x its 1-worker requests/s "
        f"(target >= 1.6x), {100 * med(a['rps'] / b['rps'] for a, b in zip(o2, b2)):.0f}% of the bare endpoint "
        "with 2 workers"
    )


if __name__ == "__main__":
    args = sys.argv[1:3]
    if not all(a.isdigit() and int(a) > 0 for a in args):
        raise SystemExit("usage: python benchmarks/workers.py [SECONDS] [ROUNDS]  (whole numbers above 0)")
    main(int(args[0]) if args else 5, int(args[1]) if len(args) > 1 else 4)
