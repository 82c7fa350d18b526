"""The CLI end to end, as a user runs it: real processes, real files, a small real sample."""

import json

import pytest

from helpers import run_cli, run_cli_process, write_csv


def assert_clean_error(r, code: int, *needles: str):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    for n in needles:
        assert n in r.stderr, r.stderr


def test_train_writes_a_complete_model_dir(trained_dir):
    for name in ("model.json", "arrays.npz", "metrics.json", "MODEL_CARD.md", "manifest.json"):
        assert (trained_dir / name).is_file()
    card = (trained_dir / "MODEL_CARD.md").read_text()
    for section in ("## Intended use", "## Training data", "## What was tried", "(chosen)", "GRATITUDE"):
        assert section in card
    metrics = json.loads((trained_dir / "metrics.json").read_text())
    assert 0.5 < metrics["cv_macro_f1"] <= 1 and metrics["model_bytes"] > 0


def test_eval_json_contract(trained_dir, inbox_sample):
    r = run_cli("eval", str(trained_dir), str(inbox_sample[1]), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for key in (
        "accuracy",
        "macro_f1",
        "per_class",
        "confusion",
        "latency_ms",
        "throughput_per_s",
        "model_bytes",
        "train_seconds",
        "cost_per_million_usd",
    ):
        assert key in res, key
    assert set(res["latency_ms"]) >= {"p50", "p95", "p99"}
    assert set(res["per_class"]["SUPPORT"]) == {"precision", "recall", "f1", "support"}
    assert res["macro_f1"] > 0.7
    import csv

    with open(inbox_sample[1], newline="") as f:
        n_rows = sum(1 for _ in csv.DictReader(f))
    assert sum(map(sum, res["confusion"]["matrix"])) == res["n"] == n_rows


def test_eval_table(trained_dir, inbox_sample):
    r = run_cli("eval", str(trained_dir), str(inbox_sample[1]))
    assert r.returncode == 0 and "macro-F1" in r.stdout and "TRY_TO_HACK" in r.stdout


def test_eval_warns_on_unseen_labels_and_leakage(trained_dir, inbox_sample, tmp_path):
    import csv

    with open(inbox_sample[0], newline="") as f:
        train_rows = [(r["text"], r["label"]) for r in csv.DictReader(f)][:5]
    p = write_csv(tmp_path / "t.csv", train_rows + [("is this a new kind of thing", "BRAND_NEW")] * 2)
    r = run_cli("eval", str(trained_dir), str(p), "--json")
    assert r.returncode == 0, r.stderr
    assert "2 test rows have labels the model never saw: BRAND_NEW (2)" in r.stderr
    assert "leakage: 5 test texts also appear in the training data" in r.stderr


def test_predict_arguments_file_and_stdin(trained_dir, tmp_path):
    r = run_cli("predict", str(trained_dir), "thank you so much!", "how do I change my card pin")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["label"] for x in lines] == ["GRATITUDE", "SUPPORT"]
    assert all(0 < x["confidence"] <= 1 and len(x["top"]) == 3 for x in lines)
    assert lines[0]["top"][0]["label"] == lines[0]["label"]

    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "write me a poem about cats"}\n{"text": ""}\n{"text": "thanks"}\n')
    outp = tmp_path / "out.jsonl"
    r = run_cli("predict", str(trained_dir), str(inp), "--out", str(outp), "--top", "1")
    assert r.returncode == 0, r.stderr
    assert "1 rows with an empty or missing text were skipped" in r.stderr
    got = [json.loads(x) for x in outp.read_text().splitlines()]
    assert len(got) == 2 and len(got[0]["top"]) == 1

    r = run_cli("predict", str(trained_dir), input="hello there\n\nthank you\n")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2


def test_predict_bad_usage(trained_dir, tmp_path):
    assert_clean_error(run_cli("predict", str(trained_dir), input=""), 2, "nothing to classify")
    assert_clean_error(run_cli("predict", str(trained_dir), "x", "--input", "f.csv"), 2, "not both")
    assert_clean_error(run_cli("predict", str(tmp_path / "none"), "x"), 2, "does not exist")


