"""The audit log: every kind of tampering is caught, acknowledged records survive SIGKILL, and
seeded personal data sent through every path is found in no file, log or table written."""

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from offramp.audit.log import AuditLog, AuditWriter
from offramp.errors import UsageError

from helpers import run_cli, write_csv


def _log(path: Path, n: int = 10) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append(
            log.record(
                request_id=f"r{i}",
                decision="SUPPORT" if i % 2 else "OTHER",
                confidence=0.9,
                route="local",
                text_hmac=log.text_hmac(f"message {i}"),
                pii={},
            )
        )
    return log


def _sql(path: Path, *statements):
    db = sqlite3.connect(str(path))
    for st in statements:
        db.execute(*st) if isinstance(st, tuple) else db.execute(st)
    db.commit()
    db.close()


def _swap(path, a, b):
    db = sqlite3.connect(str(path))
    ra = db.execute("SELECT prev, body, mac FROM records WHERE seq=?", (a,)).fetchone()
    rb = db.execute("SELECT prev, body, mac FROM records WHERE seq=?", (b,)).fetchone()
    db.execute("UPDATE records SET prev=?, body=?, mac=? WHERE seq=?", (*rb, a))
    db.execute("UPDATE records SET prev=?, body=?, mac=? WHERE seq=?", (*ra, b))
    db.commit()


def _insert_copy(path, after):
    """Insert a copy of record ``after`` behind it, renumbering the rest (a plausible forgery)."""
    db = sqlite3.connect(str(path))
    rows = db.execute("SELECT seq, prev, body, mac FROM records ORDER BY seq").fetchall()
    db.execute("DELETE FROM records")
    out = []
    for seq, prev, body, mac in rows:
        out.append((prev, body, mac))
        if seq == after:
            out.append((prev, body.replace("OTHER", "SUPPORT"), mac))
    for i, r in enumerate(out, 1):
        db.execute("INSERT INTO records VALUES (?, ?, ?, ?)", (i, *r))
    db.commit()


TAMPERING = {
    "edited": (
        lambda p: _sql(p, 'UPDATE records SET body=replace(body, \'"route":"local"\', \'"route":"llm"\') WHERE seq=4'),
        4,
    ),
    "deleted": (lambda p: _sql(p, "DELETE FROM records WHERE seq=6"), 7),
    "reordered": (lambda p: _swap(p, 3, 5), 3),
    "inserted": (lambda p: _insert_copy(p, 2), 3),
    "cut from the end": (lambda p: _sql(p, "DELETE FROM records WHERE seq=10"), None),
    "head edited": (lambda p: _sql(p, "UPDATE head SET seq=9"), None),
    "renumbered after a deletion": (
        lambda p: _sql(p, "DELETE FROM records WHERE seq=5", "UPDATE records SET seq=seq-1 WHERE seq>5"),
        5,
    ),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_every_kind_of_tampering_is_caught(tmp_path, kind):
    path = tmp_path / "audit.sqlite"
    _log(path).close()
    assert AuditLog(path).verify().ok
    tamper, first_bad = TAMPERING[kind]
    tamper(path)
    v = AuditLog(path).verify()
    assert not v.ok
    assert v.first_bad == first_bad, v.message
    r = run_cli("audit", "verify", str(path))
    assert r.returncode == 3 and "TAMPERED" in r.stderr and "Traceback" not in r.stderr


def test_wrong_key_and_missing_key(tmp_path, monkeypatch):
    path = tmp_path / "audit.sqlite"
    monkeypatch.setenv("OFFRAMP_AUDIT_KEY", "right")
    _log(path, 3).close()
    assert not (tmp_path / "audit.sqlite.key").exists()  # the key stays in the environment
    monkeypatch.setenv("OFFRAMP_AUDIT_KEY", "wrong")
    v = AuditLog(path).verify()
    assert not v.ok and v.first_bad == 1 and "key" in v.message
    monkeypatch.delenv("OFFRAMP_AUDIT_KEY")
    with pytest.raises(UsageError, match="no key"):
        AuditLog(path, create=False)


def test_verify_and_export_cli(tmp_path):
    path = tmp_path / "audit.sqlite"
    log = _log(path, 4)
    log.append(
        log.record(
            request_id="x",
            decision="SUPPORT",
            confidence=0.4,
            route="llm",
            endpoint="api.example.com",
            pii={"EMAIL_ADDRESS": 2},
        )
    )
    log.close()
    assert oct((tmp_path / "audit.sqlite.key").stat().st_mode & 0o777) == "0o600"
    r = run_cli("audit", "verify", str(path))
    assert r.returncode == 0 and "OK: 5 records, chain intact" in r.stdout
    r = run_cli("audit", "export", str(path), "--out", str(tmp_path / "a.jsonl"))
    assert r.returncode == 0, r.stderr
    assert "5 requests, 1 left the machine (api.example.com 1)" in r.stdout and "2 personal-data values" in r.stdout
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in rows] == [1, 2, 3, 4, 5] and rows[-1]["route"] == "llm"
    r = run_cli("audit", "export", str(path), "--out", str(tmp_path / "a.csv"))
    assert r.returncode == 0 and (tmp_path / "a.csv").read_text().count("\n") == 6
    for args, needle in (
        (["verify", str(tmp_path / "none.sqlite")], "no audit log"),
        (["export", str(path), "--out", str(tmp_path / "a.txt")], "must end in"),
    ):
        r = run_cli("audit", *args)
        assert r.returncode == 2 and needle in r.stderr


