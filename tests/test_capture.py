"""The capture pool, feedback, pool export, the shadow report and local_first shadow mode."""

import csv
import json
import sqlite3
import time

import httpx
import numpy as np
import pytest

from offramp.capture.live import Capture, UnknownLabel, UnknownRequest
from offramp.capture.pool import Pool, parse_since, read_rows, training_rows
from offramp.errors import DataError, UsageError
from offramp.monitoring.shadow import best_threshold, shadow_report, wilson
from offramp.privacy.guard import PrivacyGuard
from offramp.registry.gate import compare

from helpers import Server, metric, run_cli, until
from misbehaving_llm import GoldLLM


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_feedback_is_taken_for_ttl_seconds_and_stored_masked(tmp_path):
    guard, clock = PrivacyGuard(), Clock()
    pool = Pool(tmp_path / "pool.sqlite", guard)
    cap = Capture(pool, guard, ["SUPPORT", "OTHER"], ttl_s=60, clock=clock)
    cap.after("r1", "my mail is ann.lee@example.com, card stuck", "local", "SUPPORT", "SUPPORT", 0.9, "v0001")
    cap.after("r2", "call +1 415 555 0100 about nothing", "llm", "OTHER", "SUPPORT", 0.4, "v0001")
    cap.feedback("r1", "OTHER")
    with pytest.raises(UnknownLabel):
        cap.feedback("r1", "NOPE")
    clock.now = 61
    with pytest.raises(UnknownRequest):
        cap.feedback("r2", "OTHER")  # forgotten after ttl_s
    with pytest.raises(UnknownRequest):
        cap.feedback("never", "OTHER")
    pool.flush()
    rows = read_rows(tmp_path / "pool.sqlite")
    assert [(r["source"], r["label"], r["local_label"], r["request_id"]) for r in rows] == [
        ("llm", "OTHER", "SUPPORT", "r2"),
        ("feedback", "OTHER", "SUPPORT", "r1"),
    ]
    raw = (tmp_path / "pool.sqlite").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("pool.sqlite-")
    )
    assert b"ann.lee@example.com" not in raw and b"555 0100" not in raw
    assert "<EMAIL_ADDRESS>" in rows[1]["text"] and "<PHONE_NUMBER>" in rows[0]["text"]
    pool.close()


def test_new_labels_in_feedback_only_when_allowed(tmp_path):
    guard = PrivacyGuard()
    cap = Capture(Pool(tmp_path / "p.sqlite", guard), guard, ["A"], allow_new_labels=True)
    cap.after("r", "hello", "local", "A", "A", 0.9, None)
    cap.feedback("r", "BRAND_NEW")
    cap.pool.flush()
    assert read_rows(tmp_path / "p.sqlite")[0]["label"] == "BRAND_NEW"


def test_a_correction_beats_the_llm_answer_in_the_export():
    rows = [
        {"id": 1, "time": 0.0, "source": "llm", "text": "a", "label": "X", "request_id": "r1"},
        {"id": 2, "time": 1.0, "source": "shadow", "text": "b", "label": "Y", "request_id": "r2"},
        {"id": 3, "time": 2.0, "source": "feedback", "text": "a", "label": "Z", "request_id": "r1"},
        {"id": 4, "time": 3.0, "source": "llm", "text": "a", "label": "X2", "request_id": "r1"},
    ]
    out = training_rows(rows)
    assert [(r["text"], r["label"], r["source"]) for r in out] == [("b", "Y", "shadow"), ("a", "Z", "feedback")]
    assert out[0]["time"] == "1970-01-01T00:00:01+00:00"


def test_since_takes_dates_and_ages():
    assert parse_since("24h", now=100_000.0) == 100_000.0 - 86_400
    assert parse_since("2026-11-01") == parse_since("2026-11-01T00:00:00+00:00")
    with pytest.raises(UsageError, match="--since must be"):
        parse_since("yesterday")


