"""Defects of the migration loop and the console, each kept found: a retrain racing a promote, a
console reached under a rebound host name, a hand-edited registry record, rate limits per worker,
retrain-now forgetting across restarts, feedback from another key, label-set spellings, and small ones."""

import json
import os
import shutil
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from offramp.capture.live import Capture, InvalidLabel, NotYourRequest
from offramp.capture.pool import Pool, read_rows
from offramp.data.io import Dataset
from offramp.privacy.guard import PrivacyGuard
from offramp.registry.versions import Registry
from offramp.training.retrain import retrain

from helpers import Server, read_pairs, run_cli, until, write_csv


@pytest.fixture(scope="module")
def registry3(inbox_sample, tmp_path_factory):
    """A registry with three versions of the fast tier (v0003 current) and its frozen gate set."""
    d = tmp_path_factory.mktemp("reg3")
    reg = d / "reg"
    for extra in ((), (), ("--promote",)):
        r = run_cli("train", str(inbox_sample[0]), "--registry", str(reg), "--quality", "fast", "-q", *extra)
        assert r.returncode == 0, r.stderr
    assert Registry(reg).current == "v0003"
    return reg


def _copy(reg, tmp_path):
    shutil.copytree(reg, tmp_path / "reg")
    return tmp_path / "reg"


# ---------------------------------------------------------------------- 1. a retrain racing a promote
def test_a_retrain_does_not_override_a_promote_made_while_it_trained(registry3, inbox_sample, tmp_path):
    reg = Registry(_copy(registry3, tmp_path))
    added = read_pairs(inbox_sample[0])[:40]
    ds = Dataset([t for t, _ in added], [lab for _, lab in added], "added.csv", rows_read=len(added))

    def operator_promotes(message: str) -> None:  # the operator's promote lands while the candidate is judged
        if message.startswith("judging"):
            reg.promote("v0002")

    result = retrain(reg, ds, on_progress=operator_promotes)
    assert result.gate["passed"], result.reasons  # the candidate was good: only the race keeps it out
    assert result.decision == "current_changed" and not result.promoted
    assert reg.current == "v0002"  # the operator's choice stands
    assert result.candidate == "v0004" and any("v0002 was made current" in r for r in result.reasons)
    assert reg.entry("v0004")["gate"]["decision"] == "current_changed"
    assert result.to_dict()["decision"] == "current_changed"

    # without a race the same retrain promotes
    again = retrain(reg, ds)
    assert again.decision == "promoted" and reg.current == again.candidate == "v0005"


def test_the_retrain_command_says_current_changed_with_exit_4(registry3, inbox_sample, tmp_path, monkeypatch):
    import offramp.training.retrain as retrain_module

    path = _copy(registry3, tmp_path)
    real_train = retrain_module.train

    def train_while_someone_rolls_back(*args, **kwargs):
        out = real_train(*args, **kwargs)
        Registry(path).rollback()  # v0003 -> v0001 while the candidate trains
        return out

    monkeypatch.setattr(retrain_module, "train", train_while_someone_rolls_back)
    add = write_csv(tmp_path / "add.csv", read_pairs(inbox_sample[0])[:40])
    r = run_cli("registry", "retrain", str(path), str(add), "--json", "-q")
    assert r.returncode == 4, r.stderr
    out = json.loads(r.stdout)
    assert out["decision"] == "current_changed" and out["current"] == "v0003"
    assert Registry(path).current == "v0001"


# ---------------------------------------------------------------------- 3. hand-edited records
@pytest.mark.parametrize("name", ["../outside/evilmodel", "/tmp/evilmodel", "v0001/../../outside", "v1", "v0001\n"])
def test_a_hand_edited_record_cannot_point_outside_the_registry(registry3, tmp_path, name):
    path = _copy(registry3, tmp_path)
    outside = tmp_path / "outside" / "evilmodel"
    shutil.copytree(path / "v0001", outside)  # a valid model, outside the registry
    doc = json.loads((path / "registry.json").read_text())
    doc["versions"][name] = doc["versions"]["v0001"]
    doc["current"] = name
    (path / "registry.json").write_text(json.dumps(doc))
    for args in (("registry", "list", str(path)), ("predict", str(path), "hi")):
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stdout)
        assert "is not a version name" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_version_that_is_a_link_outside_is_refused(registry3, tmp_path):
    path = _copy(registry3, tmp_path)
    shutil.copytree(path / "v0002", tmp_path / "elsewhere")
    shutil.rmtree(path / "v0002")
    os.symlink(tmp_path / "elsewhere", path / "v0002")
    r = run_cli("registry", "promote", str(path), "v0002")
    assert r.returncode == 2 and "leads outside the registry" in r.stderr
    r = run_cli("predict", str(path), "hi")  # v0003 is still current and inside: fine
    assert r.returncode == 0, r.stderr


