"""The report's cascade view: small model alone, LLM alone, and the cascade of both."""

import numpy as np

from offramp.evaluation.cascade import cascade_view, share_threshold

from helpers import run_cli, write_csv


def test_share_threshold_uses_no_labels():
    conf = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert share_threshold(conf, 0.2) == 0.3  # 0.1 and 0.2 go to the LLM
    assert share_threshold(conf, 0.0) == 0.0
    assert (conf < share_threshold(conf, 1.0)).all()


def test_the_cascade_takes_the_llm_where_the_small_model_is_unsure():
    y = ["A", "A", "B", "B"]
    small = ["A", "B", "B", "B"]  # wrong on the second, and unsure there
    conf = [0.99, 0.40, 0.95, 0.97]
    llm = ["A", "A", "A", None]  # no prediction for the last: left out
    view = cascade_view(
        y, small, conf, llm, threshold=0.5, small_usd_per_month=10.0, llm_usd_per_message=0.001, messages_per_month=1000
    )
    rows = {r["name"]: r for r in view["rows"]}
    assert view["n"] == 3
    assert rows["cascade"]["accuracy"] == 1.0 and rows["small model alone"]["accuracy"] == 2 / 3
    assert rows["LLM alone"]["accuracy"] == 2 / 3
    assert abs(rows["cascade"]["local_share"] - 2 / 3) < 1e-9
    assert rows["LLM alone"]["usd_per_month"] == 1.0
    assert abs(rows["cascade"]["usd_per_month"] - (10.0 + 1 / 3)) < 1e-9
    # the don't-know answer always goes to the LLM
    refused = cascade_view(["A", "B"], ["UNKNOWN", "B"], [0.99, 0.99], ["A", "B"], threshold=0.5, refusal="UNKNOWN")
    assert refused["rows"][2]["accuracy"] == 1.0 and refused["rows"][2]["local_share"] == 0.5


def test_report_shows_the_cascade(fast_model, inbox_sample, tmp_path):
    import csv

    with open(inbox_sample[1], newline="", encoding="utf-8") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    preds = write_csv(
        tmp_path / "llm.csv", [(t, lab, "gold-llm") for t, lab in rows], header=("text", "prediction", "model")
    )
    r = run_cli(
        "report",
        str(fast_model),
        str(inbox_sample[1]),
        "--llm-predictions",
        str(preds),
        "--out",
        str(tmp_path / "r.html"),
        "--route-threshold",
        "0.9",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert "the whole system: cascade" in r.stdout
    md = (tmp_path / "r.md").read_text()
    assert "## The whole system: cascade" in md and "| cascade | " in md
    html = (tmp_path / "r.html").read_text()
    assert "The whole system: cascade" in html
    # a perfect LLM behind the small model: the cascade is at least as good as the small model alone
    line = [x for x in md.splitlines() if x.startswith("| cascade |")][0]
    alone = [x for x in md.splitlines() if x.startswith("| small model alone |")][0]
    assert float(line.split("|")[2]) >= float(alone.split("|")[2])
