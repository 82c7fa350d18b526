"""check-labels: confident learning on out-of-fold probabilities, checked against cleanlab itself,
on data with labels flipped on purpose; duplicates with different labels; train --drop-suspects."""

import csv
import json
import random

import numpy as np
import pytest
from cleanlab.filter import find_label_issues

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths
from offramp.errors import UsageError
from offramp.training.noise import conflicting_duplicates, label_issues

from helpers import run_cli, write_csv


def _probs(rng, n, k, sharp):
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    logits = rng.normal(size=(n, k)) * sharp
    logits[np.arange(n), y] += rng.uniform(0, 3)
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(40))
def test_flags_exactly_the_rows_cleanlab_flags_in_the_same_order(seed):
    rng = np.random.default_rng(seed)
    y, p = _probs(rng, int(rng.integers(20, 500)), int(rng.integers(2, 9)), float(rng.uniform(0.5, 4)))
    ours, _, _ = label_issues(y, p)
    ranked = find_label_issues(y, p, filter_by="confident_learning", return_indices_ranked_by="self_confidence")
    theirs = np.zeros(len(y), dtype=bool)
    theirs[ranked] = True
    assert (ours == theirs).all()
    rows = np.flatnonzero(ours)
    assert list(rows[np.lexsort((rows, p[rows, y[rows]]))]) == list(ranked)


def test_a_class_no_row_carries_and_a_clean_set_flag_nothing_wrongly():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.3, 0.7, 0.0]])
    mask, guess, t = label_issues(y, p)
    assert not mask.any() and t[2] == 2.0 and list(guess) == [0, -1, 1, -1]  # below every threshold: not counted


def test_duplicates_exact_and_near_with_different_labels_only():
    texts = ["Reset my PIN", "reset my pin", "thanks a lot!", "thanks a lot!!", "hello there", "hello there"]
    labels = ["SUPPORT", "OTHER", "GRATITUDE", "OTHER", "OTHER", "OTHER"]
    dups, _ = conflicting_duplicates(texts, labels)
    kinds = {(d.kind, tuple(d.rows)) for d in dups}
    assert ("exact", (0, 1)) in kinds and ("near", (2, 3)) in kinds
    assert not any(4 in d.rows for d in dups)  # same text, same label: not a conflict


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """800 messages of the demo's training split, 8% of their labels flipped at random, behind an
    empty-text row (so 0-based data rows and text positions differ)."""
    d = read_dataset(demo_paths()[0])
    rng = random.Random(3)
    idx = rng.sample(range(len(d.texts)), 800)
    labs = sorted(set(d.labels))
    rows, flipped = [("", "OTHER")], set()
    for j, i in enumerate(idx):
        y = d.labels[i]
        if rng.random() < 0.08:
            y = rng.choice([lab for lab in labs if lab != y])
            flipped.add(j + 1)
        rows.append((d.texts[i], y))
    path = write_csv(tmp_path_factory.mktemp("noise") / "noisy.csv", rows)
    return path, rows, flipped


def test_check_labels_finds_flipped_labels_and_names_their_rows(noisy, tmp_path):
    path, rows, flipped = noisy
    out = tmp_path / "suspects.csv"
    r = run_cli("check-labels", str(path), "--json", "--out", str(out), "--seed", "0", "-q")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    sus = doc["suspects"]
    assert set(sus[0]) == {"row", "text", "given", "suggested", "score"}
    assert [s["score"] for s in sus] == sorted((s["score"] for s in sus), reverse=True)
    for s in sus:  # the row is the file's 0-based data row: its text and given label are there
        assert rows[s["row"]] == (s["text"], s["given"]) and s["suggested"] != s["given"]
    top = [s["row"] for s in sus[: len(flipped) // 2]]
    assert sum(r in flipped for r in top) / len(top) >= 0.8  # precision at the top
    assert sum(s["row"] in flipped for s in sus) / len(flipped) >= 0.5  # recall
    with open(out, newline="", encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    assert [int(w["row"]) for w in written] == [s["row"] for s in sus]
    assert list(written[0]) == ["row", "text", "given", "suggested", "score"]


def test_train_drop_suspects_leaves_out_exactly_the_listed_rows(noisy, tmp_path):
    path, rows, flipped = noisy
    check = json.loads(run_cli("check-labels", str(path), "--json", "--near", "1", "-q").stdout)
    r = run_cli(
        "train", str(path), "--out", str(tmp_path / "m"), "--quality", "fast", "--drop-suspects", "--json", "-q"
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["dropped_suspects"] == sorted(s["row"] for s in check["suspects"])
    assert doc["n_train"] == len(rows) - 1 - len(doc["dropped_suspects"])


def test_drop_suspects_into_a_registry_names_the_file_rows(noisy, tmp_path):
    """With a registry's gate set held out of the file, the dropped rows are still the file's own
    0-based data rows (their texts are in the file there, and are mostly the flipped ones)."""
    path, rows, flipped = noisy
    r = run_cli(
        "train", str(path), "--registry", str(tmp_path / "reg"), "--quality", "fast", "--drop-suspects", "--json", "-q"
    )
    assert r.returncode == 0, r.stderr
    dropped = json.loads(r.stdout)["dropped_suspects"]
    assert dropped and all(0 < d < len(rows) for d in dropped)
    assert sum(d in flipped for d in dropped) / len(dropped) >= 0.6


def test_check_labels_bad_inputs_get_one_line(tmp_path):
    nolabel = write_csv(tmp_path / "t.csv", [("a",), ("b",)], header=("text",))
    r = run_cli("check-labels", str(nolabel))
    assert r.returncode == 2 and "no label column 'label'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    one = write_csv(tmp_path / "one.csv", [("a", "X"), ("b", "X"), ("c", "Y")])
    r = run_cli("check-labels", str(one))
    assert r.returncode == 2 and "fewer than 2 rows" in r.stderr and "Y" in r.stderr
    r = run_cli("check-labels", str(one), "--out", str(tmp_path / "s.txt"))
    assert r.returncode == 2 and "must end in .csv" in r.stderr
    r = run_cli("check-labels", str(one), "--near", "0.1")  # every pair of texts would be "near"
    assert r.returncode == 2 and "--near" in r.stderr
    with pytest.raises(UsageError, match="between 0.5 and 1"):
        conflicting_duplicates(["a", "b"], ["X", "Y"], near=0.0)
