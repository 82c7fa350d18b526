"""`offramp label` against a real local OpenAI-compatible server (a scripted stand-in)."""

import csv
import json

import pytest

from helpers import run_cli, write_csv
from misbehaving_llm import ScriptedLLM, completion

TASK = """labels:
  SUPPORT: questions about using the product
  GRATITUDE: thanks
  OTHER: everything else
instructions: Be strict.
examples:
  - {text: "cheers, that fixed it", label: GRATITUDE}
"""


def answer(body):
    """Label by keyword, as JSON when a schema was sent; 'banana' for texts that contain 'weird'."""
    text = body["messages"][-1]["content"]
    if any("weird" in m["content"] for m in body["messages"]):  # the retry too
        return completion("banana")
    lab = "GRATITUDE" if "thank" in text else "SUPPORT" if "card" in text else "OTHER"
    return completion(json.dumps({"label": lab}) if "response_format" in body else lab)


@pytest.fixture
def llm():
    s = ScriptedLLM(default=(200, {}, answer, 0))
    yield s
    s.close()


@pytest.fixture
def files(tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text(TASK)
    data = write_csv(
        tmp_path / "in.csv", [("thank you!", ""), ("my card is blocked", ""), ("hello", ""), ("weird question", "")]
    )
    return task, data


def labels_of(path):
    with open(path, newline="") as f:
        return [(r["label"], r["status"], r["raw"]) for r in csv.DictReader(f)]


def test_label_cache_and_resume(llm, files, tmp_path):
    task, data = files
    cache = tmp_path / "cache.sqlite"
    args = [
        "label",
        str(data),
        "--llm",
        "gpt-4o-mini",
        "--base-url",
        llm.url + "/v1",
        "--task",
        str(task),
        "--cache",
        str(cache),
        "--quiet",
    ]
    r = run_cli(*args, "--out", str(tmp_path / "a.csv"))
    assert r.returncode == 0, r.stderr
    got = labels_of(tmp_path / "a.csv")
    assert got[:3] == [("GRATITUDE", "labelled", ""), ("SUPPORT", "labelled", ""), ("OTHER", "labelled", "")]
    assert got[3][1] == "unlabelled" and "banana" in got[3][2]  # outside the label set: kept raw, not guessed
    first = len(llm.requests)
    assert first == 5  # four texts, one retry for the out-of-set answer
    sent = llm.requests[0]["body"]
    assert sent["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == [
        "SUPPORT",
        "GRATITUDE",
        "OTHER",
    ]
    assert sent["messages"][1]["content"] == "cheers, that fixed it"  # the few-shot example
    assert "cost $" in r.stdout and "5 calls sent" in r.stdout
    # a second run (or a resume after a crash) sends nothing
    r = run_cli(*args, "--out", str(tmp_path / "b.jsonl"))
    assert r.returncode == 0, r.stderr
    assert len(llm.requests) == first and "0 calls sent, 5 answered from the cache" in r.stdout
    rows = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [x["label"] for x in rows[:3]] == ["GRATITUDE", "SUPPORT", "OTHER"]


def test_server_without_schema_support(files, tmp_path):
    task, data = files
    # the first request (with a schema) is rejected; plain answers follow
    llm = ScriptedLLM(script=[(400, {}, {"error": "response_format not supported"}, 0)], default=(200, {}, answer, 0))
    try:
        r = run_cli(
            "label",
            str(data),
            "--llm",
            "local",
            "--base-url",
            llm.url,
            "--task",
            str(task),
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--out",
            str(tmp_path / "o.csv"),
            "--quiet",
        )
        assert r.returncode == 0, r.stderr
        assert labels_of(tmp_path / "o.csv")[0][0] == "GRATITUDE"
        assert "response_format" not in llm.requests[-1]["body"]
        assert "cost unknown" in r.stdout
    finally:
        llm.close()


def test_dry_run_sends_nothing(llm, files):
    task, data = files
    r = run_cli("label", str(data), "--llm", "gpt-4o-mini", "--base-url", llm.url, "--task", str(task), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "4 texts" in r.stdout and "estimated cost $" in r.stdout and "nothing was sent" in r.stdout
    assert llm.requests == []


def test_label_errors(files, tmp_path):
    task, data = files
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: {ONLY: one}\n")
    r = run_cli(
        "label", str(data), "--llm", "m", "--base-url", "http://127.0.0.1:9", "--task", str(bad), "--out", "x.csv"
    )
    assert r.returncode == 2 and "at least two labels" in r.stderr
    r = run_cli(
        "label",
        str(data),
        "--llm",
        "m",
        "--base-url",
        "http://127.0.0.1:9",
        "--task",
        str(task),
        "--out",
        str(tmp_path / "x.txt"),
    )
    assert r.returncode == 2 and "must end in .csv, .tsv, .jsonl, .parquet" in r.stderr
    # server down: a clear error, and the cache keeps whatever was answered for the resume
    r = run_cli(
        "label",
        str(data),
        "--llm",
        "m",
        "--base-url",
        "http://127.0.0.1:9",
        "--task",
        str(task),
        "--out",
        str(tmp_path / "x.csv"),
        "--timeout",
        "1",
        "--cache",
        str(tmp_path / "d.sqlite"),
    )
    assert r.returncode == 1 and "cannot reach" in r.stderr and "Traceback" not in r.stderr


def test_eval_llm_and_report_side_by_side(llm, tmp_path, trained_dir, inbox_sample):
    task = tmp_path / "task.yaml"
    task.write_text(
        "labels:\n  SUPPORT: product questions\n  GRATITUDE: thanks\n  TRY_TO_HACK: off-purpose\n  OTHER: the rest\n"
    )
    preds = tmp_path / "llm.jsonl"
    r = run_cli(
        "eval-llm",
        str(inbox_sample[1]),
        "--llm",
        "gpt-4o-mini",
        "--base-url",
        llm.url,
        "--task",
        str(task),
        "--predictions",
        str(preds),
        "--cache",
        str(tmp_path / "c.sqlite"),
        "--json",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for key in ("accuracy", "macro_f1", "per_class", "confusion", "latency_ms", "cost_per_million_usd"):
        assert key in res
    assert res["calls"] == len(llm.requests) and res["cost_per_million_usd"] > 0
    # the keyword stand-in is a weak classifier: the report puts it beside the small model
    out = tmp_path / "r.html"
    r = run_cli("report", str(trained_dir), str(inbox_sample[1]), "--llm-predictions", str(preds), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "LLM (gpt-4o-mini)" in r.stdout and out.read_text().count("<svg") >= 5


def test_rate_limit_spaces_requests_on_a_fake_clock():
    from offramp.llm.limits import RateLimit

    now = [100.0]
    slept = []

    def sleep(s):
        slept.append(s)

    rl = RateLimit(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        rl.wait()
    assert slept == pytest.approx([0.25, 0.5, 0.75, 1.0])  # turns handed out 1/4 s apart, the first at once
    now[0] += 10.0  # idle for a while: no burst is saved up beyond the next turn
    slept.clear()
    rl.wait()
    rl.wait()
    assert slept == pytest.approx([0.25])


def test_budget_stops_sending_and_a_rerun_with_more_continues_from_the_cache(llm, files, tmp_path):
    task, _ = files
    data = write_csv(tmp_path / "many.csv", [(f"my card number {i} is blocked", "") for i in range(40)])
    args = ["label", str(data), "--llm", "gpt-4o-mini", "--base-url", llm.url + "/v1", "--task", str(task)]
    args += ["--cache", str(tmp_path / "c.sqlite"), "--concurrency", "1"]
    r = run_cli(*args, "--out", str(tmp_path / "a.csv"), "--max-cost", "0.00005")
    assert r.returncode == 0, r.stderr
    rows = labels_of(tmp_path / "a.csv")
    sent = len(llm.requests)
    over = sum(1 for _, status, _ in rows if status == "over_budget")
    assert 0 < sent < 40 and over == 40 - sent and "were not sent: the budget of $5e-05" in r.stdout
    # the server reported 20 + 2 tokens per request: what was spent stays within the budget
    assert sent * (20 * 0.15 + 2 * 0.60) / 1e6 <= 0.00005
    r = run_cli(*args, "--out", str(tmp_path / "b.csv"), "--max-cost", "1")
    assert r.returncode == 0, r.stderr
    assert len(llm.requests) == 40  # only the texts not answered before were sent
    assert all(status == "labelled" for _, status, _ in labels_of(tmp_path / "b.csv"))


def test_budget_without_a_price_is_one_line(llm, files, tmp_path):
    task, data = files
    r = run_cli(
        "label", str(data), "--llm", "no-such-model", "--base-url", llm.url + "/v1", "--task", str(task),
        "--out", str(tmp_path / "o.csv"), "--max-cost", "1",
    )  # fmt: skip
    assert r.returncode == 2 and "a dollar budget needs a price" in r.stderr and "option --price-model" in r.stderr
    assert r.stderr.count("\n") == 1
    assert not llm.requests
