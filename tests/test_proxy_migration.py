"""The whole migration without an app change, with the official ``openai`` client.

The app classifies tickets with ``client.beta.chat.completions.parse`` and a Pydantic model whose
field is an Enum, routes them with a forced tool call, and summarises them — all through one client
and one base URL. Its LLM is a real OpenAI-compatible server on loopback that reads the app's
prompts and answers from gold labels, in the shape each request asks for.

Day 0: the app talks to its LLM directly and logs the exchanges. ``import-logs --task-out`` learns
the two tasks (template, shape, labels) and the training rows; ``train --registry`` makes a model.
Day 1: the app's base URL points at offramp in proxy mode with ``shadow: {mode: llm_first}``: the
app still gets its LLM's answers, the small model is measured beside it, the capture pool fills.
``shadow report`` says "not yet"; ``pool export`` → ``registry retrain`` adds the day's answers; a
second day in the shadow and the report says "switch now" with a threshold. Day 3: ``local_first``
at that threshold: the same app code gets local answers its parser accepts; the summaries (and
the messages the small model is unsure of) still reach the LLM.
"""

import json
import os
import random
import re
from enum import Enum

import httpx
import openai
import pytest
from pydantic import BaseModel
from upstream_llm import UpstreamLLM

from offramp.demo.data import demo_paths

from helpers import Server, metric, read_pairs, run_cli

SYSTEM = "You are the triage assistant of ACME's support desk."
TRIAGE = "Classify this ticket.\n\nTicket: {text}\n\nAnswer with one category."
ROUTER = "You route tickets to queues with the route_ticket tool."


class Category(str, Enum):
    GRATITUDE = "GRATITUDE"
    OTHER = "OTHER"
    SUPPORT = "SUPPORT"
    TRY_TO_HACK = "TRY_TO_HACK"


class Ticket(BaseModel):
    category: Category


ROUTE_TOOL = {
    "type": "function",
    "function": {
        "name": "route_ticket",
        "description": "Send the ticket to a queue.",
        "parameters": {
            "type": "object",
            "properties": {"queue": {"type": "string", "enum": [c.value for c in Category]}},
            "required": ["queue"],
            "additionalProperties": False,
        },
    },
}


# ------------------------------------------------------------------ the app (never changes)
def triage(client, text):
    r = client.beta.chat.completions.parse(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": TRIAGE.format(text=text)}],
        response_format=Ticket,
        temperature=0,
    )
    return r.choices[0].message.parsed.category.value


def route(client, text):
    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": ROUTER}, {"role": "user", "content": text}],
        tools=[ROUTE_TOOL],
        tool_choice={"type": "function", "function": {"name": "route_ticket"}},
        seed=1,
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "route_ticket"
    return json.loads(call.function.arguments)["queue"]


def route_streamed(client, text):
    """The router's streaming variant: the tool call's arguments arrive in pieces."""
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": ROUTER}, {"role": "user", "content": text}],
        tools=[ROUTE_TOOL],
        tool_choice={"type": "function", "function": {"name": "route_ticket"}},
        stream=True,
    )
    name, args = "", ""
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name += call.function.name or ""
            args += call.function.arguments or ""
    assert name == "route_ticket"
    return json.loads(args)["queue"]


def ask(client, i, text):
    """The app's classification calls: triage two times in three, the router (streamed every other time) once."""
    if i % 3:
        return triage(client, text)
    return route_streamed(client, text) if i % 2 else route(client, text)


def summarise(client, text):
    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Summarise the ticket in one line."},
            {"role": "user", "content": text},
        ],
    )
    return r.choices[0].message.content


# ------------------------------------------------------------------ the app's LLM
def gold_llm(gold):
    def answer(body):
        system = body["messages"][0]["content"]
        user = body["messages"][-1]["content"]
        if system.startswith("Summarise"):
            return {"role": "assistant", "content": f"The customer writes {len(user)} characters."}
        m = re.fullmatch(r"Classify this ticket\.\n\nTicket: (.*)\n\nAnswer with one category\.", user, re.S)
        label = gold[m.group(1) if m else user]
        if body.get("tools"):
            call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": "route_ticket", "arguments": json.dumps({"queue": label})},
            }
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        return {"role": "assistant", "content": json.dumps({"category": label})}

    return UpstreamLLM(answer)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("migration")
    train, test, _ = demo_paths()
    rng = random.Random(3)
    day0 = rng.sample(read_pairs(train), 1000)
    traffic = read_pairs(test)
    rng.shuffle(traffic)
    gold = dict(day0 + traffic)
    up = gold_llm(gold)
    yield d, up, day0, traffic, gold
    up.close()


