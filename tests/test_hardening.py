"""Defects found by probing, each kept found: spreadsheet formulas in CSV outputs, HTML and table
breaks in report.md, pipeline values out of range, a docs folder outside the pipeline's directory."""

import csv
import json
import shutil
import time

import httpx
import pytest

from offramp.errors import UsageError

from helpers import Server, run_cli, until, write_csv

FORMULAS = ['=HYPERLINK("http://evil","x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_csv_outputs_neutralise_formulas_when_asked(tmp_path, fast_model):
    """Files meant for a spreadsheet neutralise formulas; data files keep every byte unless asked
    (--spreadsheet-safe); test_roundtrip.py checks the data side in full."""
    from offramp.data.io import write_records

    rows = [{"text": f, "n": i} for i, f in enumerate(FORMULAS)] + [{"text": "thanks - really", "n": 9}]
    write_records(tmp_path / "a.csv", rows, spreadsheet_safe=True)
    got = [r["text"] for r in csv.DictReader(open(tmp_path / "a.csv", encoding="utf-8", newline=""))]
    assert got == ["'" + f for f in FORMULAS] + ["thanks - really"]
    write_records(tmp_path / "raw.csv", rows)  # data: left as it is
    assert [r["text"] for r in csv.DictReader(open(tmp_path / "raw.csv", encoding="utf-8", newline=""))] == FORMULAS + [
        "thanks - really"
    ]
    # through the commands: mask and predict --output x.csv (which writes CSV, not JSON lines)
    data = write_csv(tmp_path / "d.csv", [(f, "OTHER") for f in FORMULAS[:4]])
    r = run_cli("mask", str(data), "--out", str(tmp_path / "m.csv"), "--spreadsheet-safe")
    assert r.returncode == 0, r.stderr
    assert all(
        row["text"].startswith("'") for row in csv.DictReader(open(tmp_path / "m.csv", encoding="utf-8", newline=""))
    )
    r = run_cli(
        "predict", str(fast_model), str(data), "--out", str(tmp_path / "p.csv"), "--quiet", "--spreadsheet-safe"
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8", newline="")))
    assert len(rows) == 4 and all(row["text"].startswith("'") for row in rows)
    assert json.loads(rows[0]["top"])[0]["label"]  # nested values as JSON
    r = run_cli("predict", str(fast_model), str(data), "--out", str(tmp_path / "p.txt"))
    assert r.returncode == 2 and "must end in .jsonl, .csv, .tsv or .parquet" in r.stderr


def test_report_markdown_escapes_html_and_table_breaks(tmp_path, fast_model):
    test = write_csv(
        tmp_path / "t.csv",
        [("hello there", "<script>alert(1)</script>"), ("thanks a lot", "A|B"), ("how do I reset my pin", "SUPPORT")],
    )
    r = run_cli("report", str(fast_model), str(test), "--out", str(tmp_path / "r.html"), "--quiet")
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "A\\|B" in md and "| A|B |" not in md
    assert "<script>" not in (tmp_path / "r.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "section,needle",
    [
        ("routing: {fit: {val: v.csv, max_llm_share: -0.5}}", "greater than or equal to 0"),
        ("routing: {fit: {val: v.csv, local_precision: 1.5}}", "less than or equal to 1"),
        ("routing: {thresholds: {'*': -1}}", "greater than or equal to 0"),
        ("llm: {base_url: 'http://127.0.0.1:1/v1', model: m, timeout_s: 0}", "greater than 0"),
        ("privacy: {threshold: 2}", "less than or equal to 1"),
    ],
)
def test_pipeline_values_out_of_range_are_refused(tmp_path, section, needle):
    from offramp.runtime.config import read_pipeline

    p = tmp_path / "p.yaml"
    p.write_text(f"model: m\n{section}\n")
    with pytest.raises(UsageError, match=needle):
        read_pipeline(p)


def test_docs_folder_must_be_inside_the_pipeline_directory(tmp_path, fast_model):
    from offramp.runtime.cascade import build
    from offramp.runtime.config import Settings

    site = tmp_path / "site"
    shutil.copytree(fast_model, site / "model")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "notes.md").write_text("# private\nnot for clients\n")
    p = site / "p.yaml"
    p.write_text("model: model\nactions: {SUPPORT: {type: answer_from_docs, docs: ../secret}}\n")
    with pytest.raises(UsageError, match="outside the pipeline's directory"):
        build(Settings.resolve(p, env={}))
    (site / "docs").mkdir()
    (site / "docs" / "pin.md").write_text("# PIN\nReset it in the app.\n")
    p.write_text("model: model\nactions: {SUPPORT: {type: answer_from_docs, docs: docs, method: tfidf}}\n")
    assert build(Settings.resolve(p, env={})).cascade.actions["SUPPORT"]


def test_train_out_never_deletes_what_is_not_a_model(tmp_path, inbox_sample):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "manifest.json").write_text("{}")
    (proj / "model.json").write_text("{}")
    (proj / "src" / "important.txt").write_text("x")
    r = run_cli("train", str(inbox_sample[0]), "--out", str(proj), "--quality", "fast", "--quiet")
    assert r.returncode == 2 and "not an offramp model directory" in r.stderr, r.stderr
    assert (proj / "src" / "important.txt").read_text() == "x"


