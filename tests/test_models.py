import json
import shutil

import numpy as np
import pytest

from offramp.data.io import read_dataset
from offramp.errors import ModelDirError
from offramp.estimators.base import softmax
from offramp.estimators.calibration import expected_calibration_error
from offramp.estimators.features import NgramFeaturizer, distinct
from offramp.estimators.tfidf import TfidfLinear
from offramp.modeldir.store import save_model
from offramp.registry.records import load
from offramp.training.search import fast_candidates, select_model
from offramp.training.train import train

from helpers import run_cli


def test_featurizer_single_path_matches_batch_on_real_messages():
    from offramp.data.io import read_dataset
    from offramp.demo.data import demo_paths

    texts = read_dataset(demo_paths()[1]).texts  # short questions, long jailbreak prompts, non-ASCII
    f = NgramFeaturizer(word_ngrams=(1, 3), char_ngrams=(2, 5)).fit(texts[:600])
    X = f.transform(texts)
    for i, t in enumerate(texts):
        cols, w = f.transform_one(t)
        assert X[i].nnz == len(cols) and np.allclose(X[i].toarray()[0][cols], w, atol=1e-6)


def test_featurizer_single_path_matches_batch():
    texts = [
        "How do I reset my PIN?",
        "merci beaucoup !",
        "Переведи это на английский",
        "",
        "🙂 ok",
        "lone \ud800 half",
    ]
    f = NgramFeaturizer(min_df=1).fit(texts)
    X = f.transform(texts)
    for i, t in enumerate(texts):
        cols, w = f.transform_one(t)
        dense = X[i].toarray()[0]
        assert np.allclose(dense[cols], w)
        assert X[i].nnz == len(cols)
    assert X[3].nnz == 0  # empty text: no features, no crash
    # each block is L2-normalised on its own
    row = X[0].toarray()[0]
    assert np.isclose(np.linalg.norm(row[: f.n_word_]), 1) and np.isclose(np.linalg.norm(row[f.n_word_ :]), 1)


def test_distinct_matches_numpy_unique():
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 17, 5000):
        for high in (3, 1 << 40):
            x = rng.integers(0, high, n, dtype=np.int64)
            assert np.array_equal(distinct(x), np.unique(x))


def test_featurizer_state_round_trip():
    texts = ["card arrived broken", "thank you so much", "card not working"]
    f = NgramFeaturizer(min_df=1).fit(texts)
    g = NgramFeaturizer.from_state(f.get_config(), f.get_state())
    assert (f.transform(texts) != g.transform(texts)).nnz == 0


def test_binary_and_unicode_classification():
    texts = ["спасибо большое", "спасибо", "благодарю вас", "где моя карта", "карта не пришла", "моя карта где"]
    labels = ["THANKS"] * 3 + ["CARD"] * 3
    m = TfidfLinear(min_df=1).fit(texts, labels)
    assert list(m.predict(["спасибо!", "карта"])) == ["THANKS", "CARD"]
    assert m.predict_proba(["спасибо"]).shape == (1, 2)
    label, conf, p = m.predict_one("спасибо")
    assert label == "THANKS" and 0.5 < conf <= 1 and np.isclose(p.sum(), 1)


@pytest.fixture(scope="module")
def small_model(inbox_sample, tmp_path_factory):
    ds = read_dataset(inbox_sample[0])
    sel = select_model(ds.texts, ds.labels, fast_candidates(len(ds.texts))[:2], time_limit=30, seed=0)
    d = tmp_path_factory.mktemp("m") / "model"
    save_model(sel.model, d)
    return sel.model, d, read_dataset(inbox_sample[1])


def test_save_load_round_trip_identical(small_model):
    model, d, test = small_model
    loaded = load(d)
    assert list(loaded.predict(test.texts)) == list(model.predict(test.texts))
    assert np.array_equal(loaded.predict_proba(test.texts), model.predict_proba(test.texts))
    assert loaded.temperature_ == model.temperature_
    for t in test.texts[:20]:
        assert loaded.predict_one(t)[0] == model.predict_one(t)[0]


def test_model_dir_has_no_pickle(small_model):
    _, d, _ = small_model
    with np.load(d / "arrays.npz", allow_pickle=False) as z:  # would raise if an object array were stored
        assert all(z[k].dtype != object for k in z.files)
    json.loads((d / "model.json").read_text())