def test_promote_checks_the_version_files_first(registry3, tmp_path):
    path = _copy(registry3, tmp_path)
    victim = next(p for p in sorted((path / "v0002").iterdir()) if p.name != "manifest.json" and p.is_file())
    victim.write_bytes(victim.read_bytes() + b" ")
    r = run_cli("registry", "promote", str(path), "v0002")
    assert r.returncode == 2 and "v0002 cannot be made current" in r.stderr and "SHA-256" in r.stderr, r.stderr
    assert Registry(path).current == "v0003"
    # nor can a rollback land on a damaged version
    Registry(path).promote("v0001")
    victim = next(p for p in sorted((path / "v0003").iterdir()) if p.name != "manifest.json" and p.is_file())
    victim.write_bytes(victim.read_bytes() + b" ")
    r = run_cli("registry", "rollback", str(path))
    assert r.returncode == 2 and "v0003 cannot be made current" in r.stderr
    assert Registry(path).current == "v0001"


# ---------------------------------------------------------------------- 6, 7. feedback
def test_feedback_belongs_to_the_key_that_asked_and_the_latest_wins(tmp_path):
    guard = PrivacyGuard()
    pool = Pool(tmp_path / "pool.sqlite", guard)
    cap = Capture(pool, guard, ["SUPPORT", "OTHER"])
    cap.remember([("r1", "reset my pin", "SUPPORT", 0.9, "v0001", "key-a"), ("r2", "hello", "OTHER", 0.8, None, None)])
    with pytest.raises(NotYourRequest):
        cap.feedback("r1", "OTHER", caller="key-b")
    with pytest.raises(NotYourRequest):
        cap.feedback("r1", "OTHER")  # no key at all
    cap.feedback("r1", "OTHER", caller="key-b", admin=True)
    for _ in range(300):
        cap.feedback("r1", "SUPPORT", caller="key-a")
    cap.feedback("r2", "SUPPORT")  # made without a key: anyone may correct it
    pool.flush()
    cap.feedback("r1", "OTHER", caller="key-a")  # and in a later batch, the latest still replaces
    pool.flush()
    rows = read_rows(tmp_path / "pool.sqlite", ["feedback"])
    assert sorted((r["request_id"], r["label"]) for r in rows) == [("r1", "OTHER"), ("r2", "SUPPORT")]
    pool.close()


@pytest.mark.parametrize("sent", ["|", "||", "GRATITUDE|", "|GRATITUDE", "GRATITUDE||SUPPORT", " | "])
def test_a_label_set_with_an_empty_part_is_refused(tmp_path, sent):
    guard = PrivacyGuard()
    pool = Pool(tmp_path / "pool.sqlite", guard)
    cap = Capture(pool, guard, ["GRATITUDE", "SUPPORT"], label_sep="|")
    cap.remember([("r", "thanks, and my card is stuck", "SUPPORT", 0.6, None, None)])
    with pytest.raises(InvalidLabel, match="empty part"):
        cap.feedback("r", sent)
    cap.feedback("r", "")  # the empty set: none of the labels
    cap.feedback("r", "SUPPORT|GRATITUDE")
    pool.flush()
    assert [r["label"] for r in read_rows(tmp_path / "pool.sqlite", ["feedback"])] == ["GRATITUDE|SUPPORT"]
    pool.close()
    one = Capture(Pool(tmp_path / "one.sqlite", guard), guard, ["GRATITUDE"])
    one.remember([("r", "thanks", "GRATITUDE", 0.9, None, None)])
    with pytest.raises(InvalidLabel, match="empty"):
        one.feedback("r", " ")
    one.close()


# ---------------------------------------------------------------------- the console, served
@pytest.fixture(scope="module")
def console_pipeline(registry3, tmp_path_factory):
    d = tmp_path_factory.mktemp("console2")
    shutil.copytree(registry3, d / "reg")
    Registry(d / "reg").promote("v0001")
    (d / "pipeline.yaml").write_text("model: reg\ncapture: {pool: pool.sqlite, from: [feedback], ttl_s: 600}\n")
    return d