def _small_model(seed=0):
    from offramp.estimators.tfidf import TfidfLinear

    texts = ["reset my pin", "thanks a lot", "how do I reset the pin", "thank you!", "pin help", "cheers"] * 3
    labels = ["SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE"] * 3
    return TfidfLinear(min_df=1, C=0.5 + seed).fit(texts, labels)


def test_files_added_to_a_model_directory_are_never_deleted_silently(tmp_path):
    from offramp.errors import ModelDirError

    d = tmp_path / "m"
    _small_model().save(d)
    (d / "notes.txt").write_text("mine")
    with pytest.raises(ModelDirError, match="not part of the model: notes.txt"):
        _small_model(1).save(d)
    assert (d / "notes.txt").read_text() == "mine"


SAVER = """
import sys
sys.path.insert(0, {tests!r})
from test_hardening import _small_model
for i in range({n}):
    _small_model(i % 3).save({path!r})
"""


def test_readers_see_the_old_or_the_new_model_and_writers_take_turns(tmp_path):
    """A reader loading while writers replace the directory never finds it missing or mixed;
    concurrent writers all succeed, one at a time, and leave nothing hidden beside it."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from offramp.modeldir.store import verify_model_dir
    from offramp.registry.records import load

    d = tmp_path / "m"
    _small_model().save(d)
    (tmp_path / ".m.old.leftover").mkdir()  # what a writer killed between its two renames left
    code = SAVER.format(tests=str(Path(__file__).parent), n=15, path=str(d))
    writers = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    loads, errors = 0, []
    while any(w.poll() is None for w in writers):
        try:
            assert load(d).predict(["reset my pin"])[0] == "SUPPORT"
            loads += 1
        except Exception as e:
            errors.append(repr(e))
        time.sleep(0.001)
    assert all(w.returncode == 0 for w in writers), [w.stderr.read() for w in writers]
    assert loads > 10 and errors == [], errors[:3]
    verify_model_dir(d)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no half-written copies, no lock file left


def test_labels_with_spaces_merge_with_a_warning(tmp_path):
    from offramp.data.io import read_dataset

    p = write_csv(tmp_path / "d.csv", [("a", " 1 "), ("b", "1"), ("c", "2"), ("d", "2 ")])
    ds = read_dataset(p)
    assert ds.labels == ["1", "1", "2", "2"]
    assert any("2 labels had spaces around them" in w and "rows 1, 4" in w for w in ds.warnings), ds.warnings


def test_bad_key_files_and_unwritable_outputs_are_one_line_errors(tmp_path, inbox_sample, fast_model):
    log = tmp_path / "audit.sqlite"
    from offramp.audit.log import AuditLog

    AuditLog(log).close()
    (tmp_path / "audit.sqlite.key").write_text("not a key at all")
    r = run_cli("audit", "verify", str(log))
    assert r.returncode == 2 and "does not hold a key" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", str(inbox_sample[0]), "--out", "/proc/offramp-model", "--quality", "fast")
    assert r.returncode == 2 and "does not take new directories" in r.stderr, r.stderr
    assert "read " not in r.stderr  # refused before the data was read, let alone trained on


def test_reloads_do_not_leak_file_handles(fast_model, tmp_path):
    """600 reloads once grew the server's open files from 16 to 64 (pseudonym vaults left open)."""
    import os

    import httpx

    from helpers import Server

    shutil.copytree(fast_model, tmp_path / "model")
    p = tmp_path / "p.yaml"
    p.write_text("model: model\nprivacy: {operator: pseudonym, vault: v.sqlite}\naudit: audit.sqlite\n")
    s = Server(p, env={**os.environ, "OFFRAMP_AUDIT_KEY": "k", "OFFRAMP_VAULT_KEY": "v" * 32})
    try:

        def fds() -> int:
            return len(os.listdir(f"/proc/{s.proc.pid}/fd"))

        for _ in range(20):
            assert httpx.post(s.url + "/v1/admin/reload", json={}).status_code == 200
        before = fds()
        for _ in range(100):
            assert httpx.post(s.url + "/v1/admin/reload", json={}).status_code == 200
        assert httpx.post(s.url + "/v1/classify", json={"text": "thanks, mail a@b.com"}).status_code == 200
        assert fds() <= before + 2, (before, fds())
    finally:
        s.stop()


