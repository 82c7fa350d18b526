"""Multi-label: label sets in files, one-vs-rest with per-label calibration and thresholds, the
empty set, eval/predict/serve output, and one-line errors. The data is the demo inbox's multi-label
variant, constructed from its real messages (offramp.demo.data.multilabel_inbox)."""

import csv
import json

import httpx
import numpy as np
import pytest
from sklearn.base import clone

from offramp.data.io import read_dataset
from offramp.data.multilabel import looks_multilabel, parse_label_sets
from offramp.demo.data import demo_paths, multilabel_inbox
from offramp.errors import DataError
from offramp.estimators.multilabel import TfidfMultiLabel, fit_threshold, multilabel_metrics
from offramp.registry.records import load

from helpers import Server, run_cli, write_csv


@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ml")
    tr, te, _ = demo_paths()
    a, b = read_dataset(tr), read_dataset(te)
    train = write_csv(tmp / "train.csv", multilabel_inbox(a.texts[:1500], a.labels[:1500], 0))
    test = write_csv(tmp / "test.csv", multilabel_inbox(b.texts, b.labels, 1))
    r = run_cli("train", str(train), "--multi-label", "--out", str(tmp / "m"), "--json", "-q")
    assert r.returncode == 0, r.stderr
    return tmp, train, test, json.loads(r.stdout)


def test_label_cells_are_parsed_and_tidied():
    sets, notes = parse_label_sets(["A|B", " B | A ", "", '["C", "A"]', "A|A"], "|")
    assert sets == [["A", "B"], ["A", "B"], [], ["A", "C"], ["A"]]
    assert any("spaces" in n for n in notes) and any("twice" in n for n in notes)
    _, notes = parse_label_sets(["A", "B", ""], ";")
    assert any("never joins two labels" in n for n in notes)
    with pytest.raises(DataError, match="not lists of labels"):
        parse_label_sets(['["A", {"x": 1}]'])
    assert "--multi-label" in (looks_multilabel(["A", "B", "A|B", "A"]) or "")
    assert looks_multilabel(["A|x", "B"]) is None  # 'x' is no label of its own: not a joined set


def test_the_estimator_follows_the_scikit_learn_contract():
    texts = ["thanks! and how do I reset my pin", "reset my pin", "thank you", "hello there"] * 6
    sets = [["GRATITUDE", "SUPPORT"], ["SUPPORT"], ["GRATITUDE"], []] * 6
    m = clone(TfidfMultiLabel(min_df=1)).fit(texts, sets)
    assert list(m.classes_) == ["GRATITUDE", "SUPPORT"]
    P = m.predict(["thanks, how do I reset the pin", "hello there"])
    assert P.shape == (2, 2) and P.tolist() == [[1, 1], [0, 0]]  # the empty set is an answer
    assert m.predict_sets(["thank you"]) == [["GRATITUDE"]]


def test_thresholds_fit_f1_or_a_precision_target():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.3
    p = np.clip(y * 0.35 + rng.random(2000) * 0.65, 0, 1)
    t = fit_threshold(p, y)
    f1 = lambda thr: multilabel_metrics(y[:, None], (p >= thr)[:, None], ["x"])["micro_f1"]  # noqa: E731
    assert f1(t) >= max(f1(x) for x in np.linspace(0.05, 0.95, 19)) - 1e-9
    t9 = fit_threshold(p, y, precision=0.9)
    assert y[p >= t9].mean() >= 0.9 and t9 > t


