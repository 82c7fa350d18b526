"""Thousands of labels: the nearest-centroid family, chosen by train() above MANY_LABELS labels,
whose size and training time do not grow with labels x rows."""

import json

import numpy as np
import pytest

from offramp.estimators.centroid import MANY_LABELS, TfidfCentroid, holdout_rows
from offramp.registry.records import load

from helpers import run_cli, write_csv


def _rows(n_labels: int, per_label: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    noise = [f"n{i}" for i in range(3000)]
    rows = []
    for lab in range(n_labels):
        key = [f"k{lab}a", f"k{lab}b", f"k{lab}c"]
        for _ in range(per_label):
            words = list(rng.choice(key, 2, replace=False)) + list(rng.choice(noise, 4, replace=False))
            rows.append((" ".join(words), f"L{lab}"))
    return rows


def test_more_than_many_labels_trains_a_centroid_model(tmp_path):
    data = write_csv(tmp_path / "d.csv", _rows(MANY_LABELS + 500))
    r = run_cli("train", str(data), "--out", str(tmp_path / "m"), "--time-limit", "30", "--json", "-q")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["winner"].startswith("centroid-") and len(rep["classes"]) == MANY_LABELS + 500
    assert any("nearest-centroid model" in w for w in rep["warnings"])
    assert rep["cv_accuracy"] > 0.9 and rep["ece_calibrated"] < rep["ece_uncalibrated"]
    model = load(tmp_path / "m")
    assert isinstance(model, TfidfCentroid)
    # stored sparse: about labels x keep weights, nothing like features x labels
    assert model.centroids_.nnz <= len(model.classes_) * model.keep
    texts = ["k17a k17b hello", "k1200c k1200a n5 n6"]
    assert list(model.predict(texts)) == ["L17", "L1200"]
    label, conf, p = model.predict_one(texts[0])
    assert label == "L17" and np.isclose(p.sum(), 1) and np.allclose(p, model.predict_proba(texts[:1])[0], atol=1e-5)
    # a reject target is refused in one line rather than fitted badly
    r = run_cli("train", str(data), "--out", str(tmp_path / "m2"), "--reject-target", "in_scope_precision>=0.9")
    assert r.returncode == 2 and "not fitted for models of more than" in r.stderr


def test_centroid_state_is_checked_on_load():
    texts, labels = zip(*_rows(30))
    m = TfidfCentroid(keep=8).fit(list(texts), list(labels))
    meta, arrays = m.get_state()
    back = TfidfCentroid.from_state(meta, arrays)
    assert np.allclose(back.predict_proba(list(texts)), m.predict_proba(list(texts)))
    bad = dict(arrays, centroid_indices=arrays["centroid_indices"] + 10**9)
    with pytest.raises(ValueError, match="centroids do not match"):
        TfidfCentroid.from_state(meta, bad)
    bad = dict(arrays, centroid_indptr=arrays["centroid_indptr"][:-1])
    with pytest.raises(ValueError, match="centroids do not match"):
        TfidfCentroid.from_state(meta, bad)


def test_holdout_keeps_every_label_in_training():
    y = np.array(["a", "a", "b", "c", "c", "c"])
    held = holdout_rows(y, 0)
    assert sorted(y[held]) == ["a", "c"]  # b has one message: never held out


def test_eval_and_report_of_many_labels_keep_no_dense_matrix(tmp_path, monkeypatch):
    from offramp.evaluation import evaluate as ev
    from offramp.evaluation.metrics import MATRIX_LABELS

    rows = _rows(MANY_LABELS + 200)
    data = write_csv(tmp_path / "d.csv", rows)
    r = run_cli("train", str(data), "--out", str(tmp_path / "m"), "--time-limit", "30", "-q")
    assert r.returncode == 0, r.stderr
    # a test file with two confusable messages: L3's key words labelled as L5
    test = write_csv(tmp_path / "t.csv", rows[:600] + [("k3a k3b n1 n2", "L5"), ("k3a k3c n4 n9", "L5")])
    r = run_cli("eval", str(tmp_path / "m"), str(test), "--json", "-q")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    conf = rep["confusion"]
    assert len(conf["labels"]) > MATRIX_LABELS and conf["matrix"] is None
    assert conf["pairs"][0] == ["L5", "L3", 2]
    assert rep["ece"] is not None and rep["n"] == 602
    # the same figures whatever the block size the probabilities are computed in
    model = load(tmp_path / "m")
    texts, labels = zip(*(rows[:600]))
    whole = ev.evaluate(model, list(texts), list(labels), speed=False)
    monkeypatch.setattr(ev, "_PROBA_CELLS", 1)  # blocks of 256 rows
    blocks = ev.evaluate(model, list(texts), list(labels), speed=False)
    assert blocks.predictions == whole.predictions and blocks.ece == whole.ece
    assert np.allclose(blocks.confidences, whole.confidences)
    r = run_cli("report", str(tmp_path / "m"), str(test), "--out", str(tmp_path / "rep.html"), "-q")
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "rep.html").read_text(encoding="utf-8")
    assert "Most frequent confusions" in page and "<td>L5</td><td>L3</td><td>2</td>" in page