def test_train_bad_data_exit_2(tmp_path):
    out = str(tmp_path / "m")
    assert_clean_error(run_cli("train", str(tmp_path / "missing.csv"), "--out", out), 2, "does not exist")
    (tmp_path / "empty.csv").write_text("")
    assert_clean_error(run_cli("train", str(tmp_path / "empty.csv"), "--out", out), 2, "is empty")
    p = write_csv(tmp_path / "one.csv", [("a", "X"), ("b", "X")])
    assert_clean_error(run_cli("train", str(p), "--out", out), 2, "only one class")
    p = write_csv(tmp_path / "col.csv", [("a", "X")], header=("msg", "label"))
    assert_clean_error(run_cli("train", str(p), "--out", out), 2, "its columns are: msg, label")
    (tmp_path / "latin.csv").write_bytes("text,label\nna\xefve,A\nb,B\n".encode("latin-1"))
    assert_clean_error(run_cli("train", str(tmp_path / "latin.csv"), "--out", out), 2, "not UTF-8")
    p = write_csv(tmp_path / "ok.csv", [("a", "X"), ("b", "X"), ("c", "Y"), ("d", "Y")])
    assert_clean_error(
        run_cli("train", str(p), "--out", out, "--time-limit", "0"),
        2,
        "time limit must be a positive number",
        "--time-limit",
    )
    assert_clean_error(run_cli("train", str(p), "--out", out, "--time-limit", "soon"), 2, "'auto' or 'none'")
    assert_clean_error(run_cli("train", str(p)), 2, "--out")  # missing required option: click's usage error
    (tmp_path / "a-file").write_text("x")  # a bad --out is refused before any training, in one line
    assert_clean_error(run_cli("train", str(p), "--out", str(tmp_path / "a-file")), 2, "is a file, not a directory")
    assert_clean_error(run_cli("train", str(p), "--out", str(tmp_path / "a-file" / "m")), 2, "a-file is a file")
    assert not (tmp_path / "m").exists()


