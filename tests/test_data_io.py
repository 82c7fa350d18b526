import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from offramp.data.io import Dataset, read_dataset
from offramp.data.validate import check_test_set, check_training_set, text_fingerprints
from offramp.errors import DataError

from helpers import write_csv


def test_reads_csv_jsonl_tsv_parquet_alike(tmp_path):
    rows = [("reset my pin", "SUPPORT"), ("thanks!", "GRATITUDE"), ('a "quoted", text', "OTHER")]
    write_csv(tmp_path / "d.csv", rows)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"text": t, "label": lab}) for t, lab in rows) + "\n")
    (tmp_path / "d.tsv").write_text(
        "text\tlabel\n" + "\n".join(f"{t}\t{lab}" for t, lab in rows[:2]) + "\n" + '"a ""quoted"", text"\tOTHER\n'
    )
    pq.write_table(pa.table({"text": [r[0] for r in rows], "label": [r[1] for r in rows]}), tmp_path / "d.parquet")
    for ext in ("csv", "jsonl", "tsv", "parquet"):
        ds = read_dataset(tmp_path / f"d.{ext}")
        assert ds.texts == [r[0] for r in rows], ext
        assert ds.labels == [r[1] for r in rows], ext
        assert ds.warnings == []


def test_column_names_are_chosen(tmp_path):
    p = write_csv(tmp_path / "d.csv", [("hi", "x")], header=("message", "intent"))
    ds = read_dataset(p, text_col="message", label_col="intent")
    assert ds.texts == ["hi"] and ds.labels == ["x"]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(tmp_path / "nope.csv")


def test_empty_file(tmp_path):
    (tmp_path / "e.csv").write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        read_dataset(tmp_path / "e.csv")


