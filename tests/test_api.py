"""The Python API used directly, in process: train, evaluate, load, the estimators in scikit-learn's
own tooling, the cascade, the settings' precedence and the egress policy."""

import json

import numpy as np
import pyarrow as pa
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_predict, cross_val_score

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths

from helpers import run_cli


@pytest.fixture(scope="module")
def inbox():
    """300 training and 200 test messages of the bundled inbox, as plain lists."""
    train, test = read_dataset(demo_paths()[0]), read_dataset(demo_paths()[1])
    return (train.texts[:300], train.labels[:300]), (test.texts[:200], test.labels[:200])


def test_the_public_face():
    import offramp
    from offramp import Cascade, PrivacyGuard, TfidfLinear, evaluate, load, train  # noqa: F401

    assert set(offramp.__all__) <= set(dir(offramp))
    for name in offramp.__all__:
        assert getattr(offramp, name) is not None
    with pytest.raises(AttributeError):
        offramp.no_such_thing  # noqa: B018


def test_estimators_follow_the_scikit_learn_contract(inbox):
    from offramp import StackedLinear, TfidfLinear

    (texts, labels), (test_texts, test_labels) = inbox
    assert clone(TfidfLinear(C=2)).get_params()["C"] == 2
    m = TfidfLinear(C=2, word_ngrams=(1, 1))
    m.set_params(C=0.5)
    assert m.C == 0.5 and clone(m).get_params() == m.get_params()
    assert clone(StackedLinear(embed_weight=2.0)).get_params()["embed_weight"] == 2.0
    with pytest.raises(NotFittedError):
        TfidfLinear().predict(["hello"])
    with pytest.raises(NotFittedError):
        TfidfLinear().predict_one("hello")
    scores = cross_val_score(TfidfLinear(min_df=1), texts, labels, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.7
    pred = cross_val_predict(TfidfLinear(min_df=1), texts, labels, cv=3)
    assert len(pred) == len(texts) and set(pred) <= set(labels)
    grid = GridSearchCV(TfidfLinear(min_df=1), {"C": [0.5, 1.0]}, cv=3).fit(texts, labels)
    assert grid.best_params_["C"] in (0.5, 1.0) and grid.score(test_texts, test_labels) > 0.7
    # parameters are checked in fit, with a message naming them
    with pytest.raises(ValueError, match="'C' parameter"):
        TfidfLinear(C=-1).fit(texts, labels)
    with pytest.raises(ValueError, match="word_ngrams"):
        TfidfLinear(word_ngrams=(3, 1)).fit(texts, labels)
    with pytest.raises(ValueError, match="at least two labels"):
        TfidfLinear().fit(["a", "b"], ["X", "X"])


def test_texts_arrive_in_any_column_type(inbox):
    from offramp import TfidfLinear

    (texts, labels), (test_texts, _) = inbox
    ref = TfidfLinear(min_df=1).fit(texts, labels).predict(test_texts)
    for X, y in [
        (np.array(texts, dtype=object), np.array(labels)),
        (pa.array(texts), pa.chunked_array([labels])),
        (tuple(texts), iter(labels)),
        ((t for t in texts), list(labels)),
    ]:
        got = TfidfLinear(min_df=1).fit(X, y).predict(pa.array(test_texts))
        assert (got == ref).all()
    from offramp.errors import InputError

    with pytest.raises(InputError, match="single string"):
        TfidfLinear(min_df=1).fit(texts, labels).predict("one text")
    with pytest.raises(InputError, match="text 1 is NoneType"):
        TfidfLinear(min_df=1).fit(["a", None, "c"], ["X", "Y", "X"])
    with pytest.raises(InputError, match="3 texts but 2 labels"):
        TfidfLinear(min_df=1).fit(["a", "b", "c"], ["X", "Y"])


def test_train_evaluate_save_load_in_process(inbox, tmp_path):
    from offramp import EvalReport, TrainReport, evaluate, load, train

    (texts, labels), (test_texts, test_labels) = inbox
    model, report = train(texts, labels, quality="fast", time_limit=None, seed=3)
    assert isinstance(report, TrainReport) and report.skipped == [] and report.time_limit is None
    assert report.winner in {c.name for c in report.candidates} and len(report.candidates) == 5
    assert all(c.status == "scored" for c in report.candidates)
    # the same data and seed with no time limit: the same model, whatever the machine's speed
    again, report2 = train(texts, labels, quality="fast", time_limit=None, seed=3)
    assert report2.winner == report.winner
    assert np.array_equal(again.coef_, model.coef_)
    assert [c.cv_macro_f1 for c in report2.candidates] == [c.cv_macro_f1 for c in report.candidates]
    res = evaluate(model, test_texts, test_labels, speed=False)
    assert isinstance(res, EvalReport) and res.n == 200 and res.macro_f1 > 0.8 and res.model == report.winner
    model.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert (loaded.predict(test_texts) == model.predict(test_texts)).all()
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert report.winner in card and "no time limit" in card
    # the eval --json object is exactly EvalReport.to_dict()
    test_csv = tmp_path / "t.csv"
    test_csv.write_text(
        "text,label\n" + "".join(f'"{t.replace(chr(34), chr(34) * 2)}",{y}\n' for t, y in zip(test_texts, test_labels))
    )
    r = run_cli("eval", str(tmp_path / "m"), str(test_csv), "--json")
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout)
    lib = evaluate(loaded, read_dataset(test_csv)).to_dict()
    assert set(cli) == set(lib)
    for key in ("n", "accuracy", "macro_f1", "per_class", "confusion", "model", "model_bytes", "ece"):
        assert cli[key] == lib[key], key


