"""Helpers the test modules share (test modules never import each other): the CLI run in this
process or as a subprocess, CSV files, and a real `offramp serve` on a free loopback port."""

import csv
import io
import os
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
    """The CLI's entry point called in this process with its own stdin, stdout, stderr and exit
    code, as a shell would see them (bytes written to ``sys.stdout.buffer`` included). ``env``
    replaces the environment for the call, as it would for a subprocess. A command that needs a
    process of its own (signals, a server, Ray) goes through :func:`run_cli_process`."""
    from offramp.cli.main import run

    argv = [str(a) for a in args]
    stdin = io.TextIOWrapper(io.BytesIO((input or "").encode("utf-8")), encoding="utf-8")
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_env = dict(os.environ)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    code: int | str | None = 0
    try:
        run(argv)
    except SystemExit as e:
        code = e.code
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        os.environ.clear()
        os.environ.update(saved_env)
    if not isinstance(code, int):  # sys.exit("message") prints the message and exits with 1
        if code is not None:
            stderr.write(str(code) + "\n")
        code = 0 if code is None else 1
    out, errs = (_drain(s) for s in (stdout, stderr))
    return subprocess.CompletedProcess(["offramp", *argv], code, out, errs)


def _drain(stream: io.TextIOWrapper) -> str:
    stream.flush()
    raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
    return raw.decode("utf-8", errors="replace").replace("\r\n", "\n")


def run_cli_process(*args, input: str | None = None, env=None) -> subprocess.CompletedProcess:
    """The CLI as a subprocess (``python -m offramp``): for the entry point itself, and for a
    command that owns its process (signal handlers, servers, a Ray driver)."""
    return subprocess.run(
        [sys.executable, "-m", "offramp", *args], capture_output=True, text=True, input=input, env=env, timeout=600
    )


def until(check, seconds: float = 30.0, every: float = 0.05):
    """Poll ``check()`` until it returns something true, and return that; after ``seconds``,
    return its last (false) value and let the caller's assertions say what did not happen."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model_dir, *extra, env=None, start_s: float = 60):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "offramp", "serve", str(model_dir), "--port", str(self.port), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        deadline = time.time() + start_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read())
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
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
            time.sleep(0.1)
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
