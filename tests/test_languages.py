"""Languages and sentence encoders as plug-ins: detection, the automatic choice, the multilingual
encoder (installed by scripts/setup.sh), and training on Chinese from the command line.

tests/data/zh_inbox.csv is a small Chinese support inbox written for these tests (48 messages,
the flagship example's four labels)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from offramp.data.io import read_dataset
from offramp.data.language import detect_languages, message_language
from offramp.encoders import sentence as enc_mod
from offramp.encoders.sentence import EncoderUnavailable, MultilingualEncoder, choose_encoder, get_encoder
from offramp.errors import ModelDirError, UsageError
from offramp.estimators.stacked import StackedLinear
from offramp.registry.records import load

from helpers import rewrite_model_json, run_cli

ZH = Path(__file__).parent / "data" / "zh_inbox.csv"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OFFRAMP_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize(
    "text,lang",
    [
        ("我的银行卡被吞了怎么办", "zh"),
        ("ATM吞卡了 help", "zh"),
        ("where is my card?", "en"),
        ("Wo ist meine Karte? Bitte helfen", "de"),
        ("Où est ma carte, merci", "fr"),
        ("¿Dónde está mi tarjeta? gracias", "es"),
        ("これは日本語のメッセージです", "ja"),
        ("Моя карта не пришла", "ru"),
        ("PIN", "und"),
        ("12345 !!!", "und"),
        ("ＡＴＭ　ｃａｒｄ ｉｓ ｎｏｔ ｗｏｒｋｉｎｇ for me", "en"),  # full-width forms read after NFKC
    ],
)
def test_message_language(text, lang):
    assert message_language(text) == lang


def test_profile_and_automatic_choice():
    zh = read_dataset(ZH).texts
    p = detect_languages(zh)
    assert p.main == "zh" and p.shares["zh"] == 1.0 and p.non_english_share == 1.0
    assert choose_encoder(zh).name == "use-multilingual"
    en = ["where is my card", "thanks for the help", "how do I reset my pin", "the app does not open"] * 10
    c = choose_encoder(en)
    assert c.name == "minilm" and c.warning is None
    mixed = detect_languages(zh[:30] + en[:30])
    assert mixed.mixed and 0.4 < mixed.non_english_share < 0.6
    assert detect_languages([]).sample == 0


def test_forced_english_encoder_on_chinese_warns_and_unknown_is_refused():
    zh = read_dataset(ZH).texts
    c = choose_encoder(zh, "minilm")
    assert c.name == "minilm" and "English-only" in c.warning and "use-multilingual" in c.warning
    with pytest.raises(UsageError, match="unknown encoder 'bert'"):
        choose_encoder(zh, "bert")


def test_multilingual_encoder_vectors_and_cache():
    e = MultilingualEncoder(cache=True)
    texts = ["我的银行卡被吞了", "ATM吞卡了怎么办", "今天天气很好", "where is my card", ""]
    V = e.encode(texts)
    assert V.shape == (5, 512) and np.allclose(np.linalg.norm(V, axis=1), 1, atol=1e-4)
    assert V[0] @ V[1] > V[0] @ V[2] + 0.3  # a paraphrase is nearer than an unrelated sentence
    calls = []
    real = e._run
    e._run = lambda batch: calls.append(len(batch)) or real(batch)
    try:
        again = e.encode(texts)
    finally:
        e._run = real
    assert calls == [] and np.allclose(again, V)


def test_multilingual_encoder_refuses_a_changed_weights_file(monkeypatch):
    monkeypatch.setattr(enc_mod, "USE_WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(EncoderUnavailable, match="does not match its pinned SHA-256"):
        MultilingualEncoder(cache=False)


def test_stacked_model_with_the_multilingual_encoder(tmp_path):
    ds = read_dataset(ZH)
    m = StackedLinear(encoder="use-multilingual", min_df=1).fit(ds.texts, ds.labels)
    assert clone(m).get_params()["encoder"] == "use-multilingual"
    assert m.coef_.shape[0] == m.n_tfidf_ + 512
    assert m.predict(["谢谢，问题解决了"])[0] == "GRATITUDE"
    assert m.predict(["我的卡丢了，怎么挂失？"])[0] == "SUPPORT"
    m.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert loaded.encoder == "use-multilingual"
    assert np.allclose(loaded.predict_proba(ds.texts), m.predict_proba(ds.texts), atol=1e-3)
    # the model directory names its encoder: another encoder's id is refused by name
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc["encoder_id"] = "use-multilingual-v3:0000000000000000"
    rewrite_model_json(tmp_path / "m", doc)
    with pytest.raises(ModelDirError, match="trained with encoder use-multilingual-v3:0000"):
        load(tmp_path / "m")


def test_cli_train_on_chinese_picks_the_multilingual_encoder(tmp_path):
    r = run_cli("train", str(ZH), "--out", str(tmp_path / "m"), "--time-limit", "none", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["encoder"]["name"] == "use-multilingual"
    assert rep["encoder"]["languages"]["shares"] == {"zh": 1.0}
    assert any(c["name"].startswith("stacked-use-multilingual") for c in rep["candidates"])
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "## Languages and sentence encoder" in card and "`use-multilingual`" in card
    r = run_cli("train", str(ZH), "--out", str(tmp_path / "m2"), "--time-limit", "none")
    assert r.returncode == 0, r.stderr
    assert "languages: zh 100% (of 48 sampled messages); encoder: use-multilingual" in r.stdout
    # forcing the English-only encoder trains, with a warning naming the better choice
    r = run_cli("train", str(ZH), "--out", str(tmp_path / "m3"), "--encoder", "minilm", "--quality", "balanced")
    assert r.returncode == 0, r.stderr
    assert "English-only" in r.stderr and "--encoder auto would pick use-multilingual" in r.stderr


def test_cli_unknown_or_missing_encoder_is_one_line(tmp_path, monkeypatch):
    r = run_cli("train", str(ZH), "--out", str(tmp_path / "m"), "--encoder", "bert")
    assert r.returncode == 2 and "unknown encoder 'bert'" in r.stderr and "minilm, use-multilingual" in r.stderr
    assert "Traceback" not in r.stderr
    # not installed: the library names the install command
    missing = dataclasses.replace(enc_mod.ENCODERS["use-multilingual"], installed=lambda: False)
    monkeypatch.setitem(enc_mod.ENCODERS, "use-multilingual", missing)
    with pytest.raises(EncoderUnavailable, match="not installed") as e:
        get_encoder("use-multilingual")
    assert "requirements/models.txt" in str(e.value.hint)


def test_cli_lists_encoders():
    r = run_cli("encoders", "--json")
    assert r.returncode == 0, r.stderr
    rows = {e["name"]: e for e in json.loads(r.stdout)["encoders"]}
    assert rows["use-multilingual"]["dim"] == 512 and "zh" in rows["use-multilingual"]["languages"]
    assert rows["minilm"]["languages"] == ["en"] and rows["minilm"]["installed"] is True
