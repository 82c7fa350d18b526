"""Teacher and student: a student trained on a noisy teacher's labels, scored beside it on gold."""

import json
import random

import pytest

from offramp.data.io import Dataset, read_dataset
from offramp.demo.data import demo_paths
from offramp.errors import DataError
from offramp.evaluation.distill import teacher_student
from offramp.evaluation.results import metrics_report


@pytest.fixture(scope="module")
def split():
    tr, te, _ = demo_paths()
    a, b = read_dataset(tr), read_dataset(te)
    return Dataset(a.texts[:900], a.labels[:900], str(tr)), Dataset(b.texts[:400], b.labels[:400], str(te))


def _noisy(labels, share, seed):
    rng = random.Random(seed)
    classes = sorted(set(labels))
    return [rng.choice([c for c in classes if c != y]) if rng.random() < share else y for y in labels]


def test_a_student_of_a_noisy_teacher_beats_it_and_the_rows_say_so(split, tmp_path):
    train, test = split
    texts = train.texts[:600]
    taught = _noisy(train.labels[:600], 0.2, 0)
    path = tmp_path / "teacher.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"text": t, "label": y, "status": "labelled", "model": "t", "latency_ms": 500.0})
            for t, y in zip(texts, taught)
        )
        + "\n"
        + json.dumps({"text": "never answered", "label": "", "status": "unlabelled"})
        + "\n"
    )
    teacher_test = metrics_report(test.labels, _noisy(test.labels, 0.2, 1), model="t")  # 80% right, like its labels
    d = teacher_student(train, test, path, teacher_test, quality="fast")
    names = [r.name for r in d.rows]
    assert names == ["teacher: t", "student", "student, suspects dropped", "same texts, gold labels"]
    teacher, student, cleaned, gold = d.rows
    assert student.n_train == 600 and cleaned.n_train == 600 - d.suspects_dropped and d.suspects_dropped > 0
    assert student.macro_f1 > teacher.macro_f1  # the student averages out its teacher's random mistakes
    assert gold.macro_f1 >= student.macro_f1 - 0.01
    assert abs(d.teacher_train_accuracy - sum(a == b for a, b in zip(taught, train.labels)) / 600) < 1e-9
    assert d.labelling_seconds == pytest.approx(300.0) and "600 training texts" in d.caption()
    head, body = d.table()
    assert head[:4] == ["", "trained on", "macro-F1", "accuracy"] and len(body) == 4


def test_rows_can_refit_one_configuration_instead_of_searching(split, tmp_path):
    from offramp.estimators.tfidf import TfidfLinear

    train, test = split
    path = tmp_path / "teacher.jsonl"
    taught = _noisy(train.labels[:300], 0.2, 0)
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(train.texts[:300], taught)))
    like = TfidfLinear(word_ngrams=(1, 1), char_ngrams=None, C=0.3)
    d = teacher_student(train, test, path, metrics_report(test.labels, test.labels), like=like,
                        like_name="svm-w1-C0.3")  # fmt: skip
    assert d.trained_like == "svm-w1-C0.3" and "refits the main model's configuration (svm-w1-C0.3)" in d.caption()
    # the student row is exactly a refit of that configuration on the teacher's labels
    m = TfidfLinear(word_ngrams=(1, 1), char_ngrams=None, C=0.3).fit(train.texts[:300], taught)
    want = metrics_report(test.labels, [str(p) for p in m.predict(test.texts)])
    assert d.rows[1].macro_f1 == pytest.approx(want.macro_f1) and not hasattr(like, "coef_")


def test_teacher_labels_of_texts_outside_the_training_split_are_refused(split, tmp_path):
    train, test = split
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "a text nobody wrote", "label": "OTHER"}) + "\n")
    with pytest.raises(DataError, match="not in the training split"):
        teacher_student(train, test, path, metrics_report(test.labels, test.labels), quality="fast")