def test_time_limit_skips_are_reported(inbox):
    from offramp import train

    (texts, labels), _ = inbox
    _, report = train(texts, labels, quality="fast", time_limit=0.01)
    assert report.skipped and all(c.startswith(("svm", "logreg")) for c in report.skipped)
    assert report.to_dict()["skipped"] == report.skipped


def test_a_model_trained_only_to_be_scored_skips_the_speed_figures(inbox, tmp_path):
    from offramp import price_the_move, train

    (texts, labels), (test_texts, _) = inbox
    model, report = train(texts, labels, quality="fast", measure_speed=False, time_limit=None)
    assert report.latency_ms["p50"] is None and report.throughput_per_s == 0.0
    assert all(c.latency_p99_ms is None for c in report.candidates if c.status == "scored")
    timed, timed_report = train(texts, labels, quality="fast", time_limit=None)
    assert timed_report.latency_ms["p50"] > 0 and timed_report.throughput_per_s > 0
    assert timed_report.winner == report.winner  # the same search, only untimed
    assert list(model.predict(test_texts)) == list(timed.predict(test_texts))
    model.save(tmp_path / "m")
    assert "not measured" in (tmp_path / "m" / "MODEL_CARD.md").read_text()
    priced, _ = price_the_move(messages_per_month=1_000_000, model=tmp_path / "m")
    assert not priced.inputs.throughput_measured
    # a latency budget still times the candidates: it needs their figures
    _, budgeted = train(texts, labels, quality="fast", measure_speed=False, latency_budget_ms=50, time_limit=None)
    assert all(c.latency_p99_ms is not None for c in budgeted.candidates if c.status == "scored")


def test_cascade_in_process(inbox):
    from offramp import Cascade, PrivacyGuard, train
    from offramp.llm.client import LLMUnavailable

    (texts, labels), _ = inbox
    model, _ = train(texts, labels, quality="fast", time_limit=None)

    class Down:
        endpoint = "http://127.0.0.1:9/v1/chat/completions"

        def __call__(self, text):
            raise LLMUnavailable("down")

    class Broken(Down):
        def __call__(self, text):
            raise KeyError("a bug")

    d = Cascade(model, guard=PrivacyGuard()).run("thank you so much! mail me at a@b.com")
    assert d.label == "GRATITUDE" and d.route == "local" and d.pii == {"EMAIL_ADDRESS": 1}
    d = Cascade(model, fallback=Down(), thresholds={"*": 1.01}).run("hello")
    assert d.route == "local" and d.flags == ["fallback_failed"]
    # an unexpected exception is logged and counted, not silently turned into an ordinary flag
    c = Cascade(model, fallback=Broken(), thresholds={"*": 1.01})
    d = c.run("hello", request_id="req-1")
    assert "internal_error" in d.flags and c.errors == 1 and d.endpoints == []


def test_settings_precedence_flag_then_pipeline_then_environment_then_default(tmp_path):
    from offramp import Settings

    p = tmp_path / "p.yaml"
    p.write_text("model: model\nlimits: {max_batch: 256}\naudit: a.sqlite\n")
    env = {"OFFRAMP_MAX_BATCH": "7", "OFFRAMP_MAX_TEXT_CHARS": "99", "OFFRAMP_AUDIT": "env.sqlite"}
    s = Settings.resolve(p, {"max_batch": 3}, env)
    assert s.max_batch == 3 and s.sources["max_batch"] == "flag"
    assert s.audit == tmp_path / "a.sqlite" and s.sources["audit"] == "pipeline"
    assert s.max_text_chars == 99 and s.sources["max_text_chars"] == "environment"
    assert s.max_body_bytes == 1_000_000 and s.sources["max_body_bytes"] == "default"
    s = Settings.resolve(p, {"max_batch": None, "audit": tmp_path / "flag.sqlite"}, env)  # None: not given
    assert s.max_batch == 256 and s.audit == tmp_path / "flag.sqlite"
    assert Settings.resolve(tmp_path / "model", {}, env).max_batch == 7
    from offramp.errors import UsageError

    with pytest.raises(UsageError, match="OFFRAMP_MAX_BATCH"):
        Settings.resolve(p, {}, {"OFFRAMP_MAX_BATCH": "lots"})


