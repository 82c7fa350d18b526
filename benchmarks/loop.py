"""The migration loop on live traffic, timed: shadow, capture, retrain behind the gate, promote,
rollback, drift — with the real CLI and a real server on loopback.

Two parts:

1. **Retrain + gate on 10,000 messages** (Banking77, fast tier): a registry's first version is
   trained on 9,000 messages of 76 intents; ``offramp retrain --add`` brings 1,000 more, among them
   every training example of the 77th intent, and judges the candidate on the Banking77 test split.
   Target: retrain + gate <= 2 minutes on this machine.
2. **The loop on the demo inbox**: a first version that never saw OTHER is served behind a pipeline
   in ``llm_first`` shadow mode, with an OpenAI-compatible server on loopback that answers from the
   gold labels (deterministic); 700 held-out messages go through it, then the shadow report,
   ``pool export``, ``retrain``, the promotion picked up by the running server, a rollback, and the
   drift signals before and after a burst of the unseen intent.

    python3 benchmarks/loop.py [--skip-banking]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from offramp.demo.data import demo_paths
from offramp.privacy.guard import PrivacyGuard

from common import banking77, print_table


def cli(*args: str, check: bool = True) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "offramp", *args], capture_output=True, text=True)
    took = time.perf_counter() - t0
    if check and r.returncode not in (0, 4):
        raise SystemExit(f"offramp {' '.join(args)} failed:\n{r.stderr}")
    return r, took


def write(path: Path, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


class GoldLLM:
    """An OpenAI-compatible chat endpoint answering each message with its gold label."""

    def __init__(self, gold: dict[str, str], unknown: str = "OTHER"):
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.calls += 1
                label = gold.get(body["messages"][-1]["content"], unknown)
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "model": "gold",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": label}}],
                        "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Served:
    def __init__(self, target: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "offramp", "serve", str(target), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(300):
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("the server did not start")

    def version(self) -> str:
        return httpx.get(self.url + "/readyz").json()["version"]

    def wait_for(self, version: str, limit: float = 10.0) -> float:
        t0 = time.perf_counter()
        while self.version() != version:
            if time.perf_counter() - t0 > limit:
                raise SystemExit(f"the server did not pick up {version}")
            time.sleep(0.05)
        return time.perf_counter() - t0

    def metric(self, name: str, **labels) -> float | None:
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if line.startswith(f"{name}{{{want}}} "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self) -> str:
        self.proc.terminate()
        return self.proc.communicate(timeout=20)[1]


def banking(d: Path) -> None:
    (train_t, train_y), (test_t, test_y), _ = banking77()
    held_intent = sorted(set(train_y))[10]
    rows = list(zip(train_t, train_y))
    random.Random(0).shuffle(rows)
    first = [r for r in rows if r[1] != held_intent][:9000]
    rest = [r for r in rows if r not in set(first)]
    intent_rows = [r for r in rest if r[1] == held_intent]
    added = intent_rows + [r for r in rest if r[1] != held_intent][: 1000 - len(intent_rows)]
    gate = write(d / "b77_gate.csv", zip(test_t, test_y))
    reg = d / "b77"
    r, t_train = cli(
        "train",
        str(write(d / "b77_first.csv", first)),
        "--registry",
        str(reg),
        "--gate",
        str(gate),
        "--quality",
        "fast",
        "--json",
        "-q",
    )
    table, t_default = [], None
    for drop in ("0.02", "0.05"):
        r, took = cli(
            "retrain", str(reg), "--add", str(write(d / "b77_add.csv", added)), "--max-class-drop", drop, "--json", "-q"
        )
        res = json.loads(r.stdout)
        m = res["gate"]["macro_f1"]
        t_default = t_default if t_default is not None else took
        table.append(
            [
                f"retrain + gate, --max-class-drop {drop}",
                f"{res['n_train']:,} train, {res['gate']['n']:,} gate",
                f"{took:.1f} (library: {res['seconds']:.1f})",
                f"{res['decision']} {res['candidate']}; macro-F1 {m['current']:.4f} -> {m['candidate']:.4f} "
                f"[{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}]; new: {', '.join(res['new_labels'])}",
            ]
        )
        for reason in res["reasons"]:
            print(f"- --max-class-drop {drop}: refused because {reason}")
    print_table(
        "retrain + gate on Banking77 (fast tier)",
        ["step", "messages", "seconds", "result"],
        [["train v0001 (76 intents)", f"{len(first):,}", f"{t_train:.1f}", "current"]] + table,
    )
    print(f"\ntarget: retrain + gate on 10,000 messages <= 120 s: {'met' if t_default <= 120 else 'NOT met'}")


def inbox(d: Path) -> None:
    train, test, _ = demo_paths()

    def rows(p):
        with open(p, newline="", encoding="utf-8") as f:
            return [(r["text"], r["label"]) for r in csv.DictReader(f)]

    traffic = rows(test)
    random.Random(7).shuffle(traffic)
    guard = PrivacyGuard()
    gold = {t: lab for t, lab in traffic} | {guard(t): lab for t, lab in traffic}
    llm = GoldLLM(gold)
    reg = d / "inbox"
    known = [r for r in rows(train) if r[1] != "OTHER"]
    _, t_train = cli("train", str(write(d / "known.csv", known)), "--registry", str(reg), "--quality", "fast", "-q")
    (d / "pipeline.yaml").write_text(
        f"model: inbox\nllm: {{base_url: '{llm.url}', model: gold, labels: [OTHER]}}\n"
        "routing: {thresholds: {'*': 0.9}}\n"
        "shadow: {mode: llm_first}\ncapture: {pool: pool.sqlite}\naudit: audit.sqlite\n"
    )
    first, second = traffic[:700], traffic[700:]
    srv = Served(d / "pipeline.yaml")
    steps = [["train v0001 (no OTHER)", f"{len(known):,} messages", f"{t_train:.1f}"]]
    try:
        in_scope = [t for t, lab in first if lab != "OTHER"]
        # the unseen intent: OTHER messages of the training split (v0001 never saw OTHER at all)
        unseen = [t for t, lab in rows(train) if lab == "OTHER"][:500]
        t0 = time.perf_counter()
        for i in range(0, len(in_scope), 50):
            httpx.post(srv.url + "/v1/classify", json={"texts": in_scope[i : i + 50]}, timeout=60)
        calm = {s: srv.metric("offramp_drift_psi", signal=s) for s in ("confidence", "label_mix")}
        calm_fb = srv.metric("offramp_drift_rate_change", signal="fallback")
        for i in range(0, len(unseen), 50):
            httpx.post(srv.url + "/v1/classify", json={"texts": unseen[i : i + 50]}, timeout=60)
        moved = {s: srv.metric("offramp_drift_psi", signal=s) for s in ("confidence", "label_mix")}
        moved_fb = srv.metric("offramp_drift_rate_change", signal="fallback")
        n_sent = len(in_scope) + len(unseen)
        steps.append(
            [f"{n_sent} messages through llm_first shadow", f"{llm.calls} LLM calls", f"{time.perf_counter() - t0:.1f}"]
        )
    finally:
        log = srv.stop()
    print_table(
        "drift: a burst of an intent the model never saw (window of the last 1,000 messages)",
        ["signal", f"after {len(in_scope)} known-intent messages", f"after {len(unseen)} more of the unseen intent"],
        [
            ["PSI confidence", f"{calm['confidence']:.3f}", f"{moved['confidence']:.3f}"],
            ["PSI label mix", f"{calm['label_mix']:.3f}", f"{moved['label_mix']:.3f}"],
            ["fallback rate change", f"{calm_fb:+.3f}", f"{moved_fb:+.3f}"],
        ],
    )
    print(f"\nwarnings in the service log: {log.count('drift: ')}")
    drift_by_share(reg, [t for t, lab in traffic if lab != "OTHER"], [t for t, lab in rows(train) if lab == "OTHER"])
    r, took = cli("shadow", "report", str(d / "pool.sqlite"), "--json")
    rep = json.loads(r.stdout)
    print_table(
        "shadow report (agreement of the LLM with the small model, by the small model's label)",
        ["local label", "compared", "agreement", "95% Wilson interval"],
        [
            [lab, m["compared"], f"{m['agreement']:.3f}", f"[{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"]
            for lab, m in rep["per_label"].items()
        ]
        + [["all", rep["compared"], f"{rep['agreement']:.3f}", f"[{rep['ci95'][0]:.3f}, {rep['ci95'][1]:.3f}]"]],
    )
    print(f"\nverdict: {rep['verdict']}")
    steps.append(["shadow report", f"{rep['compared']} compared", f"{took:.1f}"])
    _, took = cli("pool", "export", str(d / "pool.sqlite"), "--out", str(d / "export.csv"), "--from", "llm,feedback")
    with open(d / "export.csv", newline="", encoding="utf-8") as f:
        exported = sum(1 for _ in csv.DictReader(f))
    steps.append(["pool export", f"{exported} rows", f"{took:.1f}"])
    gate = write(d / "gate.csv", second[:250])
    r, took = cli("retrain", str(reg), "--add", str(d / "export.csv"), "--gate", str(gate), "--json", "-q")
    res = json.loads(r.stdout)
    m = res["gate"]["macro_f1"]
    steps.append(
        [
            "retrain + gate",
            f"{res['decision']} {res['candidate']}: macro-F1 {m['current']:.3f} -> {m['candidate']:.3f}, new {res['new_labels']}",
            f"{took:.1f}",
        ]
    )
    srv = Served(d / "pipeline.yaml")
    try:
        others = [t for t, lab in second[250:] if lab == "OTHER"]
        answers = httpx.post(srv.url + "/v1/classify", json={"texts": others}, timeout=60).json()["results"]
        knows = sum(a["top"][0]["label"] == "OTHER" for a in answers) / len(others)
        steps.append(
            [f"served {srv.version()}: OTHER messages its model labels OTHER", f"{knows:.1%} of {len(others)}", "—"]
        )
        cli("registry", "rollback", str(reg))
        took = srv.wait_for("v0001")
        steps.append(["rollback picked up by the running server", "v0001", f"{took:.2f}"])
        cli("registry", "promote", str(reg), "v0002")
        took = srv.wait_for("v0002")
        steps.append(["promote picked up by the running server", "v0002", f"{took:.2f}"])
    finally:
        srv.stop()
    print_table("the loop on the demo inbox", ["step", "result", "seconds"], steps)


def drift_by_share(reg: Path, known: list[str], unseen: list[str]) -> None:
    """PSI of windows of 1,000 messages holding a growing share of the unseen intent (the model
    itself, no server: the same computation the service runs on its rolling window)."""
    import numpy as np

    from offramp.monitoring.drift import DriftReference
    from offramp.registry.versions import Registry

    model = Registry(reg).load("v0001")
    ref = DriftReference.of(model, {"*": 0.9})
    pk, pu = model.predict_proba(known), model.predict_proba(unseen)
    labels = [str(c) for c in model.classes_]
    rng = np.random.default_rng(0)
    out = []
    for share in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5):
        nu = int(1000 * share)
        ku = rng.choice(len(pu), nu, replace=nu > len(pu))
        kk = rng.choice(len(pk), 1000 - nu, replace=1000 - nu > len(pk))
        p = np.vstack([pk[kk], pu[ku]])
        conf, lab = p.max(axis=1), [labels[i] for i in p.argmax(axis=1)]
        v = ref.compare(conf, lab, [False] * len(conf), list(conf < 0.9))
        out.append([f"{share:.0%}", f"{v['confidence']:.3f}", f"{v['label_mix']:.3f}", f"{v['fallback']:+.3f}"])
    print_table(
        "drift by share of the unseen intent in a window of 1,000 messages (v0001, routing threshold 0.9)",
        ["unseen share", "PSI confidence", "PSI label mix", "fallback rate change"],
        out,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-banking", action="store_true")
    ap.add_argument("--skip-inbox", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if not args.skip_banking:
            banking(d)
        if not args.skip_inbox:
            inbox(d)


if __name__ == "__main__":
    main()
