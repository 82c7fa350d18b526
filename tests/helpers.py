"""Helpers the test modules share (test modules never import each other): the CLI as a
subprocess, CSV files, and a real `offramp serve` on a free loopback port."""

import csv
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def run_cli(*args, input: str | None = None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "offramp", *args], capture_output=True, text=True, input=input, env=env, timeout=600
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model_dir, *extra, env=None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "offramp", "serve", str(model_dir), "--port", str(self.port), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read())
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self):
        self.proc.terminate()
        try:
            return self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()


def wait_for_llm(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    """Wait until the OpenAI-compatible server at ``url`` lists its models; its log on failure."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the LLM server at {url} did not start within {seconds:g} s")


def metric(text: str, name: str, **labels) -> float | None:
    """A value from Prometheus text (``name{labels} value``), or None if the series is absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return None


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(text, label) rows of a CSV with text and label columns."""
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def rewrite_model_json(model_dir: Path, doc: dict) -> None:
    """Replace a model directory's model.json with ``doc`` and re-hash it in the manifest (a
    directory whose hashes still hold, as an edited or foreign one would be)."""
    import json

    from offramp.modeldir.store import file_sha256

    (model_dir / "model.json").write_text(json.dumps(doc))
    man = json.loads((model_dir / "manifest.json").read_text())
    man["files"]["model.json"] = file_sha256(model_dir / "model.json")
    (model_dir / "manifest.json").write_text(json.dumps(man))