def test_train_with_named_columns_and_parquet(tmp_path, inbox_sample):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(inbox_sample[0], newline="") as f:
        rows = list(csv.DictReader(f))
    pq.write_table(
        pa.table({"body": [r["text"] for r in rows], "intent": [r["label"] for r in rows]}), tmp_path / "d.parquet"
    )
    r = run_cli(
        "train",
        str(tmp_path / "d.parquet"),
        "--out",
        str(tmp_path / "m"),
        "--text-col",
        "body",
        "--label-col",
        "intent",
        "--time-limit",
        "5",
        "--json",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["winner"]


def test_tampered_model_refused_by_cli(trained_dir, tmp_path):
    import shutil

    t = tmp_path / "t"
    shutil.copytree(trained_dir, t)
    with open(t / "model.json", "r+") as f:
        doc = json.load(f)
        doc["classes"][0] = "EVIL"
        f.seek(0)
        f.write(json.dumps(doc))
        f.truncate()
    assert_clean_error(run_cli("predict", str(t), "hello"), 2, "changed after the model was saved")


def test_cost_command(tmp_path, inbox_sample):
    r = run_cli("cost", "--messages-per-day", "100000", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    names = [row["name"] for row in rep["rows"]]
    assert "gpt-4o-mini" in names and "self-hosted LLM (GPU)" in names and "small model (local CPU)" in names
    assert rep["inputs"]["messages_per_month"] == pytest.approx(100000 * 365 / 12)
    r = run_cli("cost", "--messages-total", "5000000", "--data", str(inbox_sample[1]), "--model", "gpt-4o")
    assert r.returncode == 0, r.stderr
    assert "gpt-4o" in r.stdout and "break" not in r.stderr
    assert_clean_error(run_cli("cost", "--messages-per-day", "-5"), 2, "non-negative")
    assert_clean_error(run_cli("cost", "--messages-per-day", "5", "--messages-total", "9"), 2, "one of")
    assert_clean_error(run_cli("cost", "--model", "gpt-99"), 2, "unknown model")


def test_report_with_llm_predictions(trained_dir, inbox_sample, tmp_path):
    import csv

    with open(inbox_sample[1], newline="") as f:
        rows = list(csv.DictReader(f))
    # an "LLM" that is right except on GRATITUDE, which it calls OTHER; it misses the last row
    llm = tmp_path / "llm.jsonl"
    llm.write_text(
        "".join(
            json.dumps(
                {
                    "text": r["text"],
                    "prediction": "OTHER" if r["label"] == "GRATITUDE" else r["label"],
                    "model": "gpt-4o-mini",
                    "prompt_tokens": 180,
                    "completion_tokens": 3,
                    "latency_ms": 420,
                }
            )
            + "\n"
            for r in rows[:-1]
        )
    )
    out = tmp_path / "r" / "report.html"
    r = run_cli("report", str(trained_dir), str(inbox_sample[1]), "--llm-predictions", str(llm), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"1 of {len(rows)} test texts have no LLM prediction" in r.stderr
    page = out.read_text()
    assert page.count("<svg") >= 5 and "gpt-4o-mini" in page and "Confusion matrix" in page
    md = out.with_suffix(".md").read_text()
    assert "| macro-F1 |" in md and "LLM (gpt-4o-mini)" in md
    assert "LLM (gpt-4o-mini)" in r.stdout


def test_report_escapes_hostile_labels(tmp_path):
    p = write_csv(
        tmp_path / "d.csv",
        [("hello a", "<script>x</script>"), ("hello b", "<script>x</script>"), ("bye a", "B&B"), ("bye b", "B&B")],
    )
    m = tmp_path / "m"
    assert run_cli("train", str(p), "--out", str(m), "--quiet").returncode == 0
    r = run_cli("report", str(m), str(p), "--out", str(tmp_path / "r.html"))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_demo_runs_end_to_end(tmp_path):
    r = run_cli("demo", "--out", str(tmp_path / "demo"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "macro-F1" in r.stdout and (tmp_path / "demo" / "report.html").is_file()
    # the recorded LLM column is the local Qwen, and its student is trained and shown beside it
    assert "LLM (qwen2.5-coder-1.5b-instruct)" in r.stdout
    assert "The student and its teacher" in r.stdout and "1000 teacher labels" in r.stdout
    md = (tmp_path / "demo" / "report.md").read_text()
    assert "## The student and its teacher" in md and "teacher: qwen2.5-coder-1.5b-instruct" in md
    res = run_cli(
        "eval",
        str(tmp_path / "demo" / "registry"),
        str(tmp_path / "demo" / ".." / "demo" / "registry" / ".." / "report.md"),
    )
    assert res.returncode == 2  # a Markdown file is not a data file: clean refusal
    assert "unknown extension '.md'" in res.stderr


def test_demo_reruns_the_llm_column_live(tmp_path):
    import json

    from misbehaving_llm import ScriptedLLM, completion

    def answer(body):  # a plausible LLM: a keyword rule, so its column differs from the small model's
        text = body["messages"][-1]["content"].lower()
        label = "GRATITUDE" if "thank" in text else "SUPPORT" if "card" in text else "OTHER"
        return completion(json.dumps({"label": label}))

    llm = ScriptedLLM(default=(200, {}, answer, 0))
    try:
        r = run_cli(
            "demo",
            "--quality",
            "fast",
            "--out",
            str(tmp_path / "d"),
            "--llm",
            "keyword-llm",
            "--base-url",
            llm.url + "/v1",
            "--quiet",
            env={"OFFRAMP_CACHE_DIR": str(tmp_path / "cache")},
        )
    finally:
        llm.close()
    assert r.returncode == 0, r.stderr
    assert "LLM (keyword-llm)" in r.stdout
    rows = [json.loads(x) for x in (tmp_path / "d" / "llm_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 1052 and {x["model"] for x in rows} == {"keyword-llm"}
    assert rows[0]["date"] and "GRATITUDE" in rows[0]["system_prompt"]
    assert len(json.loads(rows[0]["few_shot"])) == 16  # 4 examples per label from the training split
    assert "keyword-llm" in (tmp_path / "d" / "report.md").read_text()
    r = run_cli("demo", "--llm", "m", "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and "go together" in r.stderr


def test_internal_errors_are_one_line(tmp_path):
    r = run_cli_process("--help")  # the real entry point, `python -m offramp`, in a process of its own
    assert r.returncode == 0 and "train" in r.stdout
    r = run_cli("no-such-command")
    assert r.returncode == 2 and "Traceback" not in r.stderr
