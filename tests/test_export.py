"""ONNX export of static-embedding models, run by onnxruntime here and by onnxruntime-web in a real
headless Chromium, compared with offramp's own probabilities."""

import csv
import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from playwright import sync_api

from offramp.estimators.stacked import StackedLinear
from offramp.export.onnx import ExportUnsupported, encode_for_onnx, export_onnx

from helpers import run_cli

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ORT_WEB = Path(__file__).resolve().parent / "web" / "node_modules" / "onnxruntime-web" / "dist"


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


@pytest.fixture(scope="module")
def data(inbox_sample):
    return _rows(inbox_sample[0]), _rows(inbox_sample[1])


@pytest.fixture(scope="module")
def model(data):
    (texts, labels), _ = data
    m = StackedLinear(None, None, loss="logreg", C=10.0, encoder="static-minilm").fit(texts, labels)
    m.temperature_ = 0.8  # a calibrated model's temperature is part of the graph
    return m


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    return export_onnx(model, d / "float"), export_onnx(model, d / "int8", int8=True)


def _run(path, texts):
    s = ort.InferenceSession(str(Path(path) / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = encode_for_onnx((Path(path) / "tokenizer.json").read_text(encoding="utf-8"), texts)
    return s.run(None, feed)


def test_onnxruntime_gives_offramps_probabilities(model, exported, data):
    _, (test_texts, test_labels) = data
    texts = test_texts + ["", "   ", "ünïcödé 🙂 and a very long message " * 80]
    p = _run(exported[0].path, texts)[0]
    q = model.predict_proba(texts)
    assert p.shape == q.shape
    assert (p.argmax(1) == q.argmax(1)).mean() >= 0.999
    assert np.abs(p - q).max() <= 1e-4
    doc = json.loads((Path(exported[0].path) / "labels.json").read_text())
    assert doc["labels"] == [str(c) for c in model.classes_] and doc["outputs"] == ["probabilities"]
    assert doc["static_manifest"]["vectors_sha256"] == model.encoder_.manifest["vectors_sha256"]
    assert sorted(os.listdir(exported[0].path)) == ["labels.json", "model.onnx", "tokenizer.json"]


def test_an_int8_export_is_small_and_as_accurate(model, exported, data):
    _, (test_texts, test_labels) = data
    small = exported[1]
    assert small.int8 and small.size_bytes <= 10e6 < exported[0].size_bytes
    y = np.asarray(test_labels)
    acc = float((np.asarray(model.predict(test_texts)) == y).mean())
    p = _run(small.path, test_texts)[0]
    acc8 = float((np.asarray(model.classes_)[p.argmax(1)] == y).mean())
    assert abs(acc8 - acc) <= 0.005


def test_the_dont_know_nearness_is_exported_too(model, data, tmp_path):
    (texts, labels), (test_texts, _) = data
    m = StackedLinear(None, None, loss="logreg", C=10.0, encoder="static-minilm").fit(texts, labels)
    E = m.encoder_.encode(texts)
    order = np.argsort(np.searchsorted(m.classes_, labels), kind="stable")
    m.memory_ = E[order]
    m.memory_offsets_ = np.concatenate([[0], np.cumsum(np.unique(labels, return_counts=True)[1])])
    m.reject_label_, m.reject_threshold_, m.reject_familiarity_weight_ = "OTHER", 0.9, 0.5
    res = export_onnx(m, tmp_path / "x")
    probs, fam = _run(res.path, test_texts)
    assert np.abs(fam - m.familiarity(m.encoder_.encode(test_texts))).max() <= 1e-4
    doc = json.loads((tmp_path / "x" / "labels.json").read_text())
    assert doc["outputs"] == ["probabilities", "familiarity"] and doc["reject"]["familiarity_weight"] == 0.5
    # the rule in labels.json, applied to the graph's outputs, gives offramp's answers
    r = doc["reject"]
    labels_out = np.where(
        probs.max(1) + r["familiarity_weight"] * fam < r["threshold"],
        r["label"],
        np.asarray(doc["labels"])[probs.argmax(1)],
    )
    assert (labels_out == np.asarray(m.predict(test_texts))).mean() >= 0.999


def test_models_that_cannot_be_exported_are_refused_in_one_line(data, fast_model, tmp_path):
    (texts, labels), _ = data
    r = run_cli("export", fast_model, "--out", tmp_path / "o", "--format", "onnx")
    assert r.returncode == 2 and "cannot be exported to ONNX" in r.stderr and "static embeddings alone" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    stacked = StackedLinear(encoder="static-minilm").fit(texts, labels)
    with pytest.raises(ExportUnsupported, match="n-grams"):
        export_onnx(stacked, tmp_path / "s")
    (tmp_path / "there").mkdir()
    r = run_cli("export", fast_model, "--out", tmp_path / "there")
    assert r.returncode == 2 and "already exists" in r.stderr
    r = run_cli("export", fast_model, "--out", tmp_path / "t", "--format", "coreml")
    assert r.returncode == 2 and "unknown export format" in r.stderr and "onnx" in r.stderr


def test_the_cli_exports_a_saved_model(model, tmp_path):
    model.save(tmp_path / "m")
    r = run_cli("export", tmp_path / "m", "-o", tmp_path / "onnx", "--int8", "--json", "-q")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == "onnx" and doc["int8"] is True and doc["size_bytes"] <= 10e6


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


PAGE = """<!doctype html><meta charset="utf-8"><script src="/ort/ort.min.js"></script>
<script>
ort.env.wasm.wasmPaths = "/ort/";
ort.env.wasm.numThreads = 1;
(async () => {
  try {
    const feed = await (await fetch("/feed.json")).json();
    const session = await ort.InferenceSession.create("/model/model.onnx", {executionProviders: ["wasm"]});
    const n = feed.rows, w = feed.width;
    const out = await session.run({
      input_ids: new ort.Tensor("int64", BigInt64Array.from(feed.ids.map(BigInt)), [n, w]),
      attention_mask: new ort.Tensor("int64", BigInt64Array.from(feed.mask.map(BigInt)), [n, w]),
    });
    document.title = "done";
    document.getElementById("out").textContent = JSON.stringify(Array.from(out.probabilities.data));
  } catch (e) {
    document.title = "failed";
    document.getElementById("out").textContent = String(e);
  }
})();
</script><pre id="out"></pre>
"""


def run_in_chromium(model_dir: Path, feed: dict, site: Path, timeout_ms: int = 60_000) -> tuple[str, str]:
    """Run ``model_dir``'s graph on ``feed`` in onnxruntime-web inside headless Chromium, served
    from ``site`` on loopback: (page title, "done" or "failed"; the probabilities as JSON, or the error)."""
    site.mkdir(parents=True)
    shutil.copytree(ORT_WEB, site / "ort")
    shutil.copytree(model_dir, site / "model")
    ids, mask = feed["input_ids"], feed["attention_mask"]
    (site / "feed.json").write_text(
        json.dumps(
            {"rows": ids.shape[0], "width": ids.shape[1], "ids": ids.ravel().tolist(), "mask": mask.ravel().tolist()}
        )
    )
    (site / "index.html").write_text(PAGE, encoding="utf-8")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with sync_api.sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = b.new_page()
            page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
            page.wait_for_function("document.title !== ''", timeout=timeout_ms)
            title, text = page.title(), page.inner_text("#out")
            b.close()
    finally:
        httpd.shutdown()
    return title, text


def test_onnxruntime_web_in_chromium_gives_the_same_probabilities(model, exported, data, tmp_path):
    assert ORT_WEB.is_dir(), "onnxruntime-web is not installed: npm ci --prefix tests/web (scripts/setup.sh --dev does)"
    _, (test_texts, _) = data
    texts = test_texts[:300]
    feed = encode_for_onnx((Path(exported[0].path) / "tokenizer.json").read_text(encoding="utf-8"), texts)
    title, text = run_in_chromium(Path(exported[0].path), feed, tmp_path / "site")
    assert title == "done", text
    web = np.asarray(json.loads(text), dtype=np.float64).reshape(len(texts), -1)
    q = model.predict_proba(texts)
    assert (web.argmax(1) == q.argmax(1)).mean() >= 0.999
    assert np.abs(web - q).max() <= 1e-4
