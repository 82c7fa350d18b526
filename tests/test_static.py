"""The static tier: a token table distilled from the installed MiniLM with onnxruntime (no torch),
stored in the models trained on it, and the search's cost-aware choice."""

import csv
import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from offramp.encoders import static
from offramp.encoders.sentence import get_encoder
from offramp.errors import ModelDirError, UsageError
from offramp.estimators.base import load_model
from offramp.estimators.stacked import StackedLinear
from offramp.training.search import fast_candidates, select_model, static_candidates

from helpers import run_cli


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


@pytest.fixture(scope="module")
def table():
    """The environment's table (the setup script distils it; the first use does otherwise)."""
    return get_encoder(static.STATIC_NAME)


def test_a_fresh_distillation_gives_the_same_bytes_as_the_installed_one(table, tmp_path):
    fresh = static.distill(static.DistillSettings(), tmp_path / "enc")
    assert fresh.manifest["vectors_sha256"] == table.manifest["vectors_sha256"]
    m = json.loads((tmp_path / "enc" / "manifest.json").read_text())
    assert m["source"] == {"encoder": "minilm", "sha256": table.manifest["source"]["sha256"]}
    assert m["pca_dims"] == 256 and m["weighting"]["kind"] == "sif-zipf" and m["dtype"] == "float16"
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == sorted(static.FILES)
    again = static.StaticEncoder.from_dir(tmp_path / "enc")
    assert np.array_equal(again.vectors, fresh.vectors) and again.vectors.dtype == np.float16
    assert again.vectors.nbytes <= 20e6


def test_vectors_are_unit_length_and_carry_meaning(table):
    v = table.encode(["my card has not arrived yet", "my new card still hasn't come", "tell me a joke about cats", ""])
    assert v.shape == (4, 256) and np.allclose(np.linalg.norm(v[:3], axis=1), 1, atol=1e-3)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1
    # one at a time and in a batch: the same vectors
    assert np.allclose(table.encode_uncached(["my card has not arrived yet"])[0], v[0], atol=1e-6)


_TRICKY = [
    "", "   ", "\t\r\n", "x" * 150, "don't __init__ ~`|{}", "hello [SEP] world", "[UNK]", "[unk] [cls",
    "a\x0bb\x0cc\x1cd\x00e\x7f", "naïve café", "日本語 text", "a\u2028b", "Card ****1234 declined!!!",
    "word " * 700, "PIN?!@#$%^&*()_+-=", "ÀÉÎ",
]  # fmt: skip


def test_the_quick_ascii_path_gives_the_tokenizers_ids(table, inbox_sample):
    texts, _ = _rows(inbox_sample[0])
    texts += _TRICKY
    ref = [e.ids[: static.MAX_TOKENS] for e in table._tok.encode_batch(texts, add_special_tokens=False)]
    assert table._ascii is not None  # MiniLM's tokenizer is one the quick path knows
    assert table.token_ids(texts) == ref
    assert table.token_ids(texts) == ref  # and again from the remembered words
    assert len(table.token_ids(["word " * 700])[0]) == static.MAX_TOKENS


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=60), min_size=1, max_size=8))
def test_any_ascii_text_gets_the_tokenizers_ids(table, texts):
    ref = [e.ids[: static.MAX_TOKENS] for e in table._tok.encode_batch(texts, add_special_tokens=False)]
    assert table.token_ids(texts) == ref


def test_a_changed_table_is_refused_at_load(table, tmp_path):
    table.save(tmp_path / "enc")
    vec = np.load(tmp_path / "enc" / "vectors.npy")
    vec[5, 3] += np.float16(0.5)
    np.save(tmp_path / "enc" / "vectors.npy", vec)
    with pytest.raises(ModelDirError, match="SHA-256"):
        static.StaticEncoder.from_dir(tmp_path / "enc")
    (tmp_path / "enc" / "tokenizer.json").unlink()
    with pytest.raises(ModelDirError, match="tokenizer.json missing"):
        static.StaticEncoder.from_dir(tmp_path / "enc")


def test_distill_refuses_bad_input_in_one_line_before_work(tmp_path):
    (tmp_path / "there").mkdir()
    r = run_cli("encoders", "distill", "--out", tmp_path / "there")
    assert r.returncode == 2 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    r = run_cli("encoders", "distill", "--from", "use-multilingual", "--out", tmp_path / "x")
    assert r.returncode == 2 and "cannot distill from 'use-multilingual'" in r.stderr and "minilm" in r.stderr
    assert not (tmp_path / "x").exists()
    r = run_cli("encoders", "distill", "--dims", "2", "--out", tmp_path / "y")
    assert r.returncode == 2 and "dims" in r.stderr
    with pytest.raises(UsageError):
        static.distill(static.DistillSettings(source="bert"))


def test_distill_json_and_the_encoder_list(table):
    r = run_cli("encoders", "distill", "--json", "-q")  # already in place: checked, not redone
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    r = run_cli("encoders", "distill", "--json")  # the progress line goes to stderr, the object alone to stdout
    assert json.loads(r.stdout) == doc and "already holds it" in r.stderr
    assert doc["name"] == "static-minilm" and doc["vectors_sha256"] == table.manifest["vectors_sha256"]
    assert doc["used_by_training"] is True
    r = run_cli("encoders", "--json")
    names = [e["name"] for e in json.loads(r.stdout)["encoders"]]
    assert "static-minilm" in names and "minilm" in names