def test_train_eval_predict_on_the_multilabel_inbox(ml):
    tmp, train, test, rep = ml
    assert rep["multi_label"] and rep["cv"]["micro_f1"] > 0.9 and rep["empty_rows"] > 0
    assert set(rep["thresholds"]) == {"GRATITUDE", "SUPPORT", "TRY_TO_HACK"}
    assert rep["cooccurrence"][0]["labels"] == ["GRATITUDE", "SUPPORT"]
    r = run_cli("eval", str(tmp / "m"), str(test), "--json", "-q")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    for key in ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "per_label", "confused_pairs"):
        assert key in ev
    assert ev["micro_f1"] > 0.9 and ev["per_label"]["GRATITUDE"]["support"] > 100
    r = run_cli("predict", str(tmp / "m"), "thank you so much! how do I top up my card?", "what's the weather like")
    both, none = (json.loads(x) for x in r.stdout.splitlines())
    assert both["labels"] == ["GRATITUDE", "SUPPORT"] and both["label"] in both["labels"]
    assert none["labels"] == [] and set(none["scores"]) == {"GRATITUDE", "SUPPORT", "TRY_TO_HACK"}
    for name in ("s.jsonl", "s.parquet"):  # streamed through worker processes: the label sets too
        r = run_cli("predict", str(tmp / "m"), str(test), "--out", str(tmp / name), "--workers", "1", "-q")
        assert r.returncode == 0, r.stderr
    streamed = [json.loads(x) for x in (tmp / "s.jsonl").read_text().splitlines()]
    import pyarrow.parquet as pq

    assert [x["labels"] for x in streamed] == pq.read_table(tmp / "s.parquet").column("labels").to_pylist()
    assert len(streamed) == 1052 and sum(len(x["labels"]) > 1 for x in streamed) > 50
    card = (tmp / "m" / "MODEL_CARD.md").read_text()
    assert "threshold" in card and "GRATITUDE + SUPPORT" in card
    r = run_cli("report", str(tmp / "m"), str(test), "--out", str(tmp / "r.html"), "-q")
    assert r.returncode == 0, r.stderr
    md = (tmp / "r.md").read_text()
    assert "## Per label" in md and "GRATITUDE + SUPPORT" in md and "<svg" in (tmp / "r.html").read_text()
    m = load(tmp / "m")  # no pickle: JSON + arrays, hash-checked
    assert m.label_sep_ == "|" and m.predict_sets(["thanks!"]) == [["GRATITUDE"]]


def test_served_multilabel_model_answers_every_label(ml):
    tmp, *_ = ml
    srv = Server(tmp / "m")
    try:
        r = httpx.post(srv.url + "/v1/classify", json={"text": "thanks a lot! how do I change my PIN?"}).json()
        assert r["labels"] == ["GRATITUDE", "SUPPORT"] and r["scores"]["SUPPORT"] > 0.5
        c = httpx.post(
            srv.url + "/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "thanks a lot! how do I change my PIN?"}]},
        ).json()
        assert c["choices"][0]["message"]["content"] == "GRATITUDE|SUPPORT"
    finally:
        srv.stop()


def test_multilabel_bad_inputs_get_one_line(ml, tmp_path):
    _, train, _, _ = ml
    rare = write_csv(tmp_path / "r.csv", [("a b", "A|B"), ("a", "A"), ("b c", "B"), ("c", "C"), ("a c", "A")])
    r = run_cli("train", str(rare), "--multi-label", "--out", str(tmp_path / "m"), "-q")
    assert r.returncode == 2 and "fewer than 2 messages: C" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("train", str(train), "--out", str(tmp_path / "m2"), "--label-precision", "0.9")
    assert r.returncode == 2 and "goes with several labels per message (option --label-precision)" in r.stderr
    nolab = write_csv(tmp_path / "n.csv", [("a",), ("b",)], header=("text",))
    r = run_cli("train", str(nolab), "--multi-label", "--out", str(tmp_path / "m3"))
    assert r.returncode == 2 and "no label column 'label'" in r.stderr
    joined = write_csv(tmp_path / "j.csv", [("t1", "A"), ("t2", "B"), ("t3", "A|B")] * 4)
    r = run_cli("train", str(joined), "--out", str(tmp_path / "m4"), "--quality", "fast")
    assert "train with --multi-label" in r.stderr


