"""Streaming predictions: shards in, bounded batches through worker processes, output renamed at the end."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths
from offramp.errors import DataError, UsageError
from offramp.registry.records import load
from offramp.scale.stream import predict_files

from helpers import run_cli


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    texts = read_dataset(demo_paths()[1]).texts
    start = 0
    for s in range(3):
        n = 1500
        t = [texts[(start + k) % len(texts)] for k in range(n)]
        if s == 1:
            t[10], t[20] = None, "   "
        pq.write_table(pa.table({"id": list(range(start, start + n)), "text": t}), d / f"s{s}.parquet")
        start += n
    return d


def _expected(model_dir, shards):
    model = load(model_dir)
    table = pa.concat_tables([pq.read_table(p) for p in sorted(shards.glob("*.parquet"))])
    rows = [(i, t) for i, t in zip(table.column("id").to_pylist(), table.column("text").to_pylist()) if t and t.strip()]
    labels = model.predict([t for _, t in rows])
    return {i: str(lab) for (i, _), lab in zip(rows, labels)}


def test_parquet_shards_to_parts_with_two_workers(fast_model, shards, tmp_path):
    out = tmp_path / "out"
    rep = predict_files(fast_model, shards, out, keep=["id"], workers=2, batch_size=500)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.iterdir())])
    assert table.column_names == ["id", "label", "confidence", "rejected"]
    got = dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist()))
    assert got == _expected(fast_model, shards)  # the same answers as in process, every id once
    assert rep.rows_read == 4500 and rep.predicted == 4498
    assert rep.warnings() == [
        "2 rows with an empty or missing text were skipped (s1.parquet row 11, s1.parquet row 21)"
    ]
    assert not list(tmp_path.glob(".*"))  # no partial output left beside it


def test_jsonl_keeps_order_and_counts_bad_lines(fast_model, tmp_path):
    texts = read_dataset(demo_paths()[1]).texts[:300]
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": k, "text": t}) for k, t in enumerate(texts)]
    lines.insert(100, "this is not json")
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    r = run_cli(
        "predict",
        str(fast_model),
        str(src),
        "--out",
        str(out),
        "--keep-columns",
        "id",
        "--workers",
        "1",
        "--batch-size",
        "64",
    )
    assert r.returncode == 0, r.stderr
    assert "1 lines that are not a JSON object were skipped (in.jsonl line 101)" in r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in rows] == list(range(300))
    assert [x["label"] for x in rows] == [str(x) for x in load(fast_model).predict(texts)]
    assert set(rows[0]) == {"id", "text", "label", "confidence", "rejected", "top"}


def test_a_killed_run_resumes_without_duplicates(fast_model, shards, tmp_path):
    out = tmp_path / "out"

    class Killed(Exception):
        pass

    def kill_after_first_shard(done, total):
        if done > 1500:
            raise Killed

    with pytest.raises(Killed):
        predict_files(
            fast_model, shards, out, keep=["id"], workers=1, batch_size=500, on_progress=kill_after_first_shard
        )
    assert not out.exists()  # nothing that looks complete
    partial = tmp_path / ".out.partial"
    assert (partial / "part-00000.parquet").exists() and not (partial / "part-00002.parquet").exists()
    r = run_cli(
        "predict",
        str(fast_model),
        str(shards),
        "--out",
        str(out),
        "--keep-columns",
        "id",
        "--resume",
        "--workers",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert "1 resumed" in r.stderr
    ids = pa.concat_tables([pq.read_table(p) for p in sorted(out.iterdir())]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 4498


def test_bad_inputs_get_one_line_errors(fast_model, shards, tmp_path):
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(shards, mixed)
    (mixed / "s9.parquet").write_bytes(b"PAR1 this is not really parquet")
    cases = [
        ([str(tmp_path / "nothing-*.parquet"), "--out", str(tmp_path / "o1")], "matches no file"),
        ([str(mixed), "--out", str(tmp_path / "o2")], "s9.parquet is not a readable Parquet file"),
        ([str(shards), "--out", str(shards)], "already exists"),
        ([str(shards), "--out", str(tmp_path / "o.txt")], "must end in"),
        ([str(shards), "--out", str(tmp_path / "o.jsonl"), "--resume"], "needs a directory output"),
        ([str(shards), "--out", str(tmp_path / "o3"), "--text-col", "body"], "has no column 'body'"),
    ]
    for args, message in cases:
        r = run_cli("predict", str(fast_model), *args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    with pytest.raises(DataError):
        predict_files(fast_model, tmp_path / "none", tmp_path / "o4")
    with pytest.raises(UsageError):
        predict_files(fast_model, shards, tmp_path / "o5", workers=0)
