"""The privacy guard: detection with checks, operators, the pseudonym vault, egress and offline mode."""

import importlib.util
import json
import sqlite3

import pytest

from offramp.egress.policy import EgressPolicy, EgressRefused
from offramp.errors import UsageError
from offramp.privacy import patterns
from offramp.privacy.guard import PrivacyGuard
from offramp.privacy.vault import PseudonymVault

from helpers import run_cli, write_csv

FOUND = [
    ("EMAIL_ADDRESS", "write to jane.o'neil@example.co.uk".replace("'", ""), "jane.oneil@example.co.uk"),
    ("EMAIL_ADDRESS", "mail: a_b-c+tag@sub.example.io.", "a_b-c+tag@sub.example.io"),
    ("PHONE_NUMBER", "call me on +44 20 7946 0958 tonight", "+44 20 7946 0958"),
    ("PHONE_NUMBER", "my number is (555) 123-4567", "(555) 123-4567"),
    ("PHONE_NUMBER", "phone: 07700 900123", "07700 900123"),
    ("PHONE_NUMBER", "reach me at +14155552671", "+14155552671"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 was declined", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "5500-0000-0000-0004 again", "5500-0000-0000-0004"),
    ("CREDIT_CARD", "amex 378282246310005", "378282246310005"),
    ("IBAN_CODE", "IBAN GB82 WEST 1234 5698 7654 32 thanks", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN_CODE", "send it to DE89370400440532013000.", "DE89370400440532013000"),
    ("IP_ADDRESS", "login from 203.0.113.7 failed", "203.0.113.7"),
    ("IP_ADDRESS", "I logged in from 203.0.113.7.", "203.0.113.7"),
    ("IP_ADDRESS", "ipv6 2001:db8::8a2e:370:7334 too", "2001:db8::8a2e:370:7334"),
    ("US_SSN", "ssn 536-22-1234", "536-22-1234"),
    ("UK_NINO", "NI number AB 12 34 56 C", "AB 12 34 56 C"),
    ("DATE_OF_BIRTH", "I was born on 12/03/1985", "12/03/1985"),
    ("DATE_OF_BIRTH", "date of birth: March 12, 1985", "March 12, 1985"),
    ("URL", "see https://example.com/a?b=1.", "https://example.com/a?b=1"),
]

NOT_FOUND = [
    "card 4111 1111 1111 1112 was declined",  # fails Luhn
    "IBAN GB82 WEST 1234 5698 7654 33",  # fails mod-97
    "login from 999.10.10.10",  # not an IP address
    "ssn 000-12-3456",  # area 000 is never issued
    "the transfer on 12/03/2024 has not arrived",  # a date, but not a birth date
    "I paid 25.00 on 2024-01-15 at 12:30",
    "top up 100 pounds 3 times",
    "ref 2024 1234",  # bare digit groups with no phone word
]


@pytest.mark.parametrize("entity,text,value", FOUND)
def test_pattern_recognizers_find_valid_values(entity, text, value):
    spans = patterns.resolve(patterns.find(text))
    assert [(s.entity, s.value(text)) for s in spans] == [(entity, value)]


@pytest.mark.parametrize("text", NOT_FOUND)
def test_pattern_checks_reject_lookalikes(text):
    assert patterns.resolve(patterns.find(text)) == []


def test_prefilters_never_drop_a_finding():
    """The digit counts and substrings tested before each expression are necessary conditions: the
    findings are the same with them switched off, on the found and not-found cases, the demo
    messages, and variants in capitals, with other scripts' digits and with non-ASCII text around."""
    import dataclasses

    from offramp.data.io import read_dataset
    from offramp.demo.data import demo_paths

    texts = [t for _, t, _ in FOUND] + NOT_FOUND + read_dataset(demo_paths()[1]).texts
    texts += [t.upper() for _, t, _ in FOUND] + ["« " + t + " » — merci" for _, t, _ in FOUND]
    texts += [
        "card ٤١١١ 1111 1111 1111 declined",
        "SEE HTTPS://EXAMPLE.COM/X",
        "Née le 12/03/1985",
        "DOB 12.03.85",
        "call ٠٧٧٠٠ ٩٠٠١٢٣",
        "2001:db8::1 and 203.0.113.7 and a@b.io",
    ]
    plain = [dataclasses.replace(r, min_digits=0, needs=()) for r in patterns.RECOGNIZERS]
    found = [patterns.find(t) for t in texts]
    original = patterns.RECOGNIZERS[:]
    try:
        patterns.RECOGNIZERS[:] = plain
        reference = [patterns.find(t) for t in texts]
    finally:
        patterns.RECOGNIZERS[:] = original
    assert found == reference
    assert sum(map(len, found)) > len(FOUND)  # the cases do hold findings


def test_operators():
    text = "Hi, mail a@b.com or call +44 20 7946 0958, card 4111 1111 1111 1111"
    assert (
        PrivacyGuard(operator="placeholder")(text)
        == "Hi, mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>, card <CREDIT_CARD>"
    )
    assert PrivacyGuard(operator="redact")(text) == "Hi, mail  or call , card "
    masked = PrivacyGuard(operator="mask")(text)
    assert masked == "Hi, mail *@*.*** or call +** ** **** 0958, card **** **** **** 1111"
    m = PrivacyGuard().mask(text)
    assert m.counts == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1, "CREDIT_CARD": 1} and m.found == 3
    only = PrivacyGuard(entities=["EMAIL_ADDRESS"])(text)
    assert "<EMAIL_ADDRESS>" in only and "4111" in only
    with pytest.raises(UsageError, match="unknown PII entity"):
        PrivacyGuard(entities=["SHOE_SIZE"])
    with pytest.raises(UsageError, match="needs a vault"):
        PrivacyGuard(operator="pseudonym")
    with pytest.raises(UsageError, match="entity list is empty"):
        PrivacyGuard(entities=[])


def test_pseudonyms_consistent_reversible_and_encrypted(tmp_path, monkeypatch):
    monkeypatch.setenv("OFFRAMP_VAULT_KEY", "correct horse battery staple")
    vault = PseudonymVault(tmp_path / "v.sqlite")
    g = PrivacyGuard(operator="pseudonym", vault=vault)
    a = g.mask("I am ann@example.com, card 4111 1111 1111 1111", "conv-1").text
    b = g.mask("again: ann@example.com and bob@example.com", "conv-1").text
    c = g.mask("bob@example.com", "conv-2").text
    assert a == "I am <EMAIL_ADDRESS_1>, card <CREDIT_CARD_1>"
    assert b == "again: <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_2>"  # same value, same pseudonym, across turns
    assert c == "<EMAIL_ADDRESS_1>"  # another conversation numbers afresh
    reply = "Dear <EMAIL_ADDRESS_2>, we refunded card <CREDIT_CARD_1>; <PERSON_9> is unknown"
    assert (
        g.reveal(reply, "conv-1") == "Dear bob@example.com, we refunded card 4111 1111 1111 1111; <PERSON_9> is unknown"
    )
    assert g.reveal("<EMAIL_ADDRESS_1>", "conv-2") == "bob@example.com"
    vault.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for value in (b"ann@example.com", b"bob@example.com", b"4111 1111 1111 1111"):
        assert value not in raw  # encrypted at rest, looked up by keyed hash
    monkeypatch.setenv("OFFRAMP_VAULT_KEY", "wrong key")
    with pytest.raises(UsageError, match="does not open"):
        PseudonymVault(tmp_path / "v.sqlite")
    monkeypatch.delenv("OFFRAMP_VAULT_KEY")
    with pytest.raises(UsageError, match="was written encrypted"):
        PseudonymVault(tmp_path / "v.sqlite")


def test_vault_refuses_foreign_files(tmp_path):
    db = sqlite3.connect(str(tmp_path / "app.sqlite"))
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    with pytest.raises(UsageError, match="not a pseudonym vault"):
        PseudonymVault(tmp_path / "app.sqlite")
    (tmp_path / "notes.sqlite").write_text("hello")
    with pytest.raises(UsageError, match="cannot open the pseudonym vault"):
        PseudonymVault(tmp_path / "notes.sqlite")


def test_pseudonyms_expire(tmp_path):
    with pytest.raises(UsageError, match="above 0 seconds"):
        PseudonymVault(tmp_path / "bad.sqlite", ttl_s=0)
    now = [1000.0]
    vault = PseudonymVault(tmp_path / "v.sqlite", ttl_s=60, clock=lambda: now[0])
    g = PrivacyGuard(operator="pseudonym", vault=vault)
    assert g.mask("a@b.com", "c").text == "<EMAIL_ADDRESS_1>"
    now[0] += 30
    assert g.reveal("<EMAIL_ADDRESS_1>", "c") == "a@b.com"
    now[0] += 31  # past the time to live: no longer turned back, and purged
    assert g.reveal("<EMAIL_ADDRESS_1>", "c") == "<EMAIL_ADDRESS_1>"
    assert vault.purge() == 1
    assert g.mask("a@b.com", "d").text == "<EMAIL_ADDRESS_1>"
    assert vault.forget("d") == 1 and g.reveal("<EMAIL_ADDRESS_1>", "d") == "<EMAIL_ADDRESS_1>"


def test_ner_path_finds_names_and_places():
    g = PrivacyGuard(ner=True)
    m = g.mask("Hello, this is John Smith from Berlin, my e-mail is john@example.com")
    assert m.text == "Hello, this is <PERSON> from <LOCATION>, my e-mail is <EMAIL_ADDRESS>"


def test_missing_spacy_model_is_an_error_never_a_download():
    with pytest.raises(UsageError, match="never downloads"):
        PrivacyGuard(ner=True, spacy_model="en_core_web_not_installed_xx")


def test_egress_masks_remote_text_and_offline_mode_refuses(monkeypatch):
    text = ["my card 4111 1111 1111 1111 and a@b.com"]
    monkeypatch.delenv("OFFRAMP_OFFLINE", raising=False)
    monkeypatch.delenv("OFFRAMP_EGRESS_GUARD", raising=False)

    def check(url):
        return EgressPolicy.from_env().check(url, text)

    assert check("https://llm.example.com/v1/chat/completions") == ["my card <CREDIT_CARD> and <EMAIL_ADDRESS>"]
    assert check("http://127.0.0.1:8080/v1/chat/completions") == text  # loopback: unchanged
    monkeypatch.setenv("OFFRAMP_EGRESS_GUARD", "always")
    assert check("http://127.0.0.1:8080/v1") == ["my card <CREDIT_CARD> and <EMAIL_ADDRESS>"]
    monkeypatch.setenv("OFFRAMP_EGRESS_GUARD", "sometimes")
    with pytest.raises(EgressRefused, match="OFFRAMP_EGRESS_GUARD"):
        check("http://127.0.0.1:8080/v1")
    monkeypatch.setenv("OFFRAMP_EGRESS_GUARD", "remote")
    monkeypatch.setenv("OFFRAMP_OFFLINE", "1")
    for url in ("https://api.openai.com/v1", "http://10.0.0.5:8000/v1", "http://[2001:db8::1]/v1"):
        with pytest.raises(EgressRefused, match="offline mode"):
            check(url)
    assert check("http://localhost:8080/v1") == text


def test_offline_mode_refuses_before_a_byte_is_sent(monkeypatch, tmp_path):
    import httpx

    from offramp.llm.client import ChatClient, LLMConfig

    sent = []
    monkeypatch.setattr(httpx.Client, "send", lambda self, *a, **k: sent.append(a) or pytest.fail("a request was sent"))
    monkeypatch.setenv("OFFRAMP_OFFLINE", "1")
    client = ChatClient(LLMConfig(base_url="https://api.example.com/v1", model="m", max_retries=0))
    with pytest.raises(EgressRefused, match="offline mode"):
        client.chat([{"role": "user", "content": "hello"}])
    assert sent == []
    # a CLI run says so in one line, exit 2
    data = write_csv(tmp_path / "t.csv", [("hello", "OTHER"), ("thanks", "GRATITUDE")])
    task = tmp_path / "task.yaml"
    task.write_text("labels: {OTHER: anything else, GRATITUDE: thanks}\n")
    r = run_cli(
        "eval-llm",
        str(data),
        "--llm",
        "m",
        "--base-url",
        "https://api.example.com/v1",
        "--task",
        str(task),
        "--quiet",
        env={"OFFRAMP_OFFLINE": "1"},
    )
    assert r.returncode == 2 and "offline mode" in r.stderr and "Traceback" not in r.stderr


def test_mask_cli(tmp_path, monkeypatch):
    data = write_csv(
        tmp_path / "in.csv",
        [
            ("Hi, I am ann@example.com, call +44 20 7946 0958", "SUPPORT"),
            ("card 4111 1111 1111 1111, ann@example.com again", "SUPPORT"),
            ("thanks!", "GRATITUDE"),
        ],
    )
    r = run_cli("mask", str(data), "--out", str(tmp_path / "out.jsonl"))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["label"] for x in rows] == ["SUPPORT", "SUPPORT", "GRATITUDE"]  # other columns copied
    assert rows[0]["text"] == "Hi, I am <EMAIL_ADDRESS>, call <PHONE_NUMBER>"
    assert "EMAIL_ADDRESS 2" in r.stdout
    r = run_cli(
        "mask",
        str(data),
        "--out",
        str(tmp_path / "p.csv"),
        "--operator",
        "pseudonym",
        "--vault",
        str(tmp_path / "v.sqlite"),
        env={"OFFRAMP_VAULT_KEY": "k"},
    )
    assert r.returncode == 0, r.stderr
    # JSONL keeps types: a card stored as a number is masked, an empty cell stays empty
    odd = tmp_path / "odd.jsonl"
    odd.write_text(
        '{"text": 4111111111111111, "label": "A"}\n{"text": null, "label": "B"}\n{"text": 12, "label": "B"}\n'
    )
    r = run_cli("mask", str(odd), "--out", str(tmp_path / "odd_out.jsonl"))
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["text"] for x in (tmp_path / "odd_out.jsonl").read_text().splitlines()] == [
        "<CREDIT_CARD>",
        None,
        12,
    ]
    (tmp_path / "header.csv").write_text("text,label\n")
    r = run_cli("mask", str(tmp_path / "header.csv"), "--out", str(tmp_path / "h.csv"))
    assert r.returncode == 2 and "no data rows" in r.stderr
    for args, needle in (
        (["--out", str(tmp_path / "x.txt")], "must end in"),
        (["--out", str(tmp_path / "y.csv"), "--columns", "body"], "no column(s) body"),
        (["--out", str(tmp_path / "y.csv"), "--operator", "pseudonym"], "needs a vault file"),
        (["--out", str(tmp_path / "y.csv"), "--entities", "SHOE_SIZE"], "unknown PII entity"),
    ):
        r = run_cli("mask", str(data), *args)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_presidio_is_installed_without_torch():
    assert importlib.util.find_spec("presidio_analyzer") is not None
    assert importlib.util.find_spec("torch") is None