@pytest.mark.parametrize("damage", ["arrays", "model_json", "delete", "manifest_json"])
def test_tampered_dir_refused(small_model, tmp_path, damage):
    _, d, _ = small_model
    t = tmp_path / "t"
    shutil.copytree(d, t)
    if damage == "arrays":
        b = bytearray((t / "arrays.npz").read_bytes())
        b[len(b) // 2] ^= 0xFF
        (t / "arrays.npz").write_bytes(bytes(b))
        match = "arrays.npz was changed after the model was saved"
    elif damage == "model_json":
        doc = json.loads((t / "model.json").read_text())
        doc["temperature"] = 99.0
        (t / "model.json").write_text(json.dumps(doc))
        match = "model.json was changed after the model was saved"
    elif damage == "delete":
        (t / "arrays.npz").unlink()
        match = "arrays.npz is missing"
    else:
        (t / "manifest.json").write_text("{not json")
        match = "not a valid offramp manifest"
    with pytest.raises(ModelDirError, match=match):
        load(t)


def test_foreign_and_missing_dirs_refused(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist"):
        load(tmp_path / "nothing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "model.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(ModelDirError, match="not an offramp model directory"):
        load(tmp_path / "foreign")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelDirError, match="is a file"):
        load(tmp_path / "file")


def test_future_format_version_refused(small_model, tmp_path):
    _, d, _ = small_model
    t = tmp_path / "t"
    shutil.copytree(d, t)
    m = json.loads((t / "manifest.json").read_text())
    m["format_version"] = 999
    (t / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelDirError, match="format version 999"):
        load(t)


def test_signed_dir_with_key(small_model, tmp_path, monkeypatch):
    model, _, _ = small_model
    monkeypatch.setenv("OFFRAMP_MODEL_KEY", "secret-1")
    save_model(model, tmp_path / "s")
    load(tmp_path / "s")
    monkeypatch.setenv("OFFRAMP_MODEL_KEY", "secret-2")
    with pytest.raises(ModelDirError, match="signature that does not match"):
        load(tmp_path / "s")
    monkeypatch.delenv("OFFRAMP_MODEL_KEY")
    save_model(model, tmp_path / "u")
    monkeypatch.setenv("OFFRAMP_MODEL_KEY", "secret-1")
    with pytest.raises(ModelDirError, match="not signed"):
        load(tmp_path / "u")


def test_save_refuses_to_clobber_other_dirs(small_model, tmp_path):
    model, _, _ = small_model
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ModelDirError, match="not an offramp model directory"):
        save_model(model, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    save_model(model, tmp_path / "again")
    save_model(model, tmp_path / "again")  # replacing a model directory is fine
    assert load(tmp_path / "again").classes_.tolist() == model.classes_.tolist()


def test_selection_is_deterministic(inbox_sample):
    ds = read_dataset(inbox_sample[0])
    a = select_model(ds.texts, ds.labels, fast_candidates(len(ds.texts))[:3], time_limit=60, seed=7)
    b = select_model(ds.texts, ds.labels, fast_candidates(len(ds.texts))[:3], time_limit=60, seed=7)
    assert a.winner == b.winner
    assert [r.cv_macro_f1 for r in a.results] == [r.cv_macro_f1 for r in b.results]
    assert np.array_equal(a.model.coef_, b.model.coef_)


def test_time_limit_skips_but_always_scores_one(inbox_sample):
    ds = read_dataset(inbox_sample[0])
    sel = select_model(ds.texts, ds.labels, fast_candidates(len(ds.texts)), time_limit=1e-6)
    statuses = [r.status for r in sel.results]
    assert statuses[0] == "scored" and all(s == "skipped: time limit" for s in statuses[1:])


def test_calibration_lowers_ece_on_real_data(small_model):
    model, _, test = small_model
    idx = {c: i for i, c in enumerate(model.classes_)}
    y = np.array([idx[lab] for lab in test.labels])
    scores = model.decision_function(test.texts)
    raw = expected_calibration_error(softmax(scores, 1.0), y)
    cal = expected_calibration_error(softmax(scores, model.temperature_), y)
    assert cal < raw


def test_metrics_keep_predictions_outside_the_label_set():
    from offramp.evaluation.metrics import classification_metrics

    m = classification_metrics(["A", "A", "B", "B"], ["A", "(none)", "B", "(none)"], ["A", "B"])
    assert m["confusion"]["labels"] == ["A", "B", "(none)"]
    assert sum(map(sum, m["confusion"]["matrix"])) == 4  # every message counted
    assert m["macro_f1"] == pytest.approx(2 / 3)  # over the true classes only: F1 of A and B is 2/3 each


def _reference_ngrams(f, text):
    """The (kind, bucket) of every n-gram of one text, computed with plain Python integers: an
    independent statement of the hash the vectorised featurizer must reproduce."""
    from offramp.data.text import normalize
    from offramp.estimators import features as F

    mask = (1 << 64) - 1
    shift = 64 - f.hash_bits

    def mix(h, salt):
        k = ((h ^ F._salt(salt)) * int(F._M1)) & mask
        k ^= k >> int(F._SHIFT)
        return ((k * int(F._M2)) & mask) >> shift

    def poly(chars):
        return sum(ord(c) * pow(F._P, j, 1 << 64) for j, c in enumerate(chars)) & mask

    norm = normalize(text)
    padded = " " + norm + " " if norm else ""
    out = []
    if f.word_ngrams:
        tokens = []
        word = [c.isalnum() or c == "_" for c in padded]
        start = None
        for i, w in enumerate(word + [False]):
            if w and start is None:
                start = i
            elif not w and start is not None:
                tokens.append(poly(padded[start:i]))
                start = None
        lo, hi = f.word_ngrams
        for n in range(lo, hi + 1):
            for j in range(len(tokens) - n + 1):
                h = 0
                for m in range(n):
                    h = (h * int(F._M1) + tokens[j + m]) & mask
                out.append(("w", mix(h, 100 + n)))
    if f.char_ngrams:
        lo, hi = f.char_ngrams
        for n in range(lo, hi + 1):
            for a in range(len(padded) - n + 1):
                out.append(("c", mix(poly(padded[a : a + n]), n)))
    return sorted(out)


def test_featurizer_hashing_matches_a_plain_python_reference(monkeypatch):
    """One hashing implementation serves fitting and transforming; it must find exactly the n-grams
    a plain statement of the hash finds, text by text, whether a batch is hashed in one pass or in
    slices (big batches), and with no n-gram across two neighbouring texts."""
    from offramp.data.io import read_dataset
    from offramp.demo.data import demo_paths
    from offramp.estimators import features as F

    texts = read_dataset(demo_paths()[1]).texts[:60] + ["", "a", "Переведи это", "🙂 ok", "x  y", "snake_case_word"]
    for words, chars in [((1, 2), (1, 4)), ((1, 3), (2, 5)), ((2, 2), None), (None, (3, 3))]:
        f = NgramFeaturizer(word_ngrams=words, char_ngrams=chars, min_df=1).fit(texts)
        size = 1 << f.hash_bits
        rows, buckets, n_word = f._hashed(texts)
        kinds = np.array(["w"] * n_word + ["c"] * (len(buckets) - n_word))
        for text in texts[::7] + texts[-6:]:
            k = texts.index(text)
            mine = sorted(
                (str(kd), int(b) - (size if kd == "c" else 0)) for kd, b, r in zip(kinds, buckets, rows) if r == k
            )
            assert mine == _reference_ngrams(f, text), (words, chars, text[:40])
        # in slices of a few texts: the same n-grams, and the same fitted state
        monkeypatch.setattr(F, "_ONE_PASS_MAX", 200)
        r2, b2, n2 = f._hashed_all(texts)
        assert n2 == n_word
        assert np.array_equal(
            np.sort(rows[:n_word] * 2 * size + buckets[:n_word]), np.sort(r2[:n2] * 2 * size + b2[:n2])
        )
        assert np.array_equal(
            np.sort(rows[n_word:] * 2 * size + buckets[n_word:]), np.sort(r2[n2:] * 2 * size + b2[n2:])
        )
        g = NgramFeaturizer(word_ngrams=words, char_ngrams=chars, min_df=1).fit(texts)
        for name, arr in f.get_state().items():
            assert np.array_equal(arr, g.get_state()[name]), name
        assert (f.transform(texts) != g.transform(texts)).nnz == 0
        monkeypatch.undo()


def test_roc_auc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    from offramp.estimators.rejection import roc_auc

    rng = np.random.default_rng(0)
    for _ in range(5):
        pos, neg = rng.integers(0, 6, 40).astype(float), rng.integers(0, 8, 30).astype(float)
        expected = roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[pos, neg])
        assert abs(roc_auc(pos, neg) - expected) < 1e-12
    assert np.isnan(roc_auc(np.array([1.0]), np.array([])))


def test_familiarity_weight_is_used_only_when_it_separates_better():
    from offramp.estimators.rejection import RejectTarget, fit_rejection

    rng = np.random.default_rng(1)
    n_in, n_oos = 400, 100
    classes = np.array(["a", "b"])
    # confident on everything, including the out-of-scope messages: confidence alone cannot tell them apart
    conf = np.r_[rng.uniform(0.7, 1.0, n_in), rng.uniform(0.7, 1.0, n_oos)]
    proba = np.c_[conf, 1 - conf]
    y = np.r_[np.full(n_in, "a"), np.full(n_oos, "oos")]
    near = np.r_[rng.uniform(0.6, 0.9, n_in), rng.uniform(0.1, 0.5, n_oos)]  # in-scope messages sit near training data
    target = RejectTarget.parse("oos_recall>=0.9")
    with_near = fit_rejection(proba, classes, y, target, "oos", familiarity=near)
    assert with_near.familiarity_weight > 0 and with_near.met
    plain = fit_rejection(proba, classes, y, target, "oos")
    assert plain.familiarity_weight == 0 and plain.familiarity_auc is None
    # at the same out-of-scope recall, nearness keeps far more in-scope answers
    assert with_near.held_out.in_scope_accuracy > plain.held_out.in_scope_accuracy + 0.3
    # an uninformative similarity is not used
    noise = fit_rejection(proba, classes, y, target, "oos", familiarity=rng.uniform(0, 1, n_in + n_oos))
    assert noise.familiarity_weight == 0
    # (with this seed the noise would have nudged the combined AUC up: 0.475 -> 0.485 at weight 4)
    assert noise.familiarity_auc["4"] > noise.familiarity_auc["0"] + 0.002


def test_many_rows_search_a_sample_and_refit_on_every_row(tmp_path):
    """Above search_rows, the candidates see a stratified sample and the winner is refitted by
    streaming chunks over every row; the held-out slice decides which weights are kept."""
    from offramp.data.io import read_dataset
    from offramp.demo.data import demo_paths
    from offramp.training.large import stratified_sample

    ds = read_dataset(demo_paths()[0])
    texts = [f"{t} #{i % 97}" for i, t in enumerate(ds.texts * 3)]
    labels = list(ds.labels) * 3
    model, rep = train(texts, labels, quality="fast", time_limit=None, search_rows=1500)
    assert rep.search_rows is not None and 1400 <= rep.search_rows <= 1700
    r = rep.refit
    assert r is not None and r.kept in ("refit", "sample") and r.epochs == 3
    assert r.rows + r.holdout_rows == len(texts)
    assert getattr(r, "holdout_macro_f1_" + r.kept) == max(r.holdout_macro_f1_sample, r.holdout_macro_f1_refit)
    assert r.holdout_macro_f1_refit > 0.7  # the streamed refit learned the task
    model.save(tmp_path / "m")
    again = load(tmp_path / "m")
    test = read_dataset(demo_paths()[1])
    assert list(again.predict(test.texts[:50])) == list(model.predict(test.texts[:50]))
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["search_rows"] == rep.search_rows and metrics["refit"]["kept"] == r.kept
    # the sample keeps every label, even one with three rows
    y = np.array(["a"] * 1000 + ["b"] * 3)
    picked = stratified_sample(y, 100, seed=0)
    assert (y[picked] == "b").sum() == 3 and 95 <= len(picked) <= 105


def test_few_rows_train_as_before_without_refit():
    _, rep = train(["reset my pin", "thanks a lot", "pin reset please", "thank you!"] * 5,
                   ["S", "G", "S", "G"] * 5, quality="fast", time_limit=None)  # fmt: skip
    assert rep.search_rows is None and rep.refit is None and "refit" not in rep.metrics()


def test_the_time_limited_sample_size_is_one_of_a_few_steps(monkeypatch):
    """The pilot's timing jitters from run to run; the sample it sizes must not follow the jitter
    (same data, same seed, same machine: the same sample)."""
    import offramp.training.train as tr
    from offramp.training.search import fast_candidates

    rng = np.random.default_rng(0)
    labels = np.asarray([f"L{i % 150}" for i in range(18_000)], dtype=object)
    texts = [f"word{rng.integers(0, 500)} w{i % 150} thing" for i in range(18_000)]
    first = fast_candidates(len(texts), 0)[0]

    def size_for(pilot_seconds: float) -> int:
        # features built in no time; two fits, the second one slower (a stall): the faster counts
        ticks = iter([0.0, 0.0, 0.0, pilot_seconds, 0.0, 2 * pilot_seconds])
        monkeypatch.setattr(tr.time, "perf_counter", lambda: next(ticks))
        try:
            return tr._search_size(texts, labels, first, 30.0, 0)
        finally:
            monkeypatch.undo()

    def pilot(rows: int) -> float:  # the pilot's seconds that make the raw estimate ``rows``
        return 0.4 * 30.0 / (2.5 * rows * 150) * tr.PILOT_ROWS * 150

    assert size_for(pilot(7_000)) == size_for(pilot(7_000) * 1.05) == 5_656  # 7,000 and 6,667 rows
    assert size_for(pilot(11_900)) == len(texts)  # over half the rows: every row


def test_reject_target_holds_for_a_lower_confidence_bound():
    """A held-out figure is a sample: by default the target must hold for its one-sided 95% lower
    bound (Wilson), so 100 held-out out-of-scope messages need 83 rejected for oos_recall>=0.75."""
    from scipy.stats import binomtest

    from offramp.errors import UsageError
    from offramp.estimators.rejection import RejectTarget, fit_rejection

    rng = np.random.default_rng(3)
    n_in, n_oos = 900, 100
    classes = np.array(["a", "b"])
    conf = np.r_[rng.uniform(0.5, 1.0, n_in), rng.uniform(0.5, 0.9, n_oos)]
    y = np.r_[np.full(n_in, "a"), np.full(n_oos, "oos")]
    proba = np.c_[conf, 1 - conf]
    target = RejectTarget.parse("oos_recall>=0.75")
    assert target.confidence == 0.95 and str(target) == "oos_recall>=0.75 at 95% confidence"
    assert RejectTarget.parse(str(target)) == target  # as stored with a model, read back by retrain
    bounded = fit_rejection(proba, classes, y, target, "oos")
    plain = fit_rejection(proba, classes, y, RejectTarget.parse("oos_recall>=0.75", 0), "oos")
    assert plain.target == "oos_recall>=0.75" and plain.held_out.oos_recall == 0.75
    assert bounded.met and bounded.held_out.oos_recall == 0.83  # the smallest share whose bound reaches 0.75
    assert bounded.threshold > plain.threshold
    # the bound is Wilson's: one-sided 95% = the lower end of the two-sided 90% interval
    ref = binomtest(83, 100).proportion_ci(confidence_level=0.90, method="wilson").low
    assert abs(bounded.held_out.lower_bound - ref) < 1e-9 and ref >= 0.75
    assert binomtest(82, 100).proportion_ci(confidence_level=0.90, method="wilson").low < 0.75
    # precision targets count the answered messages: a level of 90% asks less than 95%
    prec95 = fit_rejection(proba, classes, y, RejectTarget.parse("in_scope_precision>=0.95"), "oos")
    prec90 = fit_rejection(proba, classes, y, RejectTarget.parse("in_scope_precision>=0.95 at 90% confidence"), "oos")
    assert prec95.held_out.lower_bound >= 0.95 and prec90.held_out.lower_bound >= 0.95
    assert prec95.held_out.coverage <= prec90.held_out.coverage
    with pytest.raises(UsageError, match="not 0 or between 0.5 and 1"):
        RejectTarget.parse("oos_recall>=0.75", 0.3)
    # a level written in the target is kept; a different one asked beside it is refused, not overridden
    assert RejectTarget.parse("oos_recall>=0.75 at 90% confidence").confidence == 0.9
    assert RejectTarget.parse("oos_recall>=0.75 at 90% confidence", 0.9).confidence == 0.9
    with pytest.raises(UsageError, match="give the level once"):
        RejectTarget.parse("oos_recall>=0.75 at 90% confidence", 0.95)


def test_reject_confidence_flag(inbox_sample, tmp_path):
    r = run_cli(
        "train", str(inbox_sample[0]), "--out", str(tmp_path / "m"), "--quality", "fast",
        "--reject-target", "in_scope_precision>=0.9", "--reject-confidence", "1.5",
    )  # fmt: skip
    assert r.returncode == 2 and "not 0 or between 0.5 and 1" in r.stderr
    r = run_cli(
        "train", str(inbox_sample[0]), "--out", str(tmp_path / "m"), "--quality", "fast",
        "--reject-target", "in_scope_precision>=0.9", "--reject-confidence", "0.9", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rej = json.loads(r.stdout)["rejection"]
    assert rej["target"] == "in_scope_precision>=0.9 at 90% confidence" and rej["confidence"] == 0.9
    assert rej["held_out"]["lower_bound"] >= 0.9 and "lower bound of that figure" in (
        tmp_path / "m" / "MODEL_CARD.md"
    ).read_text(encoding="utf-8")
    # the level written in the target is not overridden by the flag's default
    r = run_cli(
        "train", str(inbox_sample[0]), "--out", str(tmp_path / "m2"), "--quality", "fast",
        "--reject-target", "in_scope_precision>=0.9 at 90% confidence", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rejection"]["confidence"] == 0.9
