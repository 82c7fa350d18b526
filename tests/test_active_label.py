"""label --budget N: exactly N distinct texts are sent, a clustered warm start then rounds of random
and class-balanced uncertain picks; reruns come from the cache; bad budgets get one line. (Whether
the selection beats random draws is measured in benchmarks/active_label.py.)"""

import json

import numpy as np
import pytest

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths, demo_task
from offramp.errors import UsageError
from offramp.llm.active import _features, _margins, select_and_label

from helpers import run_cli, write_csv
from misbehaving_llm import GoldLLM


@pytest.fixture(scope="module")
def inbox():
    d = read_dataset(demo_paths()[0])
    return d.texts[:1200], d.labels[:1200]


def test_exactly_the_budget_is_sent_with_no_text_twice(inbox):
    texts, labels = inbox
    gold = dict(zip(texts, labels))
    asked: list[str] = []

    def oracle(batch):
        asked.extend(batch)
        return [gold[t] for t in batch]

    res = select_and_label(texts, 150, oracle, seed=1)
    assert len(asked) == 150 == len(set(asked)) == len(res.picked)
    assert res.rounds[0] == 37 and sum(res.rounds) == 150 and len(res.rounds) > 2  # warm start: a quarter
    again = select_and_label(texts, 150, lambda b: [gold[t] for t in b], seed=1)
    assert again.picked == res.picked  # the seed fixes the warm start and so every round


_ROUNDS: dict[float, tuple] = {}


def _round_two(inbox, explore):
    if explore not in _ROUNDS:
        _ROUNDS[explore] = _select_two_rounds(inbox, explore)
    return _ROUNDS[explore]


def _select_two_rounds(inbox, explore):
    texts, labels = inbox
    gold = dict(zip(texts, labels))
    res = select_and_label(
        texts, 60, lambda b: [gold[t] for t in b], seed=0, warm_start=30, round_size=30, explore=explore
    )
    first = {t: i for i, t in reversed(list(enumerate(texts)))}
    cand = sorted(first.values())
    pos = {c: j for j, c in enumerate(cand)}
    X = _features([texts[i] for i in cand])
    warm, second = res.picked[:30], res.picked[30:]
    pool = [c for c in cand if c not in set(warm)]
    m, predicted = _margins(X, [pos[i] for i in warm], [labels[i] for i in warm], np.asarray([pos[c] for c in pool]), 0)
    return warm, second, dict(zip(pool, m)), dict(zip(pool, predicted)), m, predicted


def test_the_warm_start_covers_the_labels(inbox):
    warm, *_ = _round_two(inbox, 0.5)
    assert {inbox[1][i] for i in warm} == set(inbox[1])  # 30 cluster centres reach all 4 labels


def test_a_round_takes_the_least_certain_texts_of_every_predicted_label(inbox):
    _, second, by, pred, m, predicted = _round_two(inbox, 0.0)
    # spread over the labels the warm model predicts, not piled on the most confusable pair
    assert {pred[i] for i in second} == set(predicted.tolist())
    for i in second:  # and each among the least certain of its predicted label
        same = m[predicted == pred[i]]
        assert by[i] <= np.quantile(same, 1 / 3), (pred[i], by[i])  # near-duplicates skipped: not always the very least


def test_exploration_draws_part_of_each_round_at_random(inbox):
    _, second, by, _, m, _ = _round_two(inbox, 1.0)
    cut = np.quantile(m, 0.1)
    assert sum(by[i] <= cut for i in second) < 15  # a random draw, not the least certain tenth
    _, second, by, _, m, _ = _round_two(inbox, 0.5)
    assert 15 <= len(second) == 30


def test_a_budget_larger_than_the_data_is_refused(inbox):
    texts, _ = inbox
    with pytest.raises(UsageError, match="larger than the data"):
        select_and_label(texts[:10], 11, lambda b: ["OTHER"] * len(b))


def test_label_budget_end_to_end_with_the_cache(inbox, tmp_path):
    texts, labels = inbox
    data = write_csv(tmp_path / "in.csv", [(t, "") for t in texts[:400]])
    llm = GoldLLM(dict(zip(texts, labels)))
    try:
        args = ["label", str(data), "--llm", "m", "--base-url", llm.url + "/v1", "--task", str(demo_task()),
                "--cache", str(tmp_path / "c.sqlite"), "--budget", "60", "--seed", "3", "--no-logprobs"]  # fmt: skip
        r = run_cli(*args, "--out", str(tmp_path / "a.jsonl"))
        assert r.returncode == 0, r.stderr
        rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
        sent = {json.dumps(q["body"]["messages"][-1]["content"]) for q in llm.requests}
        assert len(rows) == 60 == len({r["text"] for r in rows}) == len(sent) == len(llm.requests)
        assert all(r["status"] == "labelled" for r in rows)
        n = len(llm.requests)
        r = run_cli(*args, "--out", str(tmp_path / "b.jsonl"))
        assert r.returncode == 0 and len(llm.requests) == n and "0 calls sent" in r.stdout  # all from the cache
        again = [json.loads(x)["text"] for x in (tmp_path / "b.jsonl").read_text().splitlines()]
        assert again == [r["text"] for r in rows]
        r = run_cli(*args[:-5], "--budget", "401", "--out", str(tmp_path / "c.jsonl"))
        assert r.returncode == 2 and "between 1 and the number of distinct texts" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        llm.close()