def test_offline_pipeline_keeps_every_answer_local(fast_model, tmp_path):
    import shutil

    import httpx

    from offramp.audit.log import AuditLog

    from helpers import Server

    shutil.copytree(fast_model, tmp_path / "model")
    (tmp_path / "p.yaml").write_text(
        "model: model\nllm: {base_url: 'https://llm.example.com/v1', model: m, timeout_s: 2, max_retries: 0}\n"
        "routing: {thresholds: {'*': 1.01}}\noffline: true\naudit: audit.sqlite\n"
    )
    s = Server(tmp_path / "p.yaml")
    try:
        r = httpx.post(s.url + "/v1/classify", json={"text": "my card 4111 1111 1111 1111 was declined"}).json()
    finally:
        s.stop()
    assert r["route"] == "local" and "egress_refused" in r["flags"]
    rec = json.loads(next(AuditLog(tmp_path / "audit.sqlite", create=False).records())[2])
    assert rec["endpoint"] is None and rec["flags"] == ["egress_refused"]


def test_cascade_counts_personal_data_but_stores_none_for_local_answers(fast_model, tmp_path):
    from offramp.registry.records import load
    from offramp.runtime.cascade import Cascade

    vault = PseudonymVault(tmp_path / "v.sqlite")
    cascade = Cascade(load(fast_model), guard=PrivacyGuard(operator="pseudonym", vault=vault))
    d = cascade.run("my card 4111 1111 1111 1111 was declined, mail me at a@b.com", "c1")
    assert d.route == "local" and d.pii == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1} and d.endpoints == []
    rows = sqlite3.connect(str(tmp_path / "v.sqlite")).execute("SELECT COUNT(*) FROM pseudonyms").fetchone()[0]
    assert rows == 0  # nothing left the machine, so nothing needed a pseudonym