def test_pool_export_and_report_errors_are_one_line(tmp_path):
    Pool(tmp_path / "empty.sqlite", PrivacyGuard()).close()
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)").connection.commit()
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    cases = [
        (("pool", "export", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "o.csv")), "has no rows from"),
        (("pool", "export", str(tmp_path / "missing.sqlite"), "--out", str(tmp_path / "o.csv")), "does not exist"),
        (
            ("pool", "export", str(tmp_path / "other.sqlite"), "--out", str(tmp_path / "o.csv")),
            "not an offramp capture pool",
        ),
        (
            ("pool", "export", str(tmp_path / "junk.sqlite"), "--out", str(tmp_path / "o.csv")),
            "not an offramp capture pool",
        ),
        (("pool", "export", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "o.txt")), "must end in"),
        (
            ("pool", "export", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "o.csv"), "--from", "llm,bogus"),
            "unknown pool source",
        ),
        (
            ("pool", "export", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "o.csv"), "--since", "soon"),
            "--since must be",
        ),
        (("shadow", "report", str(tmp_path / "empty.sqlite")), "has no shadow rows"),
        (("drift", str(tmp_path / "empty.sqlite"), "--model", str(tmp_path / "nomodel")), "does not exist"),
    ]
    for args, message in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    with pytest.raises(DataError):
        read_rows(tmp_path / "other.sqlite")


def test_wilson_interval_and_threshold():
    lo, hi = wilson(8, 10)
    assert round(lo, 3) == 0.490 and round(hi, 3) == 0.943  # the textbook figures for 8 of 10
    assert wilson(0, 0) == (0.0, 1.0)
    conf = np.array([0.99, 0.98, 0.97, 0.6, 0.5, 0.4])
    agree = np.array([True, True, True, False, True, False])
    best = best_threshold(conf, agree, 0.95)
    assert best == {"threshold": 0.97, "local_share": 0.5, "agreement": 1.0}
    assert best_threshold(conf, agree, 0.7)["threshold"] == 0.5  # 4 of 5 agree down to 0.5


def test_shadow_verdicts():
    def rows(label, n, agree, conf=0.99):
        other = "B" if label == "A" else "A"
        return [{"local_label": label, "label": label if i < agree else other, "confidence": conf} for i in range(n)]

    good = shadow_report(rows("A", 200, 199) + rows("B", 100, 99))
    assert good.ready and good.verdict.startswith("switch now: 100.0% local at >= 0.95 agreement")
    # B's answers are often wrong even at the top confidence: no threshold can save B
    bad = shadow_report(rows("A", 300, 300) + rows("B", 42, 34))
    assert not bad.ready and bad.verdict.startswith("not yet: B agreement 0.81 [")
    assert bad.verdict.endswith("on 42 messages")
    few = shadow_report(rows("A", 10, 10))
    assert few.verdict.startswith("not yet: only 10 messages compared")
    new = shadow_report(rows("A", 100, 100) + [{"local_label": "A", "label": "NEW", "confidence": 0.5}] * 20)
    assert new.verdict.startswith("not yet: the LLM answered NEW") and new.llm_only_labels == {"NEW": 20}


def test_gate_compare():
    y = ["A"] * 50 + ["B"] * 50
    same = compare(y, y, y)
    assert same["passed"] and same["macro_f1"]["ci95"] == [0.0, 0.0]
    assert same["per_class"]["A"]["ci95"] == [0.0, 0.0]
    worse = ["A"] * 50 + ["A"] * 20 + ["B"] * 30
    r = compare(y, y, worse, max_class_drop=0.02)
    assert not r["passed"] and any(x.startswith("macro-F1 is lower") for x in r["reasons"])
    assert any(x.startswith("B F1 drops by") for x in r["reasons"])
    lo, hi = r["macro_f1"]["ci95"]
    assert lo <= r["macro_f1"]["candidate"] - r["macro_f1"]["current"] <= hi < 0
    # a new label: the current model scores 0 on it; that is reported as new, not a drop
    y3 = y + ["C"] * 10
    old = y + ["A"] * 10
    r = compare(y3, old, y3, new_labels=["C"])
    c = r["per_class"]["C"]
    assert r["passed"] and (c["current"], c["candidate"], c["support"], c["new"]) == (0.0, 1.0, 10, True)