def test_group_commit_writer(tmp_path):
    log = AuditLog(tmp_path / "audit.sqlite")
    w = AuditWriter(log)
    import threading

    seqs, lock = [], threading.Lock()

    def work():
        for _ in range(50):
            s = w.write(log.record(request_id="t"))
            with lock:
                seqs.append(s)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert sorted(seqs) == list(range(1, 201))
    assert log.verify().ok and log.verify().records == 200


WRITER = r"""
import sys
from offramp.audit.log import AuditLog
log = AuditLog(sys.argv[1])
i = 0
while True:
    seq = log.append(log.record(request_id=f"r{i}", decision="OTHER", route="local"))
    print(seq, flush=True)  # acknowledged: committed before this line is printed
    i += 1
"""


def test_sigkill_loses_no_acknowledged_record(tmp_path):
    path = tmp_path / "audit.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    acked = []
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) >= 300:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acked += [int(x) for x in proc.stdout.read().split()]
    log = AuditLog(path)
    v = log.verify()
    assert v.ok, v.message
    assert v.records >= max(acked) and set(acked) <= {s for s, *_ in log.records()}


# --------------------------------------------------------------------------- seeded personal data
SEEDS = {
    "email": "zelda.quarterman@example.org",
    "phone": "+44 20 7946 0321",
    "card": "4539 1488 0343 6467",
    "iban": "GB33 BUKB 2020 1555 5555 55",
    "ip": "198.51.100.77",
    "ssn": "536-90-4399",
}


def _seeded_messages():
    s = SEEDS
    return [
        f"my card {s['card']} was charged twice, please refund",
        f"Hi, I'm writing from {s['email']} about my transfer",
        f"call me back on {s['phone']} about the top-up",
        f"send the refund to IBAN {s['iban']}",
        f"my login from {s['ip']} was blocked, ssn {s['ssn']}",
        f"thanks! reach me at {s['email']} or {s['phone']}",
        f"tell me a joke, my email is {s['email']}",
    ]


def _scan(root: Path) -> list[str]:
    hits = []
    needles = {k: v.encode() for k, v in SEEDS.items()}
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{k} in {p.name}" for k, v in needles.items() if v in data]
    return hits


