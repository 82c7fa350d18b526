"""Drift: a new intent the model never saw moves the PSI and the fallback rate, live and offline."""

import json
import time

import httpx
import numpy as np

from offramp.demo.data import demo_paths
from offramp.monitoring.drift import DriftMonitor, DriftReference, psi

from helpers import Server, metric, read_pairs, run_cli, write_csv


def test_psi_basics():
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    assert psi([50, 50], [90, 10]) > 0.2  # a big shift
    assert psi([50, 50], [52, 48]) < 0.01


class _Model:
    classes_ = np.array(["A", "B"])
    reject_threshold_ = None

    def __init__(self, conf, pred):
        self.training_record_ = {"arrays": {"oof_confidence": conf, "oof_label": pred}}


def test_the_monitor_waits_for_enough_messages_then_refreshes():
    rng = np.random.default_rng(0)
    ref = DriftReference.of(_Model(rng.uniform(0.8, 1.0, 1000), rng.integers(0, 2, 1000)), {"*": 0.85})
    assert ref is not None and abs(ref.fallback_rate - 0.25) < 0.05
    seen = []
    mon = DriftMonitor(ref, window=1000, min_count=200, every=100, on_refresh=seen.append, clock=lambda: 0.0)
    for c in rng.uniform(0.8, 1.0, 199):
        mon.observe(float(c), "A" if c > 0.9 else "B", False, c < 0.85)
    assert mon.values is None and not seen  # under 200 messages: nothing yet
    mon.observe(0.95, "A", False, False)
    assert seen and seen[-1]["confidence"] < 0.1
    for _ in range(300):  # an unseen intent: low confidences, most sent to the LLM
        mon.observe(float(rng.uniform(0.3, 0.6)), "B", False, True)
    assert seen[-1]["confidence"] > 0.2 and seen[-1]["fallback"] > 0.3
    assert DriftReference.of(object()) is None  # a model without a reference: no drift signals


def test_a_new_intent_shows_up_as_drift(tmp_path):
    train, test, _ = demo_paths()
    rows = read_pairs(train)
    known = [r for r in rows if r[1] != "OTHER"]
    unseen = [t for t, lab in rows if lab == "OTHER"][:600]
    in_domain = [t for t, lab in read_pairs(test) if lab != "OTHER"][:300]
    model = tmp_path / "model"
    r = run_cli(
        "train",
        str(write_csv(tmp_path / "t.csv", known)),
        "--out",
        str(model),
        "--quality",
        "fast",
        "--time-limit",
        "none",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    (tmp_path / "p.yaml").write_text(f"model: {model}\nrouting: {{thresholds: {{'*': 0.9}}}}\naudit: audit.sqlite\n")
    srv = Server(tmp_path / "p.yaml")
    try:
        httpx.post(srv.url + "/v1/classify", json={"texts": in_domain[:150]})
        httpx.post(srv.url + "/v1/classify", json={"texts": in_domain[150:]})
        m = httpx.get(srv.url + "/metrics").text
        calm = metric(m, "offramp_drift_psi", signal="confidence")
        calm_fallback = metric(m, "offramp_drift_rate_change", signal="fallback")
        assert calm is not None and calm < 0.2, m
        for i in range(0, 600, 200):
            httpx.post(srv.url + "/v1/classify", json={"texts": unseen[i : i + 200]})
        t0 = time.monotonic()  # the comparison runs on the monitor's own thread: give it a moment
        while True:
            m = httpx.get(srv.url + "/metrics").text
            moved = metric(m, "offramp_drift_psi", signal="confidence")
            if moved > 0.2 or time.monotonic() - t0 > 5:
                break
            time.sleep(0.1)
        moved_fallback = metric(m, "offramp_drift_rate_change", signal="fallback")
        assert moved > 0.2 and moved > calm + 0.1
        assert moved_fallback > calm_fallback + 0.1
        assert metric(m, "offramp_drift_psi", signal="label_mix") is not None
    finally:
        _, log = srv.stop()
    assert "drift: confidence PSI" in log  # a warning in the service log above 0.2
    r = run_cli("drift", str(tmp_path / "audit.sqlite"), "--model", str(model), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["kind"] == "audit log" and rep["messages"] == 900
    assert rep["psi"]["confidence"] > 0.2 and "confidence" in rep["drifted"]
    human = run_cli("drift", str(tmp_path / "audit.sqlite"), "--model", str(model), "--window", "300")
    assert human.returncode == 0 and "drift in confidence" in human.stdout