def test_local_first_shadow_is_off_the_request_path(fast_model, inbox_sample, tmp_path):
    with open(inbox_sample[1], newline="", encoding="utf-8") as f:
        test = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    slow = GoldLLM(dict(test))
    slow.default = (slow.default[0], slow.default[1], slow.default[2], 0.3)  # 0.3 s an answer
    (tmp_path / "p.yaml").write_text(
        f"model: {fast_model}\n"
        f"llm: {{base_url: '{slow.url}/v1', model: gold, timeout_s: 5}}\n"
        "shadow: {mode: local_first, sample: 1.0, queue: 3}\n"
        "capture: {pool: pool.sqlite, from: [shadow]}\n"
    )
    srv = Server(tmp_path / "p.yaml")
    try:
        t0 = time.monotonic()
        answers = [httpx.post(srv.url + "/v1/classify", json={"text": t}).json() for t, _ in test[:40]]
        took = time.monotonic() - t0
        assert all(a["route"] == "local" for a in answers)
        # 40 answers came back while the LLM (0.3 s each) could have answered at most a few of them
        assert len(slow.requests) < 40 and took < 40 * 0.3

        def shadow_counts():
            metrics = httpx.get(srv.url + "/metrics").text
            dropped = metric(metrics, "offramp_shadow_dropped_total") or 0
            compared = sum(
                metric(metrics, "offramp_shadow_compared_total", label=lab) or 0
                for lab in ("SUPPORT", "GRATITUDE", "TRY_TO_HACK", "OTHER")
            )
            return dropped, compared

        # the shadow worker finishes what it queued: every message is compared or dropped
        until(lambda: sum(shadow_counts()) >= 40 and len(slow.requests) >= shadow_counts()[1])
        dropped, compared = shadow_counts()
        assert dropped and dropped > 0 and compared > 0 and compared + dropped <= 40
        assert compared == len(slow.requests)
    finally:
        srv.stop()
        slow.close()
    rep = json.loads(run_cli("shadow", "report", str(tmp_path / "pool.sqlite"), "--json").stdout)
    assert rep["compared"] == compared


def test_sampling_sends_a_share(fast_model, inbox_sample, tmp_path):
    with open(inbox_sample[1], newline="", encoding="utf-8") as f:
        test = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    llm = GoldLLM(dict(test))
    (tmp_path / "p.yaml").write_text(
        f"model: {fast_model}\nllm: {{base_url: '{llm.url}/v1', model: gold}}\nshadow: {{mode: local_first, sample: 0.25}}\n"
    )
    srv = Server(tmp_path / "p.yaml")
    try:
        texts = [t for t, _ in test[:160]]
        httpx.post(srv.url + "/v1/classify", json={"texts": texts}, timeout=30)
        seen = []

        def settled():  # every request the LLM saw is compared, and no new one came in the last poll
            text = httpx.get(srv.url + "/metrics").text
            labels = ("SUPPORT", "GRATITUDE", "TRY_TO_HACK", "OTHER")
            seen.append(
                (
                    sum(metric(text, "offramp_shadow_compared_total", label=lab) or 0 for lab in labels),
                    len(llm.requests),
                )
            )
            return len(seen) > 1 and seen[-1] == seen[-2] and seen[-1][0] == seen[-1][1] > 0

        until(settled, every=0.2)
        assert 15 <= len(llm.requests) <= 70  # about a quarter of 160
    finally:
        srv.stop()
        llm.close()