def test_a_static_model_carries_its_table_and_loads_without_distilling(inbox_sample, tmp_path, monkeypatch):
    texts, labels = _rows(inbox_sample[0])
    test_texts, test_labels = _rows(inbox_sample[1])
    m = StackedLinear(encoder="static-minilm", embed_weight=2.0, C=1.0, min_df=1).fit(texts, labels)
    m.save(tmp_path / "model")

    def no(*a, **k):
        raise AssertionError("loading a model must not distil")

    monkeypatch.setattr(static, "distill", no)
    monkeypatch.setenv("OFFRAMP_CACHE_DIR", str(tmp_path / "empty-cache"))
    loaded = load_model(tmp_path / "model")
    assert list(loaded.predict(test_texts)) == list(m.predict(test_texts))
    assert np.allclose(loaded.predict_proba(test_texts), m.predict_proba(test_texts), atol=1e-6)
    assert loaded.predict_one(test_texts[0])[0] == m.predict([test_texts[0]])[0]
    acc = float(np.mean(np.asarray(loaded.predict(test_texts)) == np.asarray(test_labels)))
    assert acc > 0.8

    # a carried table that is not the one its manifest names is refused, naming the hash
    doc = json.loads((tmp_path / "model" / "model.json").read_text())
    with np.load(tmp_path / "model" / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k.startswith("static_")}
    assert arrays["static_vectors"].dtype == np.float16
    arrays["static_vectors"] = arrays["static_vectors"].copy()
    arrays["static_vectors"][0, 0] += np.float16(1)
    with pytest.raises(ModelDirError, match="SHA-256"):
        static.StaticEncoder.from_arrays(doc["static_manifest"], arrays)
    # and a model directory changed on disk is refused by its own manifest
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "model", broken)
    with np.load(broken / "arrays.npz", allow_pickle=False) as z:
        stored = {k: z[k] for k in z.files}
    stored["static_vectors"][0, 0] += np.float16(1)
    np.savez_compressed(broken / "arrays.npz", **stored)
    with pytest.raises(ModelDirError):
        load_model(broken)


def test_the_static_tier_follows_the_estimator_contract(inbox_sample):
    texts, labels = _rows(inbox_sample[0])
    est = StackedLinear(encoder="static-minilm", embed_weight=2.0, C=1.0, min_df=1)
    c = clone(est)
    assert c.get_params()["encoder"] == "static-minilm"
    scores = cross_val_score(c, texts, labels, cv=3, scoring="accuracy")
    assert scores.min() > 0.75


def test_the_cheapest_candidate_within_the_error_wins(inbox_sample):
    texts, labels = _rows(inbox_sample[0])
    cands = fast_candidates(len(texts))[:1] + static_candidates(len(texts))[:1]
    best = select_model(texts, labels, cands, time_limit=None, rule="best")
    cheap = select_model(texts, labels, cands, time_limit=None, rule="cheapest", max_quality_loss=0.5)
    for r in best.results:
        assert r.cv_macro_f1_se is not None and r.cv_macro_f1_se >= 0 and r.cost_us and r.cost_us > 0
    top = max(best.results, key=lambda r: r.cv_macro_f1 or 0)
    assert best.winner == top.name
    cheapest = min(cheap.results, key=lambda r: r.cost_us or 0)
    assert cheap.winner == cheapest.name and cheap.rule == "cheapest" and cheap.tolerance == 0.5
    # within no loss at all, only the top score qualifies
    strict = select_model(texts, labels, cands, time_limit=None, rule="cheapest", max_quality_loss=0.0)
    assert strict.winner == max(strict.results, key=lambda r: r.cv_macro_f1 or 0).name
    with pytest.raises(UsageError, match="rule"):
        select_model(texts, labels, cands, rule="fastest")


def test_train_reports_the_trade_and_the_rule(inbox_sample, tmp_path):
    r = run_cli(
        "train", inbox_sample[0], "--out", tmp_path / "m", "--time-limit", "none", "--max-quality-loss", "0.05",
        "--json", "-q",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["rule"] == "cheapest" and doc["tolerance"] == 0.05
    scored = [c for c in doc["candidates"] if c["cv_macro_f1"] is not None]
    assert {"cv_macro_f1_se", "cost_us", "latency_p99_ms"} <= set(scored[0])
    assert any(c["name"].startswith("static-") for c in scored)
    top = max(c["cv_macro_f1"] for c in scored)
    ok = [c for c in scored if c["cv_macro_f1"] >= top - 0.05]
    assert doc["winner"] == min(ok, key=lambda c: c["cost_us"])["name"]
    info = json.loads((tmp_path / "m" / "model.json").read_text())["info"]
    assert info["rule"] == "cheapest" and info["max_quality_loss"] == 0.05
    r = run_cli("train", inbox_sample[0], "--out", tmp_path / "m2", "--quality", "best", "--max-quality-loss", "0.01")
    assert r.returncode == 2 and "does not apply" in r.stderr
    assert not (tmp_path / "m2").exists()