def _write_log(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _serve(d, up, pipeline, *extra):
    (d / "pipeline.yaml").write_text(pipeline)
    srv = Server(d / "pipeline.yaml", *extra, env={**os.environ, "UPSTREAM_KEY": "sk-upstream-secret"})
    return srv, openai.OpenAI(base_url=srv.url + "/v1", api_key="app-key", max_retries=0)


def test_the_migration_without_an_app_change(world):
    d, up, day0, traffic, gold = world
    direct = openai.OpenAI(base_url=up.url + "/v1", api_key="sk-upstream-secret", max_retries=0)

    # day 0: the app and its LLM, logged
    for text, label in day0[:900]:
        assert triage(direct, text) == label
    n_triage = len(up.log)
    for text, label in day0[900:]:
        assert route(direct, text) == label
    for text, _ in day0[:40]:
        summarise(direct, text)
    _write_log(d / "triage.jsonl", up.log[:n_triage] + up.log[-40:])  # the triage service's log
    _write_log(d / "router.jsonl", up.log[n_triage:])
    r = run_cli(
        "import-logs", str(d / "triage.jsonl"), "--out", str(d / "train.csv"), "--task-out", str(d / "triage.yaml")
    )
    assert r.returncode == 0, r.stderr
    assert "JSON field 'category'" in r.stdout and "skipped 40 lines: another prompt than the task" in r.stderr
    r = run_cli(
        "import-logs",
        str(d / "router.jsonl"),
        "--out",
        str(d / "router.csv"),
        "--task-out",
        str(d / "router.yaml"),
        "--min-requests",
        "50",
    )
    assert r.returncode == 0, r.stderr
    assert "tool call route_ticket(queue)" in r.stdout
    r = run_cli(
        "train", str(d / "train.csv"), "--registry", str(d / "reg"), "--quality", "fast", "--time-limit", "none", "-q"
    )
    assert r.returncode == 0, r.stderr

    # day 1, and again after a retrain: offramp in front, the LLM still answers; the small model
    # is measured in its shadow
    proxy = f"proxy: {{upstream: '{up.url}/v1', api_key_env: UPSTREAM_KEY}}\ntasks: [triage.yaml, router.yaml]\n"
    reports = []
    for day, (pool, msgs) in enumerate([("pool1.sqlite", traffic[:300]), ("pool2.sqlite", traffic[300:600])], 1):
        reports.append(_shadow_day(d, up, proxy, pool, msgs))
        if day == 1:
            r = run_cli("pool", "export", str(d / pool), "--out", str(d / "day1.csv"))
            assert r.returncode == 0, r.stderr
            assert len(read_pairs(d / "day1.csv")) == len(msgs)
            r = run_cli("registry", "retrain", str(d / "reg"), str(d / "day1.csv"), "--json")
            assert r.returncode == 0, r.stderr
    assert reports[1]["ready"], reports[1]["verdict"]
    threshold = reports[1]["threshold"]["threshold"]

    # day 3: local first at the report's threshold; the same app code
    srv, client = _serve(
        d, up, f"model: reg\n{proxy}routing: {{thresholds: {{'*': {threshold}}}}}\n", "--ui-admin-open"
    )
    try:
        day3 = traffic[600:900]
        sent = len(up.requests)
        right = 0
        for i, (text, label) in enumerate(day3):
            right += ask(client, i, text) == label  # the parser accepts it
        for text, _ in day3[:20]:
            assert summarise(client, text).startswith("The customer writes")
        m = httpx.get(srv.url + "/metrics").text
        local = metric(m, "offramp_proxy_requests_total", outcome="local")
        unsure = metric(m, "offramp_proxy_forwarded_total", reason="unsure") or 0
        assert local + unsure == len(day3) and local >= 0.5 * len(day3)
        assert len(up.requests) - sent == 20 + unsure  # only the summaries and the unsure went out
        assert right / len(day3) >= 0.9
        assert (metric(m, "offramp_proxy_forwarded_total", reason="template_changed") or 0) == 0
        # a new release of the app adds an instruction to its prompt: never answered locally
        changed = SYSTEM + " Think step by step."
        for text, label in day3[:10]:
            r = client.beta.chat.completions.parse(
                model="gpt-4o-mini",
                messages=[
                    {"role": "system", "content": changed},
                    {"role": "user", "content": TRIAGE.format(text=text)},
                ],
                response_format=Ticket,
            )
            assert r.choices[0].message.parsed.category.value == label and not hasattr(r, "offramp")
        with httpx.Client() as console:  # the page first: it opens the session
            assert console.get(srv.url + "/ui").status_code == 200
            view = console.get(srv.url + "/ui/api/overview").json()["proxy"]
        assert view["forwarded"]["template_changed"] == 10 and view["local"] == local
        assert view["prompts"]["changed"] == 10 and view["prompts"]["requests"] == len(day3) + 10
    finally:
        srv.stop()


def _shadow_day(d, up, proxy, pool, msgs):
    srv, client = _serve(
        d,
        up,
        f"model: reg\n{proxy}shadow: {{mode: llm_first}}\ncapture: {{pool: {pool}, from: [llm, shadow]}}\naudit: audit.sqlite\n",
    )
    try:
        sent = len(up.requests)
        for i, (text, label) in enumerate(msgs):
            assert ask(client, i, text) == label  # the LLM's answers
        for text, _ in msgs[:20]:
            assert summarise(client, text).startswith("The customer writes")
        assert len(up.requests) - sent == len(msgs) + 20  # every request reached the LLM
        m = httpx.get(srv.url + "/metrics").text
        assert metric(m, "offramp_proxy_forwarded_total", reason="shadow") == len(msgs)
        assert metric(m, "offramp_proxy_forwarded_total", reason="no_task") == 20
        assert sum(metric(m, "offramp_shadow_compared_total", label=c.value) or 0 for c in Category) == len(msgs)
    finally:
        srv.stop()
    r = run_cli("shadow", "report", str(d / pool), "--target", "0.9", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["compared"] == len(msgs)
    return report
