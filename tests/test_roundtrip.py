"""Data comes out as it went in: every file offramp writes as data reads back byte for byte, in
every format, through import-logs -> train -> predict -> pool export -> retrain; spreadsheet
safety only where it is asked for."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offramp.capture.pool import Pool, export_pool
from offramp.data.io import read_dataset, read_records, write_records
from offramp.privacy.guard import PrivacyGuard
from offramp.registry.versions import Registry

from helpers import read_pairs, run_cli

FORMATS = (".csv", ".tsv", ".jsonl", ".parquet")
# what a text may start (or end) with that a careless writer or reader changes
TRICKY = [
    "=",
    "+",
    "-",
    "@",
    "\t",
    "\r",
    '"',
    "'",
    "\n",
    "\u2028",
    "\u0085",
    "\x07",
    "\x00",
    "\ufeff",
    "😀",
    " ",
    "\r\n",
]
LABELS = {"SUPPORT": '=HYPERLINK("x")', "GRATITUDE": "+thanks", "TRY_TO_HACK": "-1", "OTHER": "@other 😀\u2028x"}

cells = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(TRICKY), cells, st.sampled_from(TRICKY + [""]), st.sampled_from(sorted(LABELS.values()))
        ),
        min_size=1,
        max_size=12,
    ),
    fmt=st.sampled_from(FORMATS),
)
def test_written_records_read_back_exactly(tmp_path_factory, rows, fmt):
    path = tmp_path_factory.mktemp("rt") / f"d{fmt}"
    texts = [a + b + c for a, b, c, _ in rows]
    texts = [t if t.strip() else t + "x" for t in texts]  # a blank text is no row
    labels = [lab for *_, lab in rows]
    write_records(path, [{"text": t, "label": lab, "id": f"-{i}"} for i, (t, lab) in enumerate(zip(texts, labels))])
    ds = read_dataset(path)
    assert ds.texts == texts and ds.labels == labels and not ds.warnings
    _, records = read_records(path)
    assert [r["id"] for r in records] == [f"-{i}" for i in range(len(texts))]


def test_spreadsheet_safety_only_when_asked(tmp_path):
    write_records(tmp_path / "a.csv", [{"text": "=1+1", "label": "-1"}], spreadsheet_safe=True)
    assert read_dataset(tmp_path / "a.csv").texts == ["'=1+1"]  # for people: neutralised (the data changes)
    write_records(tmp_path / "b.csv", [{"text": "=1+1", "label": "-1"}])
    assert read_dataset(tmp_path / "b.csv").texts == ["=1+1"]


@pytest.fixture(scope="module")
def tricky(inbox_sample):
    """(text, label) pairs of the inbox sample with tricky starts and ends and tricky labels; only
    texts the privacy guard leaves alone (so masking, which is meant to change text, does not)."""
    guard = PrivacyGuard()
    rows = []
    for i, (t, lab) in enumerate(read_pairs(inbox_sample[0])):
        text = TRICKY[i % len(TRICKY)] + t + TRICKY[(i * 7) % len(TRICKY)]
        if guard(text) == text:
            rows.append((text, LABELS[lab]))
    assert len(rows) > 300
    return rows


def _log(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for t, lab in rows:
            rec = {
                "request": {
                    "model": "m",
                    "messages": [{"role": "system", "content": "Classify."}, {"role": "user", "content": t}],
                },
                "response": {"choices": [{"message": {"role": "assistant", "content": lab}}]},
            }
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")  # U+2028 and U+0085 stay raw in the strings
    return path


def test_the_loop_keeps_every_byte(tricky, tmp_path):
    texts, labels = [t for t, _ in tricky], [lab for _, lab in tricky]
    log = _log(tmp_path / "log.jsonl", tricky)
    # import-logs, in every format
    for fmt in FORMATS:
        r = run_cli("import-logs", str(log), "-o", str(tmp_path / f"imported{fmt}"), "-q")
        assert r.returncode == 0, r.stderr
        ds = read_dataset(tmp_path / f"imported{fmt}")
        assert ds.texts == texts and ds.labels == labels, fmt
    # train on it; predict with a kept id column, in every format
    r = run_cli("train", str(tmp_path / "imported.csv"), "--out", str(tmp_path / "m"), "--quality", "fast", "-q")
    assert r.returncode == 0, r.stderr
    ids = ["-5", "+4915112345678", "=1+1", "@x", "007", "'q", " 3 "]
    inputs = [{"id": ids[i % len(ids)], "text": t} for i, t in enumerate(texts)]
    write_records(tmp_path / "in.csv", inputs)
    for fmt in FORMATS:
        out = tmp_path / f"pred{fmt}"
        r = run_cli(
            "predict", str(tmp_path / "m"), str(tmp_path / "in.csv"), "--out", str(out), "--keep-columns", "id", "-q"
        )
        assert r.returncode == 0, r.stderr
        _, got = read_records(out)
        assert [g["id"] for g in got] == [x["id"] for x in inputs], fmt
        assert {g["label"] for g in got} <= set(LABELS.values())
    # the capture pool keeps them, pool export writes them back, in every format
    pool = Pool(tmp_path / "pool.sqlite", PrivacyGuard())
    for i, (t, lab) in enumerate(tricky):
        pool.add("feedback", t, lab, request_id=f"r{i}")
    pool.close()
    for fmt in FORMATS:
        export_pool(tmp_path / "pool.sqlite", tmp_path / f"pool{fmt}")
        ds = read_dataset(tmp_path / f"pool{fmt}")
        assert ds.texts == texts and ds.labels == labels, fmt
    # a registry retrained on the export stores exactly those rows
    half = len(texts) // 2
    write_records(tmp_path / "first.jsonl", [{"text": t, "label": lab} for t, lab in tricky[:half]])
    r = run_cli("train", str(tmp_path / "first.jsonl"), "--registry", str(tmp_path / "reg"), "--quality", "fast", "-q")
    assert r.returncode == 0, r.stderr
    r = run_cli("registry", "retrain", str(tmp_path / "reg"), str(tmp_path / "pool.parquet"), "--json", "-q")
    assert r.returncode in (0, 4), r.stderr
    reg = Registry(tmp_path / "reg")
    stored_texts, stored_labels = reg.training_set(json.loads(r.stdout)["candidate"])
    gate_texts, _ = reg.gate_set()
    kept = [(t, lab) for t, lab in tricky if t not in set(gate_texts)]  # gate-set messages are never trained on
    assert set(zip(stored_texts, stored_labels)) >= set(kept)
    assert set(stored_texts) <= set(texts) and set(stored_labels) <= set(LABELS.values())  # nothing altered


def test_data_commands_neutralise_only_with_spreadsheet_safe(tmp_path, fast_model):
    rows = [
        {"text": "=SUM(A1) please reset my pin", "label": "SUPPORT"},
        {"text": "@team thanks!", "label": "GRATITUDE"},
    ]
    write_records(tmp_path / "d.csv", rows)
    r = run_cli("mask", str(tmp_path / "d.csv"), "-o", str(tmp_path / "m.csv"))
    assert r.returncode == 0 and read_dataset(tmp_path / "m.csv").texts == [x["text"] for x in rows]
    r = run_cli("mask", str(tmp_path / "d.csv"), "-o", str(tmp_path / "s.csv"), "--spreadsheet-safe")
    assert r.returncode == 0 and all(t.startswith("'") for t in read_dataset(tmp_path / "s.csv").texts)
    r = run_cli("mask", str(tmp_path / "d.csv"), "-o", str(tmp_path / "r.csv"), "--raw-csv")
    assert r.returncode == 0 and "--raw-csv is no longer needed" in r.stderr
    assert r.stderr.count("--raw-csv") == 1 and read_dataset(tmp_path / "r.csv").texts == [x["text"] for x in rows]


def test_streamed_jsonl_with_bom_surrogates_and_crlf(tmp_path, fast_model):
    lines = [
        '{"text": "reset my pin", "id": 1}',
        '{"text": "bad \\ud800 half", "id": 2}',
        '{"text": "thanks\u2028a lot", "id": 3}',
    ]
    (tmp_path / "in.jsonl").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    r = run_cli(
        "predict",
        str(fast_model),
        str(tmp_path / "in.jsonl"),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--keep-columns",
        "id",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    _, got = read_records(tmp_path / "o.jsonl")
    assert [g["id"] for g in got] == [1, 2, 3]  # the first line is read despite the BOM
    r = run_cli("predict", str(fast_model), "-", input="reset my pin\r\nthank you\r\n")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["text"] for x in r.stdout.splitlines()] == ["reset my pin", "thank you"]


def test_the_model_directory_lock_is_not_left_behind(tmp_path, inbox_sample):
    r = run_cli("train", str(inbox_sample[0]), "--out", str(tmp_path / "m"), "--quality", "fast", "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_mask_reports_every_row(tmp_path):
    rows = [{"text": f"write to ann{i}@example.com"} for i in range(4)] + [{"text": "nothing here"}] * 4
    write_records(tmp_path / "d.csv", rows)
    r = run_cli("mask", str(tmp_path / "d.csv"), "-o", str(tmp_path / "m.csv"))
    assert r.returncode == 0, r.stderr
    said = r.stdout + r.stderr
    assert "wrote 8 rows" in said and "(4 with personal data)" in said and "0 of 8" not in said