def test_parquet_binary_columns_are_decoded_like_text_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from offramp.data.io import read_dataset
    from offramp.errors import DataError

    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": pa.array([b"thanks", "naïve".encode()], pa.binary()), "label": ["A", "B"]}), good)
    assert read_dataset(good).texts == ["thanks", "naïve"]  # not "b'thanks'"
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": pa.array([b"ok", b"na\xefve"], pa.binary()), "label": ["A", "B"]}), bad)
    with pytest.raises(DataError, match="row 2 is not UTF-8 text: byte 0xef"):
        read_dataset(bad)


# ---------------------------------------------------------------- YAML alias bombs, oversized arrays
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    import time

    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines.append("model: *i")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 600
    t0 = time.monotonic()
    r = run_cli("serve", str(bomb))
    assert r.returncode == 2 and "expands to more than 100,000 values" in r.stderr
    assert time.monotonic() - t0 < 30
    big = tmp_path / "big.yaml"
    big.write_text("model: m\n" + "# padding\n" * 200_000)
    r = run_cli("serve", str(big))
    assert r.returncode == 2 and "larger than 1,000,000 bytes" in r.stderr


def _rehash(d):
    import hashlib
    import json

    man = json.loads((d / "manifest.json").read_text())
    man["files"]["arrays.npz"] = hashlib.sha256((d / "arrays.npz").read_bytes()).hexdigest()
    (d / "manifest.json").write_text(json.dumps(man))