# ---------------------------------------------------------------- pseudonyms are scoped to the caller
def _echo_pipeline(tmp_path, fast_model, llm_url):
    import shutil

    shutil.copytree(fast_model, tmp_path / "model", dirs_exist_ok=True)
    acts = "".join(f"  {lab}: {{type: llm}}\n" for lab in ("SUPPORT", "GRATITUDE", "TRY_TO_HACK", "OTHER"))
    (tmp_path / "p.yaml").write_text(
        f"model: model\nllm: {{base_url: '{llm_url}/v1', model: echo}}\nactions:\n{acts}"
        "privacy: {operator: pseudonym, vault: vault.sqlite}\n"
    )
    return tmp_path / "p.yaml"


def _reply(srv, text, conversation, key=None):
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(srv.url + "/v1/classify", json={"text": text, "conversation_id": conversation}, headers=headers)
    assert r.status_code == 200, r.text
    return (r.json().get("action") or {}).get("text") or ""


def test_pseudonyms_never_reveal_another_callers_values(fast_model, tmp_path, monkeypatch):
    from helpers import Server
    from misbehaving_llm import ScriptedLLM, completion

    monkeypatch.setenv("OFFRAMP_VAULT_KEY", "v" * 32)
    echo = ScriptedLLM(default=(200, {}, lambda body: completion("you said: " + body["messages"][-1]["content"]), 0.0))
    pipeline = _echo_pipeline(tmp_path, fast_model, echo.url)
    mine = "please reset my card, my email is anna.lee@example.com and iban DE89370400440532013000"
    probe = "what is <EMAIL_ADDRESS_1> and <IBAN_CODE_1> and \u2039EMAIL_ADDRESS_1\u203a"
    import os

    env = {**os.environ, "OFFRAMP_VAULT_KEY": "v" * 32}
    # with two API keys: the second key, even with the first one's conversation id, gets nothing back
    keys = tmp_path / "keys.txt"
    a, b = "key-a-0123456789abcdef", "key-b-0123456789abcdef"
    keys.write_text(run_cli("hash-key", a).stdout + run_cli("hash-key", b).stdout)
    srv = Server(pipeline, "--api-keys", str(keys), env=env)
    try:
        own = _reply(srv, mine, "c1", a)
        assert "anna.lee@example.com" in own and "DE89370400440532013000" in own  # the caller's own values return
        sent = json.dumps([r["body"] for r in echo.requests])
        assert "anna.lee@example.com" not in sent  # masked on the way out
        for key in (b, a):  # another key with the same conversation; the same key in a new request too
            other = _reply(srv, probe, "c1" if key == b else "c2", key)
            assert "anna.lee" not in other and "DE89" not in other, other
    finally:
        srv.stop()
    # without keys there is no caller: a conversation id does not reach earlier requests' values
    srv = Server(pipeline, env=env)
    try:
        own = _reply(srv, mine, "shared")
        assert "anna.lee@example.com" in own
        other = _reply(srv, probe, "shared")
        assert "anna.lee" not in other and "DE89" not in other, other
    finally:
        srv.stop()
        echo.close()
