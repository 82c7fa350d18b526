"""Pipeline YAML, routing thresholds, per-label actions, and a served pipeline end to end."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from offramp.data.io import read_dataset
from offramp.demo.data import demo_docs
from offramp.errors import UsageError
from offramp.registry.records import load
from offramp.runtime.actions import AnswerFromDocs, Forward, Refuse, Reply
from offramp.runtime.cascade import build
from offramp.runtime.config import Settings, read_pipeline
from offramp.runtime.routing import fit_thresholds

from helpers import Server


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def build_cascade(path):
    return build(Settings.resolve(path, env={}))


@pytest.mark.parametrize(
    "text,needle",
    [
        ("model: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("modle: m\n", "modle: Extra inputs are not permitted"),
        ("routing: {}\n", r"give model: \(one small model\) or stages: \(a chain of them\)"),
        ("model: m\nrouting: {treshold: 3}\n", "routing.treshold: Extra inputs are not permitted"),
        ("model: m\nrouting: {fit: {val: v.csv, max_llm_share: 0.1, local_precision: 0.9}}\n", "exactly one of"),
    ],
)
def test_pipeline_file_errors_name_the_problem(tmp_path, text, needle):
    with pytest.raises(UsageError, match=needle):
        read_pipeline(write(tmp_path / "p.yaml", text))
    with pytest.raises(UsageError, match="does not exist"):
        read_pipeline(tmp_path / "none.yaml")


def test_actions_checked_against_the_model(tmp_path, fast_model):
    import shutil

    shutil.copytree(fast_model, tmp_path / "model")
    with pytest.raises(UsageError, match="labels the model does not have: REFUND"):
        build_cascade(write(tmp_path / "p.yaml", "model: model\nactions: {REFUND: {type: reply, text: x}}\n"))
    with pytest.raises(UsageError, match="unknown action type 'email'"):
        build_cascade(write(tmp_path / "p.yaml", "model: model\nactions: {OTHER: {type: email}}\n"))
    with pytest.raises(UsageError, match="docs folder .* does not exist"):
        build_cascade(
            write(tmp_path / "p.yaml", "model: model\nactions: {SUPPORT: {type: answer_from_docs, docs: nope}}\n")
        )
    with pytest.raises(UsageError, match="needs an http"):
        build_cascade(
            write(tmp_path / "p.yaml", "model: model\nactions: {OTHER: {type: forward, url: 'file:///etc/passwd'}}\n")
        )


def test_routing_thresholds_meet_their_targets(fast_model, inbox_sample):
    model = load(fast_model)
    val = read_dataset(inbox_sample[1])
    proba = model.predict_proba(val.texts)
    r = fit_thresholds(proba, model.classes_, val.labels, max_llm_share=0.05)
    assert r["held_out"]["llm_share"] <= 0.05
    r = fit_thresholds(proba, model.classes_, val.labels, local_precision=0.98)
    assert r["held_out"]["local_precision"] >= 0.98 and set(r["thresholds"]) <= set(model.classes_)


def test_simple_actions():
    assert Reply("👍")("thanks", "GRATITUDE").to_dict() == {"type": "reply", "text": "👍"}
    assert Refuse("no {label}")("x", "TRY_TO_HACK").text == "no TRY_TO_HACK"


@pytest.mark.parametrize("method", ["embeddings", "tfidf"])
def test_answer_from_docs(method):
    a = AnswerFromDocs(demo_docs(), method=method)
    got = a("how can I change my PIN?", "SUPPORT")
    assert got.found and got.source.startswith("pin.md#") and "PIN" in got.text
    assert not a("zxqv wplk", "SUPPORT").found


def test_answer_from_docs_understands_paraphrase():
    got = AnswerFromDocs(demo_docs(), method="embeddings")(
        "my card still has not arrived, what should I do?", "SUPPORT"
    )
    assert got.source == "cards.md#Card delivery"


def test_forward_to_a_real_webhook_and_a_dead_one():
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Hook)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        out = Forward(f"http://127.0.0.1:{srv.server_port}/hook")("hello there", "OTHER")
        assert out.to_dict() == {"type": "forward", "delivered": True, "status": 204}
        assert received == [{"text": "hello there", "label": "OTHER"}]
    finally:
        srv.shutdown()
    dead = Forward(f"http://127.0.0.1:{srv.server_port}/hook", timeout_s=0.5)("x", "OTHER")
    assert dead.delivered is False


def test_served_demo_pipeline(fast_model, tmp_path):

    from offramp.audit.log import AuditLog
    from offramp.data.io import read_dataset
    from offramp.demo.data import demo_paths
    from offramp.demo.pipeline import write_demo_pipeline
    from offramp.registry.records import load
    from offramp.registry.versions import Registry

    Registry.create(tmp_path / "registry").add(load(fast_model))  # the demo serves a registry
    p = write_demo_pipeline(tmp_path)
    s = Server(p)
    test = read_dataset(demo_paths()[1])
    texts = test.texts[::10][:100]  # 100 messages of the demo test split, one request each
    expected = [str(x) for x in load(tmp_path / "registry").predict(texts)]
    kinds = {"SUPPORT": "answer_from_docs", "GRATITUDE": "reply", "TRY_TO_HACK": "refuse", "OTHER": None}
    try:
        thanks = httpx.post(s.url + "/v1/classify", json={"text": "thank you so much!"}).json()
        assert thanks["label"] == "GRATITUDE" and thanks["action"] == {"type": "reply", "text": "👍"}
        pin = httpx.post(s.url + "/v1/classify", json={"text": "how do I change my card pin"}).json()
        assert pin["label"] == "SUPPORT" and pin["action"]["found"] and pin["action"]["source"].startswith("pin.md")
        got = [httpx.post(s.url + "/v1/classify", json={"text": t}).json() for t in texts]
        metrics = httpx.get(s.url + "/metrics").text
    finally:
        s.stop()
    assert [g["label"] for g in got] == expected
    assert all((g["action"] or {}).get("type") == kinds[g["label"]] for g in got)
    assert f'offramp_decisions_total{{route="local"}} {len(texts) + 2}' in metrics
    for label in set(expected):
        n = expected.count(label) + (label == "GRATITUDE") + (label == "SUPPORT")
        assert f'offramp_labels_total{{label="{label}"}} {n}' in metrics
    log = AuditLog(tmp_path / "audit.sqlite", create=False)
    v = log.verify()
    assert v.ok and v.records == len(texts) + 2
    import json

    recs = [json.loads(b) for _, _, b, _ in log.records()]
    assert [r["decision"] for r in recs[2:]] == expected and {r["route"] for r in recs} == {"local"}
    assert not any(r["endpoint"] for r in recs)  # nothing left the machine


def test_parse_label():
    from offramp.llm.prompts import parse_label

    labels = ["SUPPORT", "GRATITUDE", "TRY_TO_HACK", "OTHER"]
    assert parse_label("gratitude", labels) == "GRATITUDE"
    assert parse_label(' "TRY_TO_HACK". ', labels) == "TRY_TO_HACK"
    assert parse_label("The label is SUPPORT.", labels) == "SUPPORT"
    assert parse_label("SUPPORT or OTHER", labels) is None
    assert parse_label("I think it's a refund request", labels) is None


def test_circuit_breaker_opens_and_closes():
    from offramp.llm.client import ChatClient, LLMConfig, LLMError
    from offramp.runtime.fallback import CircuitOpen, LLMFallback

    from misbehaving_llm import ScriptedLLM

    llm = ScriptedLLM(default=(500, {}, {"error": "down"}, 0))
    now = [0.0]
    try:
        fb = LLMFallback(
            ChatClient(LLMConfig(llm.url, "m", max_retries=0)),
            ["A", "B"],
            failure_threshold=2,
            reset_after_s=10,
            clock=lambda: now[0],
        )
        for _ in range(2):
            with pytest.raises(LLMError):
                fb("x")
        with pytest.raises(CircuitOpen):
            fb("x")
        assert len(llm.requests) == 2  # the open breaker sent nothing
        now[0] = 11.0
        llm.default = (200, {}, {"choices": [{"message": {"content": "B"}}]}, 0)
        assert fb("x") == "B"
    finally:
        llm.close()


def test_served_cascade_falls_back_to_a_real_llm_and_survives_its_death(fast_model, tmp_path):
    import shutil

    from misbehaving_llm import ScriptedLLM, completion

    llm = ScriptedLLM(default=(200, {}, completion("OTHER"), 0))
    shutil.copytree(fast_model, tmp_path / "model")
    p = write(
        tmp_path / "p.yaml",
        f"model: model\nllm: {{base_url: '{llm.url}/v1', model: m, timeout_s: 1, max_retries: 0}}\n"
        "routing: {thresholds: {'*': 1.01}}\n",
    )  # everything goes to the LLM
    s = Server(p)
    try:
        r = httpx.post(s.url + "/v1/classify", json={"text": "thank you so much!"}).json()
        assert r["route"] == "llm" and r["label"] == "OTHER"
        asked = llm.requests[-1]["body"]["messages"]
        assert asked[1]["content"] == "thank you so much!" and "GRATITUDE" in asked[0]["content"]
        llm.close()  # the LLM dies mid-run: routes change, availability does not
        codes, routes, flags = [], [], []
        for _ in range(5):
            resp = httpx.post(s.url + "/v1/classify", json={"text": "thank you so much!"})
            codes.append(resp.status_code)
            routes.append(resp.json()["route"])
            flags += resp.json()["flags"]
        assert codes == [200] * 5 and set(routes) == {"local"}
        assert "fallback_failed" in flags and "llm_circuit_open" in flags
        m = httpx.get(s.url + "/metrics").text
        assert 'offramp_decisions_total{route="llm"} 1' in m and 'offramp_decisions_total{route="local"} 5' in m
    finally:
        s.stop()
