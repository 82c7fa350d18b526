import csv
import json

from helpers import run_cli


def logged(user, reply, system="You are a classifier."):
    return {
        "request": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        },
        "response": {"choices": [{"message": {"role": "assistant", "content": reply}}]},
    }


def test_import_logs_both_shapes_and_skips_counted(tmp_path):
    lines = [
        json.dumps(logged("where is my card?", "SUPPORT")),
        json.dumps(logged("thanks!", "Label: GRATITUDE.")),
        json.dumps(
            {
                "messages": [{"role": "user", "content": [{"type": "text", "text": "write a poem"}]}],
                "choices": [{"message": {"content": "TRY_TO_HACK"}}],
            }
        ),  # stored-completion shape
        json.dumps(logged("hmm", "I am not sure")),  # names no label
        json.dumps({"request": {"messages": []}, "response": {"choices": []}}),
        "{broken json",
        "",
    ]
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "train.csv"
    r = run_cli("import-logs", str(log), "--out", str(out), "--labels", "SUPPORT,GRATITUDE,TRY_TO_HACK,OTHER")
    assert r.returncode == 0, r.stderr
    with open(out, newline="") as f:
        rows = [(x["text"], x["label"]) for x in csv.DictReader(f)]
    assert rows == [("where is my card?", "SUPPORT"), ("thanks!", "GRATITUDE"), ("write a poem", "TRY_TO_HACK")]
    assert "skipped 1 lines: reply names none of the labels" in r.stderr
    assert "skipped 1 lines: line is not JSON" in r.stderr
    assert "skipped 1 lines: no request messages" in r.stderr
    assert "wrote 3 rows" in r.stdout and "from 6 log lines (3 skipped)" in r.stdout


def test_import_logs_json_field_and_role(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(
        json.dumps(logged("my pin?", json.dumps({"label": "SUPPORT", "why": "pin"})))
        + "\n"
        + json.dumps(logged("x", "not json"))
        + "\n"
    )
    out = tmp_path / "o.jsonl"
    r = run_cli("import-logs", str(log), "--out", str(out), "--label-field", "label")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"text": "my pin?", "label": "SUPPORT"}]
    assert "reply is not JSON with 'label'" in r.stderr
    r = run_cli("import-logs", str(log), "--out", str(out), "--role", "system", "--labels", "SUPPORT")
    assert r.returncode == 0 and "You are a classifier." in out.read_text()


def test_import_logs_errors(tmp_path):
    r = run_cli("import-logs", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.csv"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "junk.jsonl").write_text("[1, 2]\n")
    r = run_cli("import-logs", str(tmp_path / "junk.jsonl"), "--out", str(tmp_path / "o.csv"))
    assert r.returncode == 2 and "no usable rows" in r.stderr and "not a JSON object" in r.stderr