def test_arrays_are_checked_against_model_json_before_reading(fast_model, tmp_path):
    import json
    import shutil

    import numpy as np

    cases = {}
    d = tmp_path / "extra"
    shutil.copytree(fast_model, d)
    with np.load(d / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(d / "arrays.npz", **arrays, evil=np.zeros(1 << 22))  # 32 MB of zeros, tiny compressed
    _rehash(d)
    cases[d] = "does not declare: 'evil'"
    d = tmp_path / "reshaped"
    shutil.copytree(fast_model, d)
    name = sorted(arrays)[0]
    np.savez_compressed(d / "arrays.npz", **{**arrays, name: np.zeros((3, 3), dtype=np.float32)})
    _rehash(d)
    cases[d] = f"array {name!r} is <f4 [3, 3], model.json declares"
    for path, message in cases.items():
        r = run_cli("predict", str(path), "hello")
        assert r.returncode == 2 and message in r.stderr, r.stderr
    # a directory without declarations (an older format) still has a ceiling
    from offramp.errors import ModelDirError
    from offramp.modeldir.store import check_arrays

    np.savez(tmp_path / "huge.npz", a=np.zeros(1))
    check_arrays(tmp_path / "huge.npz", None)  # small: fine
    import pytest as _pytest

    with _pytest.raises(ModelDirError, match="a model needs"):
        import zipfile

        # a header that declares 5 GiB (the data itself is never read)
        header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
        header["shape"] = (5 * 1024**3 // 8,)
        with zipfile.ZipFile(tmp_path / "lie.npz", "w") as zf, zf.open("a.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
        check_arrays(tmp_path / "lie.npz", None)
    assert json.loads((fast_model / "model.json").read_text())["arrays"]


# ---------------------------------------------------------------- whole-call deadlines for slow egress
class _Drip:
    """An HTTP server that answers with headers at once, then one byte a second for a long time."""

    def __init__(self, body_seconds=60):
        import threading
        import time as _time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Length", str(body_seconds))
                self.end_headers()
                try:
                    for _ in range(body_seconds):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        _time.sleep(1)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.hits = 0  # requests that reached the server

        drip = self

        class Counting(H):
            def do_POST(self):
                drip.hits += 1
                super().do_POST()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_dripping_webhook_is_cut_at_its_deadline(fast_model, tmp_path):
    import time

    import httpx

    from helpers import Server

    drip = _Drip()
    acts = "".join(
        f"  {lab}: {{type: forward, url: '{drip.url}', timeout_s: 1}}\n"
        for lab in ("SUPPORT", "GRATITUDE", "TRY_TO_HACK", "OTHER")
    )
    shutil.copytree(fast_model, tmp_path / "model")
    (tmp_path / "p.yaml").write_text(f"model: model\nactions:\n{acts}")
    srv = Server(tmp_path / "p.yaml")
    try:
        t0 = time.monotonic()
        r = httpx.post(srv.url + "/v1/classify", json={"text": "thanks a lot!"}, timeout=60)
        took = time.monotonic() - t0
        assert r.status_code == 200
        action = r.json()["action"]
        assert action["type"] == "forward" and not action.get("delivered")
        assert took < 5, took  # was about 40 s: timeout_s bounded each read, not the call
    finally:
        srv.stop()
        drip.close()


def test_train_refuses_data_over_the_memory_budget_before_reading(tmp_path):
    data = write_csv(tmp_path / "d.csv", [(f"message number {i}", "A" if i % 2 else "B") for i in range(2000)])
    r = run_cli("train", str(data), "--out", str(tmp_path / "m"), "--quality", "fast", "--max-memory", "0.6")
    assert r.returncode == 0, r.stderr  # 2,000 rows fit in 0.6 GB
    r = run_cli("train", str(data), "--out", str(tmp_path / "m2"), "--max-memory", "0.0001")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "needs about" in r.stderr and "--max-memory" in r.stderr and not (tmp_path / "m2").exists()


def _recv_all(sock, seconds: float) -> bytes:

    sock.settimeout(seconds)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk
    except TimeoutError:
        return out + b"<still open>"


def test_slow_headers_and_slow_bodies_are_cut_off(fast_model):
    """A client sending its headers or its body a byte at a time no longer holds a connection:
    headers must be complete within --read-timeout of connecting (or of the previous response),
    the body within --read-timeout of the headers."""
    import socket as _socket

    srv = Server(fast_model, "--read-timeout", "1")
    try:
        port = srv.port
        # headers never finished: the connection is closed, nothing is answered
        s = _socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        assert _recv_all(s, 5) == b"" and time.monotonic() - t0 < 4
        s.close()
        # a declared body that never fully arrives: 408 in JSON
        s = _socket.create_connection(("127.0.0.1", port))
        s.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"text": '
        )
        answer = _recv_all(s, 5)
        assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer, answer[:200]
        s.close()
        # a chunked body that stalls: 408 too
        s = _socket.create_connection(("127.0.0.1", port))
        s.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"tex\r\n'
        )
        answer = _recv_all(s, 5)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        s.close()
        # a kept-alive connection: the next request's headers get their own deadline
        s = _socket.create_connection(("127.0.0.1", port))
        body = b'{"text": "thanks a lot!"}'
        s.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        first = _recv_all(s, 0.5)  # the whole response; the connection stays open
        assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"<still open>"), first[:200]
        s.sendall(b"POST /v1/classify HTTP/1.1\r\n")
        assert _recv_all(s, 5) == b""
        s.close()
        # headers over 16 KiB (the C parser has no limit of its own): 431 in JSON, the connection closed
        s = _socket.create_connection(("127.0.0.1", port))
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_100_000 + b"\r\n\r\n")
        except OSError:  # the server may close before the client has sent it all
            pass
        answer = _recv_all(s, 5)
        assert answer.startswith(b"HTTP/1.1 431") and b'"headers_too_large"' in answer, answer[:200]
        s.close()
        # ordinary requests still work, headers of a few kilobytes too
        assert httpx.post(srv.url + "/v1/classify", json={"text": "thanks!"}).status_code == 200
        assert httpx.get(srv.url + "/healthz", headers={"X-Note": "a" * 8000}).status_code == 200
    finally:
        srv.stop()


