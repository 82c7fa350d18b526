"""Proxy mode: does the template cost anything, do the answers parse, is anything else ever
answered locally, and what does forwarding add?

    python benchmarks/proxy.py [--n 300]

A fast-tier model is trained on the demo inbox's training split; ``offramp serve`` runs it in
proxy mode in front of a local OpenAI-compatible upstream (a small threaded HTTP server here), with
three task files (a JSON schema, a forced tool call, a bare label) around one template.

* extraction: the inbox's test split sent through the template (json_schema shape, via the
  official client's ``.parse``) against the same model's answers on the raw texts;
* shapes: every local answer parsed by the official client (``.parse`` with a Pydantic model and
  an enum field; tool-call arguments checked against the tool's schema);
* routing: the task's requests mixed with six other kinds of request; how many of the task's were
  recognised and how many of the others were answered locally;
* overhead: a forwarded request against the same request sent to the upstream directly (p50,
  p99, one request at a time on a kept-alive connection), and a relayed stream's first chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import openai
from pydantic import BaseModel
from sklearn.metrics import f1_score

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths
from offramp.registry.records import load

from common import print_table

SYSTEM = "You route the tickets of a bank's support inbox."
TEMPLATE = "Classify this ticket.\n\nTicket: {text}\n\nAnswer with one category."
LABELS = ["GRATITUDE", "OTHER", "SUPPORT", "TRY_TO_HACK"]
Category = Enum("Category", {x: x for x in LABELS}, type=str)  # type: ignore[misc]


class Ticket(BaseModel):
    category: Category  # type: ignore[valid-type]


TOOL = {
    "type": "function",
    "function": {
        "name": "route_ticket",
        "parameters": {
            "type": "object",
            "properties": {"category": {"type": "string", "enum": LABELS}},
            "required": ["category"],
        },
    },
}


class Upstream:
    """A fast local OpenAI-compatible server: a fixed answer, streamed in 8 chunks when asked."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()  # no delayed-ACK wait between the headers and the body it writes apart
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                head = {"id": "up", "created": 1, "model": "m"}
                if not body.get("stream"):
                    data = json.dumps(
                        {
                            **head,
                            "object": "chat.completion",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": "upstream answer"},
                                    "finish_reason": "stop",
                                }
                            ],
                        }
                    ).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(8):
                    ev = {
                        **head,
                        "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}],
                    }
                    data = f"data: {json.dumps(ev)}\n\n".encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.005)
                data = b"data: [DONE]\n\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def serve(pipeline: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "offramp", "serve", str(pipeline), "--port", str(port), "--rate-limit", "1000000", "-q"],
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(proc.stderr.read() if proc.stderr else "server did not start")


def latencies(fns, n: int) -> list[tuple[float, float]]:
    """(p50, p99) in ms of each function, called in turns (one of each per round, so that a
    machine that slows down for a while slows all of them alike)."""
    for _ in range(20):
        for fn in fns:
            fn()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for fn, times in zip(fns, out):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return [(float(np.percentile(t, 50) * 1e3), float(np.percentile(t, 99) * 1e3)) for t in out]