def test_header_only(tmp_path):
    (tmp_path / "h.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="no data rows"):
        read_dataset(tmp_path / "h.csv")


def test_directory_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_dataset(tmp_path)
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown extension '.xlsx'"):
        read_dataset(tmp_path / "d.xlsx")


def test_missing_column_lists_existing(tmp_path):
    p = write_csv(tmp_path / "d.csv", [("hi", "x")], header=("body", "label"))
    with pytest.raises(DataError, match=r"no column 'text'; its columns are: body, label"):
        read_dataset(p)
    p = write_csv(tmp_path / "d2.csv", [("hi", "x")], header=("text", "intent"))
    with pytest.raises(DataError, match=r"no label column 'label'; its columns are: text, intent"):
        read_dataset(p)


def test_parquet_missing_column_and_garbage(tmp_path):
    pq.write_table(pa.table({"body": ["a"], "label": ["x"]}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match="its columns are: body, label"):
        read_dataset(tmp_path / "d.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="could not be read as Parquet"):
        read_dataset(tmp_path / "bad.parquet")


def test_empty_and_nan_texts_are_counted(tmp_path):
    (tmp_path / "d.jsonl").write_text(
        '{"text": "fine", "label": "A"}\n{"text": "", "label": "A"}\n{"text": NaN, "label": "B"}\n'
        '{"text": null, "label": "B"}\n{"text": "   ", "label": "B"}\n{"text": "ok", "label": ""}\n{"text": "x", "label": "B"}\n'
    )
    ds = read_dataset(tmp_path / "d.jsonl")
    assert ds.texts == ["fine", "x"]
    assert any("4 rows with an empty or missing text were skipped (rows 2, 3, 4, 5)" in w for w in ds.warnings)
    assert any("1 rows with an empty or missing label" in w for w in ds.warnings)


def test_parquet_nan_text(tmp_path):
    pq.write_table(pa.table({"text": ["a", None, "b"], "label": ["x", "y", "y"]}), tmp_path / "d.parquet")
    ds = read_dataset(tmp_path / "d.parquet")
    assert ds.texts == ["a", "b"] and "1 rows with an empty" in ds.warnings[0]


def test_not_utf8(tmp_path):
    (tmp_path / "l.csv").write_bytes("text,label\ncaf\xe9,A\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8 text: byte 0xe9 at line 2"):
        read_dataset(tmp_path / "l.csv")


def test_utf8_bom_is_fine(tmp_path):
    (tmp_path / "b.csv").write_bytes("text,label\nhé,A\n".encode("utf-8-sig"))
    assert read_dataset(tmp_path / "b.csv").texts == ["hé"]


def test_long_text_is_cut_with_warning(tmp_path):
    p = write_csv(tmp_path / "d.csv", [("x" * 500, "A"), ("short", "B")])
    ds = read_dataset(p, max_chars=100)
    assert len(ds.texts[0]) == 100
    assert "1 texts longer than 100 characters were cut" in ds.warnings[0]


def test_huge_field_csv(tmp_path):
    p = write_csv(tmp_path / "d.csv", [("y" * 300_000, "A")])
    ds = read_dataset(p)
    assert len(ds.texts[0]) == 20_000 and ds.warnings


def test_malformed_csv_and_jsonl(tmp_path):
    (tmp_path / "q.csv").write_text('text,label\n"unterminated,A\nnext,B\n')
    with pytest.raises(DataError, match="not valid CSV"):
        read_dataset(tmp_path / "q.csv")
    (tmp_path / "j.jsonl").write_text('{"text": "a", "label": "A"}\n{"text": "b", \n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        read_dataset(tmp_path / "j.jsonl")
    (tmp_path / "k.jsonl").write_text('["a", "A"]\n')
    with pytest.raises(DataError, match="line 1 is a JSON list, not an object"):
        read_dataset(tmp_path / "k.jsonl")


def test_only_one_class(tmp_path):
    ds = read_dataset(write_csv(tmp_path / "d.csv", [("a", "X"), ("b", "X")]))
    with pytest.raises(DataError, match="only one class \\('X'\\)"):
        check_training_set(ds)


def test_class_with_one_example(tmp_path):
    ds = read_dataset(write_csv(tmp_path / "d.csv", [("a", "X"), ("b", "X"), ("c", "Y")]))
    with pytest.raises(DataError, match="1 classes have fewer than 2 examples: 'Y'"):
        check_training_set(ds)


def test_conflicting_duplicates_warned():
    ds = Dataset(["Hello  there", "hello there", "bye", "ciao"], ["A", "B", "A", "B"])
    assert "1 texts appear with more than one label" in check_training_set(ds)[0]


def test_unseen_labels_and_leakage_warned():
    salt = b"0123456789abcdef"
    fps = text_fingerprints(["reset my pin", "thanks"], salt)
    test = Dataset(["Reset  my PIN", "new text", "other"], ["SUPPORT", "NEW", "NEW"])
    w = check_test_set(test, ["SUPPORT", "GRATITUDE"], fps, salt)
    assert any("2 test rows have labels the model never saw: NEW (2)" in x for x in w)
    assert any("leakage: 1 test texts also appear in the training data" in x for x in w)


def test_lone_surrogates_in_jsonl_become_replacement_characters(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"text": "thanks \\ud800 a lot", "label": "A"}\n{"text": "b", "label": "B"}\n')
    ds = read_dataset(tmp_path / "s.jsonl")
    assert ds.texts[0] == "thanks \ufffd a lot"
    ds.texts[0].encode("utf-8")  # safe to write anywhere


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_csv_line_endings_and_quoted_newlines(tmp_path, newline):
    p = tmp_path / "d.csv"
    rows = ["text,label", '"two\nlines, quoted",A', "plain,B", '"with ""quotes""",A']
    p.write_bytes(newline.join(rows).encode() + newline.encode())
    ds = read_dataset(p)
    assert ds.texts == ["two\nlines, quoted", "plain", 'with "quotes"'] and ds.labels == ["A", "B", "A"]