def test_one_client_cannot_hold_every_connection(fast_model):
    """Connections each within their read deadline, many at once from one address: past the cap
    the next one is answered 503 in JSON and closed, and a slot frees when one closes."""
    import socket as _socket

    srv = Server(fast_model, "--max-connections-per-client", "3")
    try:
        held = [_socket.create_connection(("127.0.0.1", srv.port)) for _ in range(3)]
        for s in held:
            s.sendall(b"POST /v1/classify HTTP/1.1\r\n")  # headers under way, inside the deadline
        extra = _socket.create_connection(("127.0.0.1", srv.port))
        answer = _recv_all(extra, 5)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "too_many_connections"
        extra.close()
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the server sees the close a moment later
            r = httpx.post(srv.url + "/v1/classify", json={"text": "thanks!"})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 200, r.text
        for s in held:
            s.close()
    finally:
        srv.stop()


def test_local_answers_do_not_wait_behind_slow_egress(fast_model, tmp_path):
    """50 requests held by a dripping webhook (each up to its 6 s deadline) must not hold up a
    message whose answer is local: the request threads outnumber every egress slot."""
    import threading

    from helpers import Server

    drip = _Drip()
    shutil.copytree(fast_model, tmp_path / "model")
    (tmp_path / "p.yaml").write_text(
        "model: model\nactions:\n"
        f"  GRATITUDE: {{type: forward, url: '{drip.url}', timeout_s: 6}}\n"
        "  SUPPORT: {type: reply, text: 'see the help page'}\n"
    )
    srv = Server(tmp_path / "p.yaml")
    try:
        slow = [
            threading.Thread(
                target=lambda: httpx.post(srv.url + "/v1/classify", json={"text": "thanks a lot!"}, timeout=60)
            )
            for _ in range(50)
        ]
        for t in slow:
            t.start()
        # every slow request is now waiting on the webhook: its 16 egress threads are held
        until(lambda: drip.hits >= 16, seconds=30)
        assert drip.hits >= 16, drip.hits
        t0 = time.monotonic()
        r = httpx.post(srv.url + "/v1/classify", json={"text": "how do I reset my password?"}, timeout=60)
        took = time.monotonic() - t0
        assert r.status_code == 200 and r.json()["label"] == "SUPPORT"
        assert took < 2, took  # was the webhook's deadline: every request thread was held by it
        for t in slow:
            t.join()
    finally:
        srv.stop()
        drip.close()
