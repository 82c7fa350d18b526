"""The LLM client against a real local HTTP server that misbehaves on purpose."""

import socket
import time

import pytest

from offramp.egress.policy import EgressPolicy, EgressRefused, is_loopback
from offramp.llm.client import (
    ChatClient,
    LLMBadResponse,
    LLMConfig,
    LLMRateLimited,
    LLMRequestRejected,
    LLMUnavailable,
)

from misbehaving_llm import ScriptedLLM, completion

MSG = [{"role": "user", "content": "thanks!"}]


def client(url, **kw):
    sleeps = []
    cfg = LLMConfig(
        base_url=url,
        model="m",
        api_key_env="OFFRAMP_TEST_KEY",
        timeout_s=kw.pop("timeout_s", 2.0),
        max_retries=kw.pop("max_retries", 3),
        backoff_base_s=0.01,
        backoff_max_s=kw.pop("backoff_max_s", 5),
        **kw,
    )
    c = ChatClient(cfg, sleep=lambda s: (sleeps.append(s), time.sleep(s)))
    return c, sleeps


@pytest.fixture
def llm():
    s = ScriptedLLM()
    yield s
    s.close()


def test_success_sends_key_from_env_and_reads_usage(llm, monkeypatch):
    monkeypatch.setenv("OFFRAMP_TEST_KEY", "sk-secret-value")
    c, _ = client(llm.url)
    r = c.chat(MSG, temperature=0)
    assert r.content == "OTHER" and r.usage["total_tokens"] == 22 and r.attempts == 1
    req = llm.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["body"]["model"] == "m" and req["body"]["temperature"] == 0
    assert req["auth"] == "Bearer sk-secret-value"
    assert "sk-secret-value" not in repr(c.config)


def test_retries_5xx_then_succeeds(llm):
    llm.script = [(500, {}, {"error": "boom"}, 0), (503, {}, b"unavailable", 0)]
    c, sleeps = client(llm.url)
    r = c.chat(MSG)
    assert r.content == "OTHER" and r.attempts == 3 and len(llm.requests) == 3 and len(sleeps) == 2


def test_honours_retry_after_on_429(llm):
    llm.script = [(429, {"Retry-After": "1"}, {"error": "slow down"}, 0)]
    c, sleeps = client(llm.url)
    c.chat(MSG)
    assert sleeps == [1.0]
    assert llm.times[1] - llm.times[0] >= 0.95


def test_429_forever_is_typed(llm):
    llm.default = (429, {"Retry-After": "0"}, {"error": "quota"}, 0)
    c, _ = client(llm.url, max_retries=2)
    with pytest.raises(LLMRateLimited, match="429 after 3 attempts"):
        c.chat(MSG)
    assert len(llm.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 404])
def test_no_retry_on_4xx_that_cannot_succeed(llm, status):
    llm.default = (status, {}, {"error": "nope"}, 0)
    c, sleeps = client(llm.url)
    with pytest.raises(LLMRequestRejected, match=f"answered {status}"):
        c.chat(MSG)
    assert len(llm.requests) == 1 and sleeps == []


def test_slow_answers_time_out_and_retry(llm):
    llm.script = [(200, {}, completion("LATE"), 1.5)]
    c, _ = client(llm.url, timeout_s=0.5)
    r = c.chat(MSG)
    assert r.content == "OTHER" and r.attempts == 2


def test_server_down_is_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c, sleeps = client(f"http://127.0.0.1:{port}", max_retries=2)
    t0 = time.perf_counter()
    with pytest.raises(LLMUnavailable, match="cannot reach"):
        c.chat(MSG)
    assert len(sleeps) == 2 and time.perf_counter() - t0 < 5


def test_malformed_answer_is_typed(llm):
    llm.default = (200, {}, {"not": "a completion"}, 0)
    c, _ = client(llm.url)
    with pytest.raises(LLMBadResponse):
        c.chat(MSG)


def test_backoff_grows_and_is_capped():
    c, _ = client("http://127.0.0.1:9", backoff_max_s=1.0)
    caps = [max(c._backoff(a, None) for _ in range(200)) for a in range(8)]
    assert caps[0] <= 0.01 + 1e-9 and max(caps) <= 1.0 and caps[5] > caps[0]
    assert c._backoff(0, 3.0) == 1.0  # Retry-After above the cap is capped


def test_offline_mode_refuses_remote_hosts_before_sending(monkeypatch):
    monkeypatch.setenv("OFFRAMP_OFFLINE", "1")
    policy = EgressPolicy.from_env()
    with pytest.raises(EgressRefused, match="offline mode"):
        policy.check("https://api.openai.com/v1/chat/completions", ["hello"])
    assert policy.check("http://127.0.0.1:8080/v1", ["hello"]) == ["hello"]
    c, _ = client("https://api.example.com/v1")
    with pytest.raises(EgressRefused):
        c.chat(MSG)
    assert (
        is_loopback("http://localhost:1/") and is_loopback("http://[::1]:80/") and not is_loopback("http://10.0.0.1/")
    )


def test_guard_applies_only_to_remote_hosts():
    policy = EgressPolicy(guard=lambda t: t.replace("alice@example.com", "<EMAIL_1>"))
    assert policy.check("https://api.example.com/v1", ["mail alice@example.com"]) == ["mail <EMAIL_1>"]
    assert policy.check("http://127.0.0.1:1/v1", ["mail alice@example.com"]) == ["mail alice@example.com"]
    # the policy is an object, not a process-wide switch: another one is unaffected
    assert EgressPolicy(guard=None).check("https://api.example.com/v1", ["mail alice@example.com"]) == [
        "mail alice@example.com"
    ]
