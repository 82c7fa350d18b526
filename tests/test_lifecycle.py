"""The registry of versions and retraining behind the gate, through the real CLI and the library."""

import json
import multiprocessing
from pathlib import Path

import pytest

from offramp.demo.data import demo_paths
from offramp.registry.versions import Registry

from helpers import read_pairs, run_cli, write_csv


@pytest.fixture(scope="module")
def three_labels(inbox_sample, tmp_path_factory):
    """The inbox sample without OTHER (to train on), and OTHER examples (a new intent to add later)."""
    d = tmp_path_factory.mktemp("lifecycle")
    rows = read_pairs(inbox_sample[0])
    base = [r for r in rows if r[1] != "OTHER"]
    other = [r for r in rows if r[1] == "OTHER"]
    test = read_pairs(inbox_sample[1])
    return {
        "base": write_csv(d / "base.csv", base),
        "other": write_csv(d / "other.csv", other),
        "gate_with_other": write_csv(d / "gate.csv", test),
        "dir": d,
    }


def _train(data, reg, *extra):
    r = run_cli("train", str(data), "--registry", str(reg), "--quality", "fast", "--time-limit", "none", "-q", *extra)
    assert r.returncode == 0, r.stderr
    return r


def test_registry_versions_promote_and_rollback(three_labels, tmp_path):
    reg = tmp_path / "reg"
    r = _train(three_labels["base"], reg, "--json")
    first = json.loads(r.stdout)
    assert first["version"] == "v0001" and first["current"] == "v0001"
    assert "held out as the gate set" in r.stderr
    _train(three_labels["base"], reg)  # a second version is not promoted unless asked
    listed = json.loads(run_cli("registry", "list", str(reg), "--json").stdout)
    assert listed["current"] == "v0001"
    assert [v["version"] for v in listed["versions"]] == ["v0001", "v0002"]
    assert [v["current"] for v in listed["versions"]] == [True, False]
    v = listed["versions"][0]
    assert set(v) == {"version", "created", "family", "cv_macro_f1", "gate", "current"}
    assert v["family"] == "tfidf-linear" and 0 < v["cv_macro_f1"] <= 1 and v["gate"] is None

    assert run_cli("registry", "promote", str(reg), "v0002").returncode == 0
    assert json.loads(run_cli("registry", "list", str(reg), "--json").stdout)["current"] == "v0002"
    _train(three_labels["base"], reg, "--promote")
    assert Registry(reg).current == "v0003"
    r = run_cli("registry", "rollback", str(reg))
    assert r.returncode == 0 and "v0002 is current again" in r.stdout
    assert run_cli("registry", "rollback", str(reg)).returncode == 0
    assert Registry(reg).current == "v0001"
    r = run_cli("registry", "rollback", str(reg))
    assert r.returncode == 2 and "no earlier current version" in r.stderr

    # predict and eval take the registry wherever they take a model directory
    p = run_cli("predict", str(reg), "thank you so much")
    assert p.returncode == 0 and json.loads(p.stdout)["label"] == "GRATITUDE"
    e = run_cli("eval", str(reg), str(three_labels["base"]), "--json", "-q")
    assert e.returncode == 0 and json.loads(e.stdout)["macro_f1"] > 0.9