def _session(url: str, client: httpx.Client) -> str:
    r = client.get(url + "/ui")
    assert r.status_code == 200, r.text
    return client.get(url + "/ui/api/session").json()["csrf"]


def test_the_console_refuses_other_host_names_and_origins(console_pipeline):
    srv = Server(console_pipeline / "pipeline.yaml", "--ui-admin-open")
    try:
        rebound = {"Host": f"rebind.attacker.example:{srv.port}"}
        r = httpx.get(srv.url + "/ui", headers=rebound)
        assert r.status_code == 403 and r.json()["error"]["type"] == "host_not_allowed"
        assert "offramp_session" not in r.headers.get("set-cookie", "")
        assert httpx.get(srv.url + "/ui/api/models", headers=rebound).status_code == 403
        with httpx.Client() as c:
            csrf = _session(srv.url, c)
            # the rebinding page holds no session of ours; even with one, another Host or Origin is refused
            h = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
            for extra in (
                rebound,
                {"Origin": "http://rebind.attacker.example"},
                {"Sec-Fetch-Site": "cross-site"},
                {"Origin": "null"},  # a sandboxed frame; a same-origin form says so in Sec-Fetch-Site too
                {"Origin": "http://rebind.attacker.example", "Sec-Fetch-Site": "same-origin"},
            ):
                r = c.post(srv.url + "/ui/api/promote", headers={**h, **extra}, content=b'{"version": "v0002"}')
                assert r.status_code == 403, (extra, r.text)
            assert Registry(console_pipeline / "reg").current == "v0001"
            r = c.post(
                srv.url + "/ui/api/promote",
                headers={**h, "Origin": srv.url, "Sec-Fetch-Site": "same-origin"},
                content=b'{"version": "v0002"}',
            )
            assert r.status_code == 200, r.text
            assert Registry(console_pipeline / "reg").current == "v0002"
            c.post(srv.url + "/ui/api/rollback", headers=h)
        # anonymous sessions: made at most 30 a minute per address, and never more than the cap
        codes = [httpx.get(srv.url + "/ui").status_code for _ in range(40)]
        assert codes.count(200) <= 31 and codes.count(429) >= 9 and set(codes) == {200, 429}
    finally:
        srv.stop()
    srv = Server(console_pipeline / "pipeline.yaml", "--ui-admin-open", "--allowed-hosts", "offramp.internal")
    try:
        r = httpx.get(srv.url + "/ui", headers={"Host": f"offramp.internal:{srv.port}"})
        assert r.status_code == 200 and "Secure" not in r.headers["set-cookie"]
    finally:
        srv.stop()


def test_sessions_are_capped_and_expired_first():
    from offramp.serving.console.sessions import SessionStore

    store = SessionStore(max_sessions=5, ttl_s=0.05)
    first = store.create(False, "a")
    time.sleep(0.1)
    for _ in range(3):
        store.create(False, "a")
    assert len(store) == 3 and store.get(first.token) is None  # the expired one went when others were made
    for _ in range(10):
        store.create(False, "a")
    assert len(store) == 5