def test_an_llm_labels_several_labels_per_message(tmp_path):
    from offramp.llm.label import TaskSpec, read_answer

    from misbehaving_llm import ScriptedLLM, completion

    def answer(body):
        text = body["messages"][-1]["content"]
        labels = (["GRATITUDE"] if "thank" in text else []) + (["SUPPORT"] if "card" in text else [])
        return completion(json.dumps({"labels": labels}))

    task = tmp_path / "task.yaml"
    task.write_text(
        "multi_label: true\nlabels:\n  SUPPORT: a question\n  GRATITUDE: thanks\n"
        "examples:\n  - {text: 'thanks! where is my card?', label: GRATITUDE|SUPPORT}\n"
    )
    spec = TaskSpec.load(task)
    assert spec.messages("x")[2]["content"] == '{"labels": ["GRATITUDE", "SUPPORT"]}'
    assert "item ( " in spec.gbnf() and spec.json_schema()["properties"]["labels"]["type"] == "array"
    assert read_answer('{"labels": ["support", "GRATITUDE"]}', list(spec.labels), True) == "GRATITUDE|SUPPORT"
    assert read_answer('{"labels": []}', list(spec.labels), True) == ""  # none of them: an answer
    assert read_answer('{"labels": ["REFUND"]}', list(spec.labels), True) is None  # unknown: asked again
    data = write_csv(tmp_path / "in.csv", [("thanks, my card works",), ("thank you",), ("hello",)], header=("text",))
    llm = ScriptedLLM(default=(200, {}, answer, 0))
    try:
        r = run_cli("label", str(data), "--llm", "m", "--base-url", llm.url + "/v1", "--task", str(task),
                    "--out", str(tmp_path / "o.jsonl"), "--cache", str(tmp_path / "c.sqlite"), "-q")  # fmt: skip
    finally:
        llm.close()
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [(x["label"], x["status"]) for x in rows] == [
        ("GRATITUDE|SUPPORT", "labelled"),
        ("GRATITUDE", "labelled"),
        ("", "labelled"),
    ]
    schema = llm.requests[0]["body"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["labels"]["items"]["enum"] == ["SUPPORT", "GRATITUDE"]


def test_import_logs_reads_label_lists(tmp_path):
    def line(user, reply):
        return json.dumps(
            {
                "request": {"messages": [{"role": "user", "content": user}]},
                "response": {"choices": [{"message": {"role": "assistant", "content": reply}}]},
            }  # fmt: skip
        )

    log = tmp_path / "log.jsonl"
    log.write_text(
        "\n".join(
            [
                line("thanks! where is my card", '{"labels": ["SUPPORT", "GRATITUDE"]}'),
                line("hi", "[]"),
                line("thank you", "GRATITUDE"),
                line("refund?", "SUPPORT|REFUND"),
            ]
        )
    )
    r = run_cli("import-logs", str(log), "--out", str(tmp_path / "o.csv"), "--multi-label",
                "--labels", "SUPPORT,GRATITUDE")  # fmt: skip
    assert r.returncode == 0, r.stderr
    import csv

    rows = [(x["text"], x["label"]) for x in csv.DictReader(open(tmp_path / "o.csv", encoding="utf-8"))]
    assert rows == [("thanks! where is my card", "GRATITUDE|SUPPORT"), ("hi", ""), ("thank you", "GRATITUDE")]
    assert "not a list of known labels" in r.stderr


def test_platt_scaling_of_every_label_at_once_matches_a_logistic_fit():
    from sklearn.linear_model import LogisticRegression

    from offramp.estimators.multilabel import fit_platt

    rng = np.random.default_rng(0)
    Y = rng.random((4000, 4)) < 0.3
    S = np.where(Y, rng.normal(1, 1, Y.shape), rng.normal(-1, 1, Y.shape)) * np.array([0.5, 1, 4, 8])
    P = fit_platt(S, Y)
    for k in range(4):  # Platt's smoothed targets move the fit only slightly
        lr = LogisticRegression(C=1e6).fit(S[:, k : k + 1], Y[:, k])
        assert P[k, 0] == pytest.approx(lr.coef_[0, 0], rel=0.02)
        assert P[k, 1] == pytest.approx(lr.intercept_[0], abs=0.02)
    sep = fit_platt(np.where(Y[:, :1], 5.0, -5.0), Y[:, :1])  # perfectly separated: still finite
    assert np.isfinite(sep).all() and 0 < sep[0, 0] < 10


def _pipeline(tmp, name, body):
    (tmp / name).write_text(f"model: m\n{body}", encoding="utf-8")
    return tmp / name


def test_cascade_asks_the_llm_for_the_label_set_and_acts_on_every_label(ml):
    from misbehaving_llm import ScriptedLLM, completion

    tmp, *_ = ml
    llm = ScriptedLLM(default=(200, {}, completion('{"labels": ["SUPPORT", "GRATITUDE"]}'), 0))
    acts = (
        "actions:\n  GRATITUDE: {type: reply, text: 'thumbs up'}\n  SUPPORT: {type: reply, text: 'see the help page'}\n"
        "  TRY_TO_HACK: {type: refuse}\naction_order: [GRATITUDE, SUPPORT]\n"
    )
    llm_cfg = f"llm: {{base_url: '{llm.url}/v1', model: m, timeout_s: 2, max_retries: 0}}\n"
    # a band of 1 around every threshold: every message is unsure, so the LLM names the labels
    p = _pipeline(tmp, "ask.yaml", llm_cfg + "routing: {unsure_band: {'*': 1.0}}\n" + acts)
    srv = Server(p)
    try:
        r = httpx.post(srv.url + "/v1/classify", json={"text": "how do I change my PIN?"}).json()
        assert r["route"] == "llm" and r["labels"] == ["GRATITUDE", "SUPPORT"] and r["unsure"]
        system = llm.requests[-1]["body"]["messages"][0]["content"]
        assert '{"labels"' in system and "GRATITUDE" in system
        # actions for each label, in action_order, their texts joined in one reply
        assert [a["label"] for a in r["action"]["actions"]] == ["GRATITUDE", "SUPPORT"]
        assert r["action"]["type"] == "multi" and r["action"]["text"] == "thumbs up\n\nsee the help page"
        c = httpx.post(
            srv.url + "/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "how do I change my PIN?"}]},
        ).json()
        assert c["choices"][0]["message"]["content"] == "GRATITUDE|SUPPORT"
    finally:
        srv.stop()
    # no band: the model's own labels, local, no LLM call
    n = len(llm.requests)
    p = _pipeline(tmp, "local.yaml", llm_cfg + "routing: {unsure_band: {'*': 0.0}}\n" + acts)
    srv = Server(p)
    try:
        r = httpx.post(srv.url + "/v1/classify", json={"text": "thanks a lot! how do I change my PIN?"}).json()
        assert r["route"] == "local" and r["labels"] == ["GRATITUDE", "SUPPORT"] and r["unsure"] == []
        assert len(llm.requests) == n
    finally:
        srv.stop()
        llm.close()


def test_a_label_combination_has_its_own_action(ml):
    from offramp.registry.records import load
    from offramp.runtime.actions import build_action
    from offramp.runtime.cascade import Cascade

    tmp, *_ = ml
    model = load(tmp / "m")
    reply = lambda t: build_action({"type": "reply", "text": t}, tmp, None, None)  # noqa: E731
    cascade = Cascade(
        model,
        actions={"GRATITUDE": reply("thumbs up"), "SUPPORT": reply("docs"), "GRATITUDE+SUPPORT": reply("both")},
        action_order=["SUPPORT", "GRATITUDE"],
    )
    d = cascade.run("thanks a lot! how do I change my PIN?")
    assert d.labels == ["GRATITUDE", "SUPPORT"]
    assert [a.label for a in d.action.actions] == ["GRATITUDE+SUPPORT"] and d.action.text == "both"
    assert cascade.action_plan(["SUPPORT"]) == ["SUPPORT"]
    assert cascade.action_plan(["GRATITUDE", "SUPPORT", "TRY_TO_HACK"]) == ["GRATITUDE+SUPPORT"]


def test_multilabel_pipeline_keys_are_checked(ml, fast_model, tmp_path):
    from offramp.errors import UsageError
    from offramp.runtime.cascade import build
    from offramp.runtime.config import Settings

    def build_cascade(path):
        return build(Settings.resolve(path, env={}))

    tmp, *_ = ml
    with pytest.raises(UsageError, match="routed by routing.unsure_band"):
        build_cascade(_pipeline(tmp, "t.yaml", "routing: {thresholds: {'*': 0.5}}\n"))
    with pytest.raises(UsageError, match="labels the model does not have: NOPE"):
        build_cascade(_pipeline(tmp, "u.yaml", "actions: {'GRATITUDE+NOPE': {type: refuse}}\n"))
    with pytest.raises(UsageError, match="labels the model does not have: NOPE"):
        build_cascade(_pipeline(tmp, "v.yaml", "action_order: [SUPPORT, NOPE]\n"))
    single = tmp_path / "s.yaml"
    single.write_text(f"model: {fast_model}\nrouting: {{unsure_band: {{'*': 0.1}}}}\naction_order: [SUPPORT]\n")
    with pytest.raises(UsageError, match="go with a multi-label model"):
        build_cascade(single)


def test_stacked_tier_with_several_labels(ml, tmp_path):
    from offramp.estimators.multilabel import StackedMultiLabel

    _, train, test, _ = ml
    r = run_cli(
        "train", str(train), "--multi-label", "--quality", "balanced", "--out", str(tmp_path / "m"), "--json", "-q"
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    names = [c["name"] for c in rep["candidates"]]
    assert names[0] == "stacked-e1.5-svm-C0.5" and rep["candidates"][0]["status"] == "scored"
    model = load(tmp_path / "m")
    assert isinstance(model, StackedMultiLabel) == (rep["winner"] == names[0])
    ds = read_dataset(test)
    texts = ds.texts[:200]
    m = StackedMultiLabel(min_df=1).fit(texts[:150], [lab.split("|") if lab else [] for lab in ds.labels[:150]])
    assert clone(m).get_params()["encoder"] == "minilm"
    m.save(tmp_path / "s")
    back = load(tmp_path / "s")
    assert isinstance(back, StackedMultiLabel)
    assert np.allclose(back.predict_proba(texts), m.predict_proba(texts), atol=1e-3)
    assert back.predict_sets(texts[:20]) == m.predict_sets(texts[:20])


def test_report_sets_the_llm_beside_the_model(ml, tmp_path):
    tmp, _, test, _ = ml
    ds = read_dataset(test)
    rows = []
    for i, (t, lab) in enumerate(zip(ds.texts[:100], ds.labels[:100])):
        labels = lab.split("|") if lab else []
        if i == 0:
            labels = labels + ["REFUND"]  # a label the model lacks: warned about, not scored
        rows.append((t, json.dumps(labels) if i % 2 else "|".join(labels)))
    preds = write_csv(tmp_path / "llm.csv", rows, header=("text", "prediction"))
    out = tmp_path / "r.html"
    r = run_cli("report", str(tmp / "m"), str(test), "--llm-predictions", str(preds), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "LLM 1.0000" in r.stdout and "on the 100 messages the LLM answered" in r.stdout
    assert "labels the model does not have (not scored): REFUND" in r.stderr
    md = out.with_suffix(".md").read_text()
    with open(test, newline="", encoding="utf-8") as f:
        total = sum(1 for _ in csv.reader(f)) - 1  # every row, those with no label too
    assert f"## Side by side with the LLM (100 messages both answered; {total - 100} without an LLM answer)" in md
    assert "| micro-F1 |" in md and "small P" in md
    assert "Per label F1: small model vs LLM" in out.read_text()


def test_label_set_check_finds_flipped_labels_and_train_drops_them(ml, tmp_path):
    """10% of the rows get one label added or removed; the check flags mostly those rows, in the
    file's own row numbers, and --drop-suspects leaves exactly the rows check-labels lists."""
    import random

    _, train, _, _ = ml
    with open(train, newline="", encoding="utf-8") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    classes = sorted({lab for _, cell in rows for lab in cell.split("|") if lab})
    rng = random.Random(0)
    noisy, flipped = [], set()
    for i, (text, cell) in enumerate(rows):
        labs = set(filter(None, cell.split("|")))
        if rng.random() < 0.1:
            if labs and rng.random() < 0.5:
                labs.discard(rng.choice(sorted(labs)))
            else:
                labs.add(rng.choice([c for c in classes if c not in labs]))
            flipped.add(i + 1)  # the data rows below start after a first row without a text
        noisy.append((text, "|".join(sorted(labs))))
    data = write_csv(tmp_path / "noisy.csv", [("", "SUPPORT")] + noisy)  # row 0 has no text: skipped
    r = run_cli("check-labels", str(data), "--multi-label", "--json", "-q", "--near", "1")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    flagged = {s["row"] for s in res["suspects"]}
    hits = len(flagged & flipped)
    assert hits / len(flagged) > 0.6 and hits / len(flipped) > 0.5, (hits, len(flagged), len(flipped))
    s = next(s for s in res["suspects"] if s["row"] in flipped)
    given, suggested = set(filter(None, s["given"].split("|"))), set(filter(None, s["suggested"].split("|")))
    assert given != suggested and given <= set(classes) and suggested <= set(classes)
    scores = [s["score"] for s in res["suspects"]]
    assert scores == sorted(scores, reverse=True)
    r = run_cli("train", str(data), "--multi-label", "--drop-suspects", "--out", str(tmp_path / "m"), "--json", "-q")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["dropped_suspects"] == sorted(flagged)
    assert rep["n_train"] == len(noisy) - len(flagged)
    r = run_cli("check-labels", str(data), "--multi-label", "--quality", "best")
    assert r.returncode == 2 and "uses the fast tier" in r.stderr


def test_a_multilabel_registry_retrains_behind_a_micro_f1_gate(ml, tmp_path):
    """train --multi-label --registry freezes a gate set of label sets; retrain --add with more
    real rows is promoted; rows whose labels are swapped are refused (exit 4) by the per-label gate."""
    _, train, _, _ = ml
    tr, _, _ = demo_paths()
    a = read_dataset(tr)
    more = write_csv(tmp_path / "more.csv", multilabel_inbox(a.texts[1500:2700], a.labels[1500:2700], 2))
    reg = tmp_path / "reg"
    r = run_cli("train", str(train), "--multi-label", "--registry", str(reg), "--json", "-q")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["version"] == "v0001" and rep["current"] == "v0001"
    assert any("held out as the gate set" in w for w in rep["warnings"])
    r = run_cli("registry", "list", str(reg), "--json")
    listed = json.loads(r.stdout)["versions"][0]
    assert listed["cv_macro_f1"] is not None and listed["current"]
    r = run_cli("registry", "retrain", str(reg), str(more), "--json", "-q")
    assert r.returncode == 0, r.stderr + r.stdout
    res = json.loads(r.stdout)
    assert res["decision"] == "promoted" and res["candidate"] == "v0002"
    g = res["gate"]
    assert g["micro_f1"]["candidate"] >= g["micro_f1"]["ci95"][0] and set(g["per_class"]) >= {"GRATITUDE", "SUPPORT"}
    assert res["n_added"] > 1000 and res["n_train"] > 2000
    # the stored training rows keep their label sets: the candidate learned from them
    model = load(reg / "v0002")
    assert getattr(model, "multi_label", False) and model.label_sep_ == "|"
    # a careless batch: GRATITUDE and SUPPORT swapped on every added row
    with open(more, newline="", encoding="utf-8") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    swap = {"GRATITUDE": "SUPPORT", "SUPPORT": "GRATITUDE"}
    bad_rows = [(t, "|".join(sorted(swap.get(x, x) for x in cell.split("|") if x))) for t, cell in rows]
    bad = write_csv(tmp_path / "bad.csv", bad_rows * 2)
    r = run_cli("registry", "retrain", str(reg), str(bad), "--json", "-q")
    assert r.returncode == 4, r.stderr + r.stdout
    res = json.loads(r.stdout)
    assert res["decision"] == "refused" and any("F1 drops" in x or "micro-F1 is lower" in x for x in res["reasons"])
    r = run_cli("registry", "list", str(reg), "--json")
    assert json.loads(r.stdout)["current"] == "v0002"


def test_capture_keeps_the_llm_label_set_and_set_corrections(ml, tmp_path):
    """A multi-label model's LLM answers land in the capture pool as whole label sets, corrections
    may name several labels, and the export is what retrain --add reads."""
    from misbehaving_llm import ScriptedLLM, completion

    tmp, *_ = ml
    llm = ScriptedLLM(default=(200, {}, completion('{"labels": ["SUPPORT", "GRATITUDE"]}'), 0))
    pool = tmp_path / "pool.sqlite"
    body = (
        f"llm: {{base_url: '{llm.url}/v1', model: m, timeout_s: 2, max_retries: 0}}\n"
        "routing: {unsure_band: {'*': 1.0}}\n"
        f"capture: {{pool: '{pool}', from: [llm, feedback]}}\n"
    )
    srv = Server(_pipeline(tmp, "capture.yaml", body))
    try:
        answers = [
            httpx.post(srv.url + "/v1/classify", json={"text": t}).json()
            for t in ("how do I change my PIN?", "thanks! where is my card?")
        ]
        assert all(a["route"] == "llm" for a in answers)
        rid = answers[1]["request_id"]
        r = httpx.post(srv.url + "/v1/feedback", json={"request_id": rid, "label": "TRY_TO_HACK | SUPPORT"})
        assert r.status_code == 202, r.text
        r = httpx.post(srv.url + "/v1/feedback", json={"request_id": rid, "label": "SUPPORT|NOPE"})
        assert r.status_code == 422 and "NOPE" in r.json()["error"]["message"]
    finally:
        srv.stop()
        llm.close()
    export = tmp_path / "export.csv"
    r = run_cli("pool", "export", str(pool), "--out", str(export), "-q")
    assert r.returncode == 0, r.stderr
    with open(export, newline="", encoding="utf-8") as f:
        rows = {r["label"] for r in csv.DictReader(f)}
    # the first request: the LLM's set; the second: the correction beats the LLM's answer
    assert rows == {"GRATITUDE|SUPPORT", "SUPPORT|TRY_TO_HACK"}


def test_unsure_band_fitted_to_a_share_or_a_precision(ml):
    """routing.fit on a multi-label model fits one unsure band on held-out label sets: to send at
    most a share to the LLM, or to keep local only label sets that are right often enough."""
    from offramp.data.multilabel import parse_label_sets
    from offramp.estimators.multilabel import indicator
    from offramp.runtime.routing import fit_bands

    tmp, _, test, _ = ml
    model = load(tmp / "m")
    with open(test, newline="", encoding="utf-8") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    texts = [t for t, _ in rows]
    Y = indicator(parse_label_sets([c for _, c in rows], "|")[0], list(model.classes_))
    proba = model.predict_proba(texts)
    exact = ((proba >= model.thresholds_) == Y.astype(bool)).all(axis=1)
    share = fit_bands(proba, model.thresholds_, Y, max_llm_share=0.1)
    assert 0.05 < share["held_out"]["llm_share"] <= 0.1
    assert share["held_out"]["local_precision"] > exact.mean()  # the doubtful ones went to the LLM
    target = min(0.99, float(exact.mean()) + 0.02)
    prec = fit_bands(proba, model.thresholds_, Y, local_precision=target)
    assert prec["held_out"]["local_precision"] >= target and prec["held_out"]["llm_share"] < 0.5
    # the same through a pipeline: /readyz reports the fitted band and its held-out figures
    p = _pipeline(tmp, "fit.yaml", f"routing: {{fit: {{val: '{test}', max_llm_share: 0.1}}}}\n")
    srv = Server(p)
    try:
        routing = httpx.get(srv.url + "/readyz").json()["routing"]
        assert routing["bands"]["*"] == share["bands"]["*"] and routing["held_out"]["llm_share"] <= 0.1
    finally:
        srv.stop()


def test_a_fit_file_naming_a_label_the_model_lacks_counts_those_sets_as_wrong(ml):
    """routing.fit.val may name a label the model has not got: the model's set can never be exact
    for those messages, so they count as wrong in the band's precision, and the label is named."""
    from offramp.runtime.cascade import build
    from offramp.runtime.config import Settings

    tmp, _, test, _ = ml
    with open(test, newline="", encoding="utf-8") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    val = tmp / "val_refund.csv"
    with open(val, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i, (text, labels) in enumerate(rows):
            w.writerow([text, labels + "|REFUND" if i % 2 == 0 else labels])
    body = "routing: {{fit: {{val: '{}', local_precision: {}}}}}\n"
    plain = build(Settings.resolve(_pipeline(tmp, "plain.yaml", body.format(test, 0.5)), env={}))
    odd = build(Settings.resolve(_pipeline(tmp, "odd.yaml", body.format(val, 0.5)), env={}))
    try:
        held_plain = plain.info["routing"]["held_out"]
        held = odd.info["routing"]["held_out"]
        assert held["labels_not_in_model"] == ["REFUND"]
        assert "labels_not_in_model" not in held_plain
        # half the sets are out of the model's reach: at most about half of those kept can be right
        assert held["local_precision"] <= 0.55 < held_plain["local_precision"]
    finally:
        plain.close()
        odd.close()