def test_registry_errors_are_one_line(three_labels, tmp_path):
    reg = tmp_path / "reg"
    _train(three_labels["base"], reg)
    empty = tmp_path / "empty-registry"
    Registry.create(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "registry.json").write_text('{"format": "offramp-registry"')
    (tmp_path / "shadow.yaml").write_text(f"model: {reg}\nshadow: {{mode: llm_first}}\n")
    cases = [
        (("registry", "promote", str(reg), "v0042"), "has no version 'v0042' (versions: v0001)"),
        (("predict", str(empty), "hi"), "has no current version"),
        (("serve", str(empty)), "has no current version"),
        (("registry", "retrain", str(empty), str(three_labels["other"])), "has no current version to retrain"),
        (("registry", "list", str(broken)), "is not a valid offramp registry record"),
        (("serve", str(tmp_path / "shadow.yaml")), "shadow: needs an llm: section"),
        (("registry", "list", str(three_labels["base"])), "is a file, not a registry directory"),
        (("registry", "list", str(tmp_path / "none")), "does not exist"),
        (("registry", "list", str(tmp_path)), "is not an offramp registry"),
        (("predict", str(tmp_path / "empty-reg"), "hi"), "does not exist"),
        (("train", str(three_labels["base"]), "--registry", str(tmp_path)), "is not an offramp registry"),
        (("train", str(three_labels["base"])), "exactly one of --out DIR or --registry DIR"),
        (("registry", "retrain", str(reg), str(tmp_path / "missing.csv")), "missing.csv"),
    ]
    for args, message in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_retrain_learns_a_new_intent_behind_the_gate(three_labels, tmp_path):
    reg = tmp_path / "reg"
    _train(three_labels["base"], reg)
    # the frozen gate set has no OTHER: use a gate file that has, as the added data brings it
    r = run_cli(
        "registry",
        "retrain",
        str(reg),
        str(three_labels["other"]),
        "--gate",
        str(three_labels["gate_with_other"]),
        "--json",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["decision"] == "promoted" and out["candidate"] == "v0002" and out["current"] == "v0001"
    assert out["new_labels"] == ["OTHER"]
    g = out["gate"]
    assert g["macro_f1"]["candidate"] > g["macro_f1"]["current"]
    lo, hi = g["macro_f1"]["ci95"]
    assert lo <= g["macro_f1"]["candidate"] - g["macro_f1"]["current"] <= hi
    assert set(g["per_class"]) == {"SUPPORT", "GRATITUDE", "TRY_TO_HACK", "OTHER"}
    assert g["per_class"]["OTHER"]["current"] == 0.0 and g["per_class"]["OTHER"]["new"] is True
    assert Registry(reg).current == "v0002"
    assert "OTHER" in set(Registry(reg).load().classes_)
    listed = json.loads(run_cli("registry", "list", str(reg), "--json").stdout)
    assert listed["versions"][1]["gate"]["decision"] == "promoted"


def test_retrain_refuses_a_regression_and_keeps_the_candidate(three_labels, tmp_path):
    reg = tmp_path / "reg"
    _train(three_labels["base"], reg)
    # corrections that are wrong: most SUPPORT messages relabelled GRATITUDE
    bad = [(t, "GRATITUDE") for t, lab in read_pairs(three_labels["base"]) if lab == "SUPPORT"] * 2
    add = write_csv(tmp_path / "bad.csv", bad)
    r = run_cli("registry", "retrain", str(reg), str(add), "--json", "-q")
    assert r.returncode == 4, r.stderr
    out = json.loads(r.stdout)
    assert out["decision"] == "refused" and out["candidate"] == "v0002"
    assert any("SUPPORT F1 drops" in x for x in out["reasons"])
    reg_ = Registry(reg)
    assert reg_.current == "v0001" and [v["version"] for v in reg_.versions()] == ["v0001", "v0002"]
    # the human-readable form says why
    r = run_cli("registry", "retrain", str(reg), str(add), "-q")
    assert r.returncode == 4 and "refused v0003 (v0001 stays current)" in r.stdout and "SUPPORT F1 drops" in r.stdout


def test_a_gate_label_nobody_knows_is_an_error(three_labels, tmp_path):
    reg = tmp_path / "reg"
    _train(three_labels["base"], reg)
    add = write_csv(tmp_path / "add.csv", [("please reset my password", "SUPPORT")])
    r = run_cli("registry", "retrain", str(reg), str(add), "--gate", str(three_labels["gate_with_other"]))
    assert r.returncode == 2
    assert "labels that neither the current model nor the added data has: OTHER" in r.stderr
    assert [v["version"] for v in Registry(reg).versions()] == ["v0001"]  # nothing was trained


def test_registry_stores_no_raw_personal_data(tmp_path):
    train, _, _ = demo_paths()
    rows = read_pairs(train)[:300]
    secret_mail, secret_phone = "jane.roe.4417@example.org", "+44 20 7946 0958"
    rows = [
        (f"{t} write to {secret_mail} or call {secret_phone}", lab) if i % 3 == 0 else (t, lab)
        for i, (t, lab) in enumerate(rows)
    ]
    data = write_csv(tmp_path / "pii.csv", rows)
    reg = tmp_path / "reg"
    _train(data, reg)
    add = write_csv(tmp_path / "add.csv", [(f"thanks! reach me at {secret_mail}", "GRATITUDE")] * 3)
    assert run_cli("registry", "retrain", str(reg), str(add), "-q").returncode in (0, 4)
    for f in Path(reg).rglob("*"):
        if f.is_file() and f.suffix in (".jsonl", ".json", ".md"):
            body = f.read_text(encoding="utf-8")
            # the phone in any spacing (a bare "7946" can be digits of a float in metrics.json)
            assert secret_mail not in body and "7946 0958" not in body and "79460958" not in body, f
    assert "<EMAIL_ADDRESS>" in (reg / "gate.jsonl").read_text() + "".join(
        p.read_text() for p in (reg / "data").iterdir()
    )


def _add_versions(path, n, texts, labels):
    from offramp import train

    reg = Registry(path)
    model, _ = train(texts, labels, quality="fast", time_limit=None)
    for _ in range(n):
        reg.add(model, texts, labels)


def test_concurrent_writers_cannot_corrupt_the_registry(tmp_path):
    texts = ["reset my pin", "thanks a lot", "how do I reset the pin", "thank you!"] * 5
    labels = ["SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE"] * 5
    Registry.create(tmp_path / "reg")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_versions, args=(tmp_path / "reg", 4, texts, labels)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reg = Registry(tmp_path / "reg")
    names = [v["version"] for v in reg.versions()]
    assert names == [f"v{i:04d}" for i in range(1, 9)]
    assert reg.current == "v0001"
    for name in names:  # every listed version is complete and loads
        assert list(reg.load(name).classes_) == ["GRATITUDE", "SUPPORT"]
    assert not [p for p in (tmp_path / "reg").iterdir() if p.is_dir() and p.name.startswith(".")]


def _wait_for_version(url, version, seconds=5.0):
    import time

    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if httpx.get(url + "/readyz", timeout=2).json()["version"] == version:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"the server did not pick up {version} within {seconds} s")