def test_the_session_cookie_is_secure_behind_tls(console_pipeline, tmp_path):
    srv = Server(console_pipeline / "pipeline.yaml", "--behind-tls")
    try:
        cookie = httpx.get(srv.url + "/ui").headers["set-cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    finally:
        srv.stop()
    srv = Server(console_pipeline / "pipeline.yaml")
    try:
        # a TLS proxy on this machine says so with X-Forwarded-Proto
        cookie = httpx.get(srv.url + "/ui", headers={"X-Forwarded-Proto": "https"}).headers["set-cookie"]
        assert "Secure" in cookie
        assert "Secure" not in httpx.get(srv.url + "/ui").headers["set-cookie"]
    finally:
        srv.stop()


def test_retrain_now_remembers_the_rows_it_used_across_restarts(console_pipeline, inbox_sample):
    d = console_pipeline
    texts = [t for t, _ in read_pairs(inbox_sample[1])[:8]]

    def serve_and_correct():
        srv = Server(d / "pipeline.yaml", "--ui-admin-open")
        for t in texts:
            answer = httpx.post(srv.url + "/v1/classify", json={"text": t}).json()
            wrong = "GRATITUDE" if answer["label"] != "GRATITUDE" else "SUPPORT"
            assert (
                httpx.post(
                    srv.url + "/v1/feedback", json={"request_id": answer["request_id"], "label": wrong}
                ).status_code
                == 202
            )
        return srv

    srv = serve_and_correct()
    try:
        with httpx.Client() as c:
            h = {"X-CSRF-Token": _session(srv.url, c), "Content-Type": "application/json"}
            r = c.post(srv.url + "/ui/api/retrain", headers=h)
            assert r.status_code == 202 and r.json()["rows"] == 8, r.text
            job = until(lambda: (j := c.get(srv.url + "/ui/api/models").json()["job"])["state"] != "running" and j, 120)
            assert job and job["state"] == "done", job
    finally:
        srv.stop()
    srv = Server(d / "pipeline.yaml", "--ui-admin-open")  # restarted: the rows already used stay used
    try:
        with httpx.Client() as c:
            h = {"X-CSRF-Token": _session(srv.url, c), "Content-Type": "application/json"}
            r = c.post(srv.url + "/ui/api/retrain", headers=h)
            assert r.status_code == 409 and r.json()["error"]["type"] == "nothing_new", r.text
    finally:
        srv.stop()


def test_feedback_with_keys_is_taken_from_the_key_that_asked(console_pipeline, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(run_cli("hash-key", "key-a-0123456789").stdout + run_cli("hash-key", "key-b-0123456789").stdout)
    srv = Server(console_pipeline / "pipeline.yaml", "--api-keys", str(keys))
    try:
        a, b = ({"Authorization": f"Bearer key-{k}-0123456789"} for k in "ab")
        rid = httpx.post(srv.url + "/v1/classify", json={"text": "my card is stuck"}, headers=a).json()["request_id"]
        r = httpx.post(srv.url + "/v1/feedback", json={"request_id": rid, "label": "OTHER"}, headers=b)
        assert r.status_code == 403 and r.json()["error"]["type"] == "not_your_request"
        r = httpx.post(srv.url + "/v1/feedback", json={"request_id": rid, "label": "OTHER"}, headers=a)
        assert r.status_code == 202, r.text
        r = httpx.post(srv.url + "/v1/feedback", json={"request_id": rid, "label": ""}, headers=a)
        assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_label"
    finally:
        srv.stop()


# ---------------------------------------------------------------------- 4. rate limits with workers
def test_the_rate_limit_holds_for_the_whole_server_with_two_workers(fast_model, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(run_cli("hash-key", "rate-key-0123456789").stdout)
    srv = Server(fast_model, "--workers", "2", "--api-keys", str(keys), "--rate-limit", "30", "--public-endpoints")
    try:
        headers = {
            "Authorization": "Bearer rate-key-0123456789",
            "Connection": "close",
        }  # new connections: both workers
        workers = set()
        until(
            lambda: (
                len(workers.update({httpx.get(srv.url + "/readyz", headers=headers).json().get("worker")}) or workers)
                == 2
            )
        )

        def ask(i):
            return httpx.post(srv.url + "/v1/classify", json={"text": f"reset my pin {i}"}, headers=headers).status_code

        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(ask, range(160)))
        elapsed = time.monotonic() - t0
        answered, limited = codes.count(200), codes.count(429)
        assert answered + limited == 160
        # 30 a minute with a burst of 30 for the whole server (2 left for the readiness probes' refill)
        assert answered <= 30 + 30 * elapsed / 60 + 1, (answered, elapsed)
        assert answered >= 10 and limited >= 100
    finally:
        srv.stop()


# ---------------------------------------------------------------------- 8. small ones
def test_pool_export_names_a_row_whose_time_is_out_of_range(tmp_path):
    guard = PrivacyGuard()
    pool = Pool(tmp_path / "pool.sqlite", guard)
    pool.add("llm", "reset my pin", "SUPPORT", request_id="a")
    pool.add("llm", "thanks", "GRATITUDE", request_id="b")
    pool.close()
    con = sqlite3.connect(tmp_path / "pool.sqlite")
    with con:
        con.execute("UPDATE pool SET time = 1e18 WHERE request_id = 'b'")
    con.close()
    r = run_cli("pool", "export", str(tmp_path / "pool.sqlite"), "-o", str(tmp_path / "x.csv"))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert "pool row 2 has a time that is not a date" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_drift_on_a_directory_says_it_is_a_directory(tmp_path, fast_model):
    r = run_cli("drift", str(tmp_path), "--model", str(fast_model))
    assert r.returncode == 2 and f"{tmp_path} is a directory" in r.stderr and "does not exist" not in r.stderr