def test_a_pipelines_privacy_is_what_applies_at_egress(fast_model, tmp_path):
    """privacy: {enabled: false} means nothing is masked on the way out either; offline: true is
    the pipeline's own, and a reload from a file without it no longer refuses."""
    import shutil

    from offramp import Settings
    from offramp.runtime.cascade import build

    shutil.copytree(fast_model, tmp_path / "model")
    p = tmp_path / "p.yaml"
    llm = "llm: {base_url: 'https://llm.example.com/v1', model: m}\n"
    p.write_text("model: model\n" + llm + "privacy: {enabled: false}\n")
    client = build(Settings.resolve(p, env={})).cascade.fallback.client
    assert client.policy.check("https://llm.example.com/v1", ["a@b.com"]) == ["a@b.com"]
    p.write_text("model: model\n" + llm + "privacy: {entities: [PHONE_NUMBER]}\noffline: true\n")
    client = build(Settings.resolve(p, env={})).cascade.fallback.client
    from offramp.egress.policy import EgressRefused

    with pytest.raises(EgressRefused):
        client.policy.check("https://llm.example.com/v1", ["x"])
    p.write_text("model: model\n" + llm + "privacy: {entities: [PHONE_NUMBER]}\n")
    client = build(Settings.resolve(p, env={})).cascade.fallback.client
    assert client.policy.check("https://llm.example.com/v1", ["a@b.com call +44 20 7946 0958"]) == [
        "a@b.com call <PHONE_NUMBER>"
    ]  # only the pipeline's entity set, no longer offline


def test_old_names_still_import_with_a_warning():
    import offramp

    with pytest.warns(DeprecationWarning, match="use offramp.load"):
        assert offramp.load_model is offramp.load
    with pytest.warns(DeprecationWarning, match="use offramp.ChatClient"):
        assert offramp.LLMClient is offramp.ChatClient


def test_everything_the_cli_does_python_can_call(inbox, tmp_path):
    """The library owns the behaviour: train into a registry with a gate held out and suspects
    dropped, check labels by file row, mask a file, price the move, retrain behind the gate."""
    from offramp import Registry, check_labels, mask, price_the_move, retrain, train
    from offramp.data.io import write_records

    (texts, labels), _ = inbox
    labels = list(labels)
    labels[3] = "GRATITUDE" if labels[3] != "GRATITUDE" else "SUPPORT"  # one wrong label
    data = tmp_path / "train.csv"
    write_records(data, [{"text": t, "label": lab} for t, lab in zip(texts, labels)])
    model, rep = train(data, quality="fast", time_limit=None, registry=tmp_path / "reg", drop_suspects=True)
    assert rep.registry is not None and rep.registry.version == "v0001" and rep.registry.promoted
    assert rep.dropped_suspects is not None and all(0 <= r < len(texts) for r in rep.dropped_suspects)
    reg = Registry(tmp_path / "reg")
    gate = reg.gate_set()
    assert gate is not None and 0 < len(gate[0]) < len(texts)  # a stratified share held out
    assert rep.to_dict()["version"] == "v0001" and rep.n_train < len(texts)
    check = check_labels(data, quality="fast")
    assert check.rows == len(texts) and check.suspects
    assert all(texts[s.row] == s.text and labels[s.row] == s.given for s in check.suspects)  # the file's own rows
    masked = mask(data, tmp_path / "masked.csv", columns=["text"], ner=False)
    assert masked.rows == len(texts) and (tmp_path / "masked.csv").is_file()
    costs, one_off = price_the_move(messages_per_day=1000, model=reg.version_dir("v0001"))
    assert not one_off and costs.row("small model (local CPU)").source == "measured throughput"
    more = tmp_path / "more.csv"
    write_records(more, [{"text": t, "label": lab} for t, lab in zip(texts[:50], labels[:50])])
    result = retrain(tmp_path / "reg", more)
    assert result.candidate == "v0002" and result.current == "v0001"


def test_a_cascade_from_a_pipeline_file_and_the_service_mounted_in_an_app(fast_model, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from offramp import ActionResult, Cascade, create_app

    (tmp_path / "p.yaml").write_text(f"model: {fast_model}\nactions:\n  GRATITUDE: {{type: reply, text: ok}}\n")
    cascade = Cascade.from_pipeline(tmp_path / "p.yaml")
    d = cascade.run("thank you so much!")
    assert d.label == "GRATITUDE" and d.action == ActionResult("reply", text="ok")
    app = FastAPI()
    app.mount("/offramp", create_app(tmp_path / "p.yaml"))
    with TestClient(app) as client:
        r = client.post("/offramp/v1/classify", json={"text": "thank you so much!"})
        assert r.status_code == 200 and r.json()["label"] == "GRATITUDE"
        assert r.json()["action"] == {"type": "reply", "text": "ok"}
        assert client.get("/offramp/healthz").json() == {"status": "ok"}


def test_the_whole_search_is_one_estimator(inbox):
    from offramp import AutoTextClassifier

    (texts, labels), (test_texts, test_labels) = inbox
    clf = AutoTextClassifier(quality="fast", time_limit=None)
    scores = cross_val_score(clf, texts, labels, cv=3)
    assert scores.mean() > 0.8 and clone(clf).get_params() == clf.get_params()
    clf.fit(texts, labels)
    assert clf.report_.winner and list(clf.classes_) == sorted(set(labels))
    assert (clf.predict(test_texts) == np.array(test_labels)).mean() > 0.8