def test_a_served_registry_follows_promote_and_rollback(three_labels, tmp_path):
    import httpx

    from helpers import Server

    reg = tmp_path / "reg"
    _train(three_labels["base"], reg)
    r = run_cli(
        "registry", "retrain", str(reg), str(three_labels["other"]), "--gate", str(three_labels["gate_with_other"])
    )
    assert r.returncode == 0, r.stderr
    run_cli("registry", "rollback", str(reg))
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("model: reg\n")
    for target in (reg, pipeline):
        srv = Server(target)
        try:
            ready = httpx.get(srv.url + "/readyz").json()
            assert ready["version"] == "v0001" and len(ready["manifest"]) == 12
            assert "OTHER" not in ready["labels"]
            assert run_cli("registry", "promote", str(reg), "v0002").returncode == 0
            _wait_for_version(srv.url, "v0002")
            assert "OTHER" in httpx.get(srv.url + "/readyz").json()["labels"]
            assert run_cli("registry", "rollback", str(reg)).returncode == 0
            _wait_for_version(srv.url, "v0001")
            # a reload through the admin endpoint is immediate
            run_cli("registry", "promote", str(reg), "v0002")
            got = httpx.post(srv.url + "/v1/admin/reload", json={}).json()
            assert got["version"] == "v0002"
            run_cli("registry", "rollback", str(reg))
            _wait_for_version(srv.url, "v0001")
        finally:
            srv.stop()