def first_chunk(client: httpx.Client, urls: list[str], n: int) -> list[float]:
    """The p50 time to the first event of a stream from each URL, asked in turns."""
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Write a haiku."}]}
    out: list[list[float]] = [[] for _ in urls]
    for _ in range(n):
        for url, times in zip(urls, out):
            t0 = time.perf_counter()
            with client.stream("POST", url + "/chat/completions", json=body) as r:
                lines = r.iter_lines()
                for line in lines:
                    if line.startswith("data: {"):
                        times.append(time.perf_counter() - t0)
                        break
                for _ in lines:  # the rest of the stream, so the connection is reused
                    pass
    return [float(np.percentile(t, 50) * 1e3) for t in out]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="requests per latency figure")
    args = ap.parse_args()
    tr, te, _ = demo_paths()
    test = read_dataset(te)
    d = Path(tempfile.mkdtemp(prefix="offramp-proxy-bench-"))
    subprocess.run(
        [sys.executable, "-m", "offramp", "train", str(tr), "--out", str(d / "model"), "--quality", "fast", "-q"],
        check=True,
    )
    up = Upstream()
    (d / "schema.yaml").write_text(
        f"system: {json.dumps(SYSTEM)}\ntemplate: {json.dumps(TEMPLATE)}\nshape: {{json_field: category}}\n"
    )
    (d / "tool.yaml").write_text(
        f"system: {json.dumps('Use the tool.')}\ntemplate: {json.dumps(TEMPLATE)}\nshape: {{tool: route_ticket, argument: category}}\n"
    )
    (d / "bare.yaml").write_text(f"template: {json.dumps(TEMPLATE)}\n")
    (d / "pipeline.yaml").write_text(
        f"model: model\nproxy: {{upstream: '{up.url}'}}\ntasks: [schema.yaml, tool.yaml, bare.yaml]\n"
    )
    port = 8400 + os.getpid() % 500
    proc = serve(d / "pipeline.yaml", port)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        client = openai.OpenAI(base_url=base, api_key="app", max_retries=0)
        model = load(d / "model")
        raw = [str(x) for x in model.predict(test.texts)]
        via, tools_ok, parsed_ok = [], 0, 0
        for text in test.texts:
            p = client.beta.chat.completions.parse(
                model="m",
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": TEMPLATE.format(text=text)},
                ],
                response_format=Ticket,
            )
            got = p.choices[0].message.parsed
            parsed_ok += got is not None
            via.append(got.category.value if got is not None else "")
        sample = test.texts[:200]
        for text in sample:
            r = client.chat.completions.create(
                model="m",
                messages=[
                    {"role": "system", "content": "Use the tool."},
                    {"role": "user", "content": TEMPLATE.format(text=text)},
                ],
                tools=[TOOL],
                tool_choice={"type": "function", "function": {"name": "route_ticket"}},
            )
            args_ = json.loads(r.choices[0].message.tool_calls[0].function.arguments)
            tools_ok += set(args_) == {"category"} and args_["category"] in LABELS
        f_raw = f1_score(test.labels, raw, average="macro")
        f_via = f1_score(test.labels, via, average="macro")
        print_table(
            f"extraction and shapes: the inbox test split ({len(test.texts):,} messages)",
            ["", "macro-F1", "answers parsed by the client"],
            [
                ["the model on the raw texts", f"{f_raw:.4f}", "—"],
                ["through the template, json_schema (.parse)", f"{f_via:.4f}", f"{parsed_ok} of {len(test.texts)}"],
                ["through the template, forced tool call", "—", f"{tools_ok} of {len(sample)} (arguments valid)"],
            ],
        )
        others = {
            "a summary": [{"role": "user", "content": "Summarise: {t}"}],
            "a reply draft": [
                {"role": "system", "content": "Draft a polite reply."},
                {"role": "user", "content": "{t}"},
            ],
            "another classification prompt": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Is this urgent? {t}"},
            ],
            "the template plus an instruction": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": TEMPLATE + " Explain."},
            ],
            "a changed schema": "schema",
            "a few-shot turn added": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": TEMPLATE},
            ],
        }
        http = httpx.Client(timeout=30)
        rows = []
        recognised = 0
        for text in sample:
            r = http.post(
                base + "/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": TEMPLATE.format(text=text)}]},
            ).json()
            recognised += r["choices"][0]["message"]["content"] in LABELS
        rows.append(["the task (bare template)", f"{len(sample)}", f"{recognised} ({recognised / len(sample):.1%})"])
        for kind, msgs in others.items():
            local = 0
            for text in sample[:100]:
                if msgs == "schema":
                    body = {
                        "model": "m",
                        "messages": [
                            {"role": "system", "content": SYSTEM},
                            {"role": "user", "content": TEMPLATE.format(text=text)},
                        ],
                        "response_format": {
                            "type": "json_schema",
                            "json_schema": {
                                "name": "t",
                                "schema": {
                                    "type": "object",
                                    "properties": {"category": {"type": "string"}, "why": {"type": "string"}},
                                    "required": ["category", "why"],
                                },
                            },
                        },
                    }
                else:
                    body = {
                        "model": "m",
                        "messages": [
                            {**m, "content": m["content"].replace("{t}", text).replace("{text}", text)} for m in msgs
                        ],
                    }
                r = http.post(base + "/chat/completions", json=body).json()
                local += r["choices"][0]["message"]["content"] != "upstream answer"
            rows.append([kind, "100", f"{local} answered locally"])
        print_table("routing: what is answered locally", ["requests", "n", "answered locally"], rows)
        fwd = {"model": "m", "messages": [{"role": "user", "content": "Summarise: the meeting moved."}]}
        direct, proxied = latencies(
            [
                lambda: http.post(up.url + "/chat/completions", json=fwd).raise_for_status(),
                lambda: http.post(base + "/chat/completions", json=fwd).raise_for_status(),
            ],
            args.n,
        )
        s_direct, s_proxied = first_chunk(http, [up.url, base], 200)
        print_table(
            f"overhead of forwarding ({args.n} requests each, one at a time in turns, kept-alive connections)",
            ["", "p50 ms", "p99 ms", "stream: first chunk p50 ms"],
            [
                ["upstream directly", f"{direct[0]:.2f}", f"{direct[1]:.2f}", f"{s_direct:.2f}"],
                ["through offramp", f"{proxied[0]:.2f}", f"{proxied[1]:.2f}", f"{s_proxied:.2f}"],
                [
                    "added",
                    f"{proxied[0] - direct[0]:+.2f}",
                    f"{proxied[1] - direct[1]:+.2f}",
                    f"{s_proxied - s_direct:+.2f}",
                ],
            ],
        )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