def test_seeded_pii_reaches_no_store_and_no_llm(fast_model, tmp_path, monkeypatch):
    from helpers import Server
    from misbehaving_llm import ScriptedLLM, completion

    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(fast_model, store / "model")
    docs = store / "docs"
    docs.mkdir()
    (docs / "cards.md").write_text("# Cards\nA declined card is usually a blocked card.\n")

    def answer(body):
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        if "Answer with exactly one" not in system:  # the llm action: a reply naming the customer's pseudonym
            return completion("Dear <EMAIL_ADDRESS_1>, glad to help.")
        return completion("GRATITUDE" if "thanks" in user else "OTHER" if "joke" in user else "SUPPORT")

    llm = ScriptedLLM(default=(200, {}, answer, 0))
    hook = ScriptedLLM(default=(200, {}, {"ok": True}, 0))  # a webhook: also off the machine
    (store / "pipeline.yaml").write_text(
        "model: model\n"
        f"llm: {{base_url: '{llm.url}/v1', model: m, timeout_s: 5, max_retries: 0}}\n"
        "routing: {thresholds: {'*': 1.01}}\n"  # every message also goes to the LLM fallback
        "actions:\n"
        "  SUPPORT: {type: answer_from_docs, docs: docs, method: tfidf}\n"
        "  GRATITUDE: {type: llm, system: 'Reply to the customer.'}\n"
        f"  OTHER: {{type: forward, url: '{hook.url}/hook'}}\n"
        f"  TRY_TO_HACK: {{type: llm}}\n"
        "privacy: {operator: pseudonym, vault: pseudonyms.sqlite}\n"
        "audit: audit.sqlite\n"
    )
    env = {
        "OFFRAMP_VAULT_KEY": "vault-key",
        "OFFRAMP_AUDIT_KEY": "audit-key",
        "OFFRAMP_EGRESS_GUARD": "always",
        "OFFRAMP_CACHE_DIR": str(store / "cache"),
        "HOME": str(store),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Server(store / "pipeline.yaml")
    try:
        answers = []
        for _i, text in enumerate(_seeded_messages()):
            r = httpx.post(s.url + "/v1/classify", json={"text": text, "conversation_id": "conv-7"}, timeout=30)
            assert r.status_code == 200, r.text
            answers.append(r.json())
        r = httpx.post(
            s.url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": _seeded_messages()[0]}], "user": "conv-8"},
            timeout=30,
        )
        assert r.status_code == 200
        m = httpx.get(s.url + "/metrics").text
    finally:
        out, err = s.stop()
        llm.close()
        hook.close()
    assert all(a["route"] == "llm" for a in answers)
    assert [a["label"] for a in answers] == ["SUPPORT"] * 5 + ["GRATITUDE", "OTHER"]
    assert answers[-1]["action"]["delivered"] and hook.requests
    # every request to the LLM and the webhook carried pseudonyms, never a seeded value
    sent = json.dumps([x["body"] for x in llm.requests + hook.requests])
    assert len(llm.requests) >= 8 and "<EMAIL_ADDRESS_1>" in sent
    assert not [k for k, v in SEEDS.items() if v in sent]
    # the LLM's reply reached the user with the pseudonym turned back (an llm action ran)
    replies = [a["action"]["text"] for a in answers if (a["action"] or {}).get("type") == "llm"]
    assert replies and all(SEEDS["email"] in t for t in replies)
    assert 'offramp_pii_found_total{entity="EMAIL_ADDRESS"}' in m
    # no file the service wrote (audit log, vault, caches, logs) holds a seeded value
    (store / "server.log").write_text(out + err)
    assert _scan(store) == []
    log = AuditLog(store / "audit.sqlite", create=False)
    v = log.verify()
    assert v.ok and v.records == 8
    recs = [json.loads(b) for _, _, b, _ in log.records()]
    assert all(r["endpoint"] and r["text_hmac"] and r["model_version"] for r in recs)
    assert sum(r["pii"].get("EMAIL_ADDRESS", 0) for r in recs) == 3
    assert recs[0]["pii"] == {"CREDIT_CARD": 1}
    r = run_cli("audit", "export", str(store / "audit.sqlite"), "--out", str(tmp_path / "export.jsonl"))
    assert r.returncode == 0 and "8 requests, 8 left the machine" in r.stdout
    exported = (tmp_path / "export.jsonl").read_text()
    assert not [k for k, v in SEEDS.items() if v in exported]


def test_seeded_pii_masked_dataset_and_teacher(tmp_path, monkeypatch):
    from misbehaving_llm import ScriptedLLM, completion

    rows = [(t, "SUPPORT") for t in _seeded_messages()]
    data = write_csv(tmp_path / "in.csv", rows)
    r = run_cli("mask", str(data), "--out", str(tmp_path / "masked.csv"))
    assert r.returncode == 0, r.stderr
    assert not [k for k, v in SEEDS.items() if v in (tmp_path / "masked.csv").read_text()]
    # the LLM teacher: what reaches the endpoint and the answer cache is masked
    llm = ScriptedLLM(default=(200, {}, completion('{"label": "SUPPORT"}'), 0))
    task = tmp_path / "task.yaml"
    task.write_text("labels: {SUPPORT: a question, OTHER: anything else}\n")
    try:
        r = run_cli(
            "label",
            str(tmp_path / "masked.csv"),
            "--llm",
            "m",
            "--base-url",
            llm.url + "/v1",
            "--task",
            str(task),
            "--out",
            str(tmp_path / "labelled.csv"),
            "--cache",
            str(tmp_path / "cache.sqlite"),
            "--quiet",
            env={"OFFRAMP_EGRESS_GUARD": "always"},
        )
        assert r.returncode == 0, r.stderr
        r = run_cli(
            "label",
            str(data),
            "--llm",
            "m",
            "--base-url",
            llm.url + "/v1",
            "--task",
            str(task),
            "--out",
            str(tmp_path / "raw-labelled.csv"),
            "--cache",
            str(tmp_path / "cache2.sqlite"),
            "--quiet",
            env={"OFFRAMP_EGRESS_GUARD": "always"},
        )
        assert r.returncode == 0, r.stderr
    finally:
        llm.close()
    sent = json.dumps([x["body"] for x in llm.requests])
    assert len(llm.requests) >= 7 and not [k for k, v in SEEDS.items() if v in sent]
    for f in ("cache.sqlite", "cache2.sqlite", "labelled.csv"):
        assert not [k for k, v in SEEDS.items() if v.encode() in (tmp_path / f).read_bytes()]


def test_foreign_files_are_refused_and_left_alone(tmp_path, monkeypatch):
    from offramp.errors import DataError

    monkeypatch.setenv("OFFRAMP_AUDIT_KEY", "k")
    other = tmp_path / "app.sqlite"
    db = sqlite3.connect(str(other))
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    for create in (True, False):  # neither serving nor verifying writes into somebody else's database
        with pytest.raises(DataError, match="not an offramp audit log"):
            AuditLog(other, create=create)
    assert other.read_bytes() == before
    (tmp_path / "text.sqlite").write_text("hello")
    r = run_cli("audit", "verify", str(tmp_path / "text.sqlite"), env={"OFFRAMP_AUDIT_KEY": "k"})
    assert r.returncode == 2 and "not a usable audit log" in r.stderr


def test_a_failing_audit_log_gives_a_clear_503(fast_model, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from offramp import Settings
    from offramp.serving.app import create_app

    monkeypatch.setenv("OFFRAMP_AUDIT_KEY", "k")
    app = create_app(Settings.resolve(fast_model, {"audit": tmp_path / "audit.sqlite"}, env={}))
    client = TestClient(app)
    assert client.post("/v1/classify", json={"text": "thanks! write to a@b.com"}).status_code == 200
    # serving a model directory, the default guard still counts personal data for the record
    rec = json.loads(next(AuditLog(tmp_path / "audit.sqlite").records())[2])
    assert rec["pii"] == {"EMAIL_ADDRESS": 1} and rec["endpoint"] is None

    def disk_full(self, bodies):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(AuditLog, "append_many", disk_full)
    r = client.post("/v1/classify", json={"text": "thanks!"})
    assert r.status_code == 503 and r.json()["error"]["type"] == "audit_unavailable"
    assert "offramp_audit_failures_total 1" in client.get("/metrics").text


# ---------------------------------------------------------------- a changed key, a wiped log, many creators
def _filled(tmp_path, n=5):
    from offramp.audit.log import AuditLog

    path = tmp_path / "audit.sqlite"
    log = AuditLog(path)
    for i in range(n):
        log.append(log.record(request_id=f"r{i}", decision="SUPPORT", route="local"))
    log.close()
    return path


def test_an_emptied_log_fails_verification(tmp_path):
    import sqlite3

    from offramp.audit.log import AuditLog

    path = _filled(tmp_path)
    con = sqlite3.connect(path)
    con.execute("DELETE FROM records")
    con.execute("DELETE FROM head")
    con.commit()
    con.close()
    verdict = AuditLog(path, create=False).verify()
    assert not verdict.ok and "held 5" in verdict.message
    r = run_cli("audit", "verify", str(path))
    assert r.returncode == 3 and "emptied or cut" in r.stderr


def test_serve_refuses_a_log_it_cannot_continue(fast_model, tmp_path):
    import os

    path = _filled(tmp_path)
    # the key file is gone: a new key would make every record look forged
    key = (tmp_path / "audit.sqlite.key").read_text()
    (tmp_path / "audit.sqlite.key").unlink()
    r = run_cli("serve", str(fast_model), "--audit", str(path), "--port", "1")
    assert r.returncode == 2 and "has records but its key file" in r.stderr
    assert not (tmp_path / "audit.sqlite.key").exists()  # no new key was made
    # another key in the environment
    (tmp_path / "audit.sqlite.key").write_text(key)
    env = {**os.environ, "OFFRAMP_AUDIT_KEY": "some-other-key-entirely"}
    r = run_cli("serve", str(fast_model), "--audit", str(path), "--port", "1", env=env)
    assert r.returncode == 2 and "written with another key" in r.stderr
    # an emptied log
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("DELETE FROM records")
    con.execute("DELETE FROM head")
    con.commit()
    con.close()
    r = run_cli("serve", str(fast_model), "--audit", str(path), "--port", "1")
    assert r.returncode == 2 and "emptied or cut" in r.stderr


def _create_and_append(path, i):
    from offramp.audit.log import AuditLog

    log = AuditLog(path)
    log.append(log.record(request_id=f"p{i}", decision="SUPPORT", route="local"))
    log.close()


def test_concurrent_first_creation(tmp_path):
    import multiprocessing

    from offramp.audit.log import AuditLog

    path = tmp_path / "new.sqlite"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_create_and_append, args=(path, i)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    verdict = AuditLog(path, create=False).verify()
    assert verdict.ok and verdict.records == 6
