"""The web console in a real browser: headless Chromium (Debian's package) driven by Playwright.

A registry is served behind a pipeline in llm_first shadow mode with a capture pool; traffic with
seeded personal data flows; the pages are read, the review queue is worked with the keyboard,
versions are promoted and rolled back from the page, and logins are tried with wrong and right
keys. Screenshots go to .ci/screenshots/ (not committed).
"""

import json
import os
import random
import shutil
import time
from pathlib import Path

import httpx
import pytest
from playwright import sync_api

from offramp.capture.pool import read_rows
from offramp.demo.data import demo_paths
from offramp.privacy.guard import PrivacyGuard

from helpers import Server, read_pairs, run_cli, write_csv
from misbehaving_llm import GoldLLM

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / ".ci" / "screenshots"
EMAIL, PHONE = "olga.berg.77@example.net", "+1 415 555 0142"
ADMIN_KEY, USER_KEY = "admin-key-0123456789abcdef", "user-key-0123456789abcdef"

if not os.path.exists(CHROMIUM):  # pragma: no cover - setup installs it
    pytest.fail("Chromium is not installed (apt-get install chromium): the console tests need a real browser")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("console")
    train, test, _ = demo_paths()
    known = [r for r in read_pairs(train) if r[1] != "OTHER"][:900]
    traffic = read_pairs(test)
    random.Random(3).shuffle(traffic)
    traffic = [
        (f"{t} — write to {EMAIL} or call {PHONE}" if i % 5 == 0 else t, lab) for i, (t, lab) in enumerate(traffic)
    ]
    guard = PrivacyGuard()
    llm = GoldLLM({**{t: lab for t, lab in traffic}, **{guard(t): lab for t, lab in traffic}})
    reg = d / "reg"
    r = run_cli("train", str(write_csv(d / "t.csv", known)), "--registry", str(reg), "--quality", "fast", "-q")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", str(write_csv(d / "t2.csv", known[:600])), "--registry", str(reg), "--quality", "fast", "-q")
    assert r.returncode == 0, r.stderr
    (d / "pipeline.yaml").write_text(
        f"model: reg\nllm: {{base_url: '{llm.url}/v1', model: gold, labels: [OTHER]}}\n"
        "shadow: {mode: llm_first}\ncapture: {pool: pool.sqlite, ttl_s: 600}\n"
    )
    (d / "admin.txt").write_text(run_cli("hash-key", ADMIN_KEY).stdout)
    (d / "users.txt").write_text(run_cli("hash-key", USER_KEY).stdout)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield {"dir": d, "reg": reg, "traffic": traffic, "llm": llm}
    llm.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _send(srv, traffic):
    for i in range(0, len(traffic), 50):
        r = httpx.post(srv.url + "/v1/classify", json={"texts": [t for t, _ in traffic[i : i + 50]]}, timeout=60)
        assert r.status_code == 200, r.text


def _until(check, timeout=10.0):
    """Poll ``check()`` from here (a predicate run inside the page would need eval, which the
    console's Content-Security-Policy forbids)."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.1)


def _no_pii(page):
    body = page.content()
    assert EMAIL not in body and "555 0142" not in body


def test_the_console_open_and_admin(setup, browser):
    d = setup["dir"]
    srv = Server(d / "pipeline.yaml", "--ui-admin-open")
    try:
        _send(srv, setup["traffic"][:300])
        page = browser.new_page()
        page.goto(srv.url + "/ui")
        page.wait_for_selector("#v-messages")
        assert page.inner_text("#v-messages") == "300"
        assert page.inner_text("#v-requests") == "6"
        assert page.inner_text("#v-version") == "v0001"
        assert page.inner_text("#v-llm-share") == "100.0%"  # llm_first: every answer is the LLM's
        page.wait_for_selector("#shadow-table")
        assert "TRY_TO_HACK" in page.inner_text("#shadow-table")
        page.wait_for_selector("#drift-table")
        # the overview refreshes itself: more traffic shows without a reload
        _send(srv, setup["traffic"][300:350])
        _until(lambda: page.inner_text("#v-messages") == "350")
        _no_pii(page)
        page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)
        # console calls and health checks are not traffic
        httpx.get(srv.url + "/healthz")
        assert httpx.get(srv.url + "/ui/api/overview").status_code == 401  # no session cookie: not this way
        page.reload()
        page.wait_for_selector("#v-requests")
        assert page.inner_text("#v-requests") == "7"

        # review three queued messages with the keyboard
        page.goto(srv.url + "/ui/review")
        page.wait_for_selector(".item")
        counts = page.inner_text("#review-counts")
        assert "waiting" in counts
        _no_pii(page)
        page.screenshot(path=str(SHOTS / "review.png"))
        # filters: by source and label, through the console's API with the page's session
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        got = httpx.get(srv.url + "/ui/api/review?source=disagreed&label=SUPPORT", cookies=cookies).json()
        assert got["items"] and all(it["source"] == "disagreed" for it in got["items"])
        assert all("SUPPORT" in (it["label"], it["llm"]) for it in got["items"])
        bad = httpx.get(srv.url + "/ui/api/review?source=nope", cookies=cookies)
        assert bad.status_code == 422 and "source must be" in bad.json()["error"]["message"]
        reviewed = []
        labels = json.loads(page.evaluate("JSON.stringify(review.labels)"))
        for _ in range(3):
            page.wait_for_selector(".item.current")
            rid = page.get_attribute(".item.current", "data-request-id")
            page.keyboard.press(str(labels.index("SUPPORT") + 1))
            page.keyboard.press("Enter")
            _until(lambda rid=rid: page.query_selector(f'[data-request-id="{rid}"]') is None)
            reviewed.append(rid)
        skipped = page.get_attribute(".item.current", "data-request-id")
        page.keyboard.press("s")  # skip one: the next item becomes current, nothing is saved
        _until(lambda: page.get_attribute(".item.current", "data-request-id") != skipped)
        rows = read_rows(d / "pool.sqlite", ["feedback"])
        assert sorted(r["request_id"] for r in rows) == sorted(reviewed)
        assert all(r["label"] == "SUPPORT" for r in rows)

        # models: promote v0002 from the page, then roll back
        page.goto(srv.url + "/ui/models")
        page.wait_for_selector("#versions-table")
        page.click("[data-promote=v0002]")
        _until(lambda: "current v0002" in page.inner_text("main"))
        assert httpx.get(srv.url + "/readyz").json()["version"] == "v0002"
        page.click("#rollback")
        _until(lambda: "current v0001" in page.inner_text("main"))
        assert httpx.get(srv.url + "/readyz").json()["version"] == "v0001"
        # retrain now: the pool's LLM answers and the three corrections, behind the gate, in the background
        page.click("#retrain")
        _until(
            lambda: "Retrain promoted" in page.inner_text("#job") or "Retrain refused" in page.inner_text("#job"), 120
        )
        job = page.inner_text("#job")
        assert "v0003 vs v0001" in job
        if "promoted" in job:
            _until(lambda: httpx.get(srv.url + "/readyz").json()["version"] == "v0003")
        page.screenshot(path=str(SHOTS / "models.png"), full_page=True)
        # nothing new in the pool since: a second retrain is refused with a message in the page
        page.click("#retrain")
        page.wait_for_selector("#toast .msg.error")
        assert "no new LLM answers or corrections" in page.inner_text("#toast")

        # the report of the live version, on the registry's gate set
        page.goto(srv.url + "/ui/report")
        frame = page.frame_locator("#report")
        frame.locator("h1").wait_for(timeout=60_000)
        live = httpx.get(srv.url + "/readyz").json()["version"]
        assert f"offramp report: {live}" in frame.locator("h1").inner_text()
        page.screenshot(path=str(SHOTS / "report.png"), full_page=True)
        _no_pii(page)
    finally:
        srv.stop()


def test_bad_requests_get_clear_answers(setup, browser):
    d = setup["dir"]
    srv = Server(d / "pipeline.yaml", "--ui-admin-open")
    try:
        page = browser.new_page()
        page.goto(srv.url + "/ui/models")
        page.wait_for_selector("#versions-table")
        csrf = page.get_attribute('meta[name="csrf-token"]', "content")
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}

        def post(path, body, token=csrf):
            headers = {"X-CSRF-Token": token} if token else {}
            return httpx.post(srv.url + path, json=body, headers=headers, cookies=cookies)

        r = post("/ui/api/promote", {"version": "v0042"})
        assert r.status_code == 404 and "no version v0042" in r.json()["error"]["message"]
        r = post("/ui/api/promote", {"version": "v0002"}, token=None)
        assert r.status_code == 403 and r.json()["error"]["type"] == "csrf_failed"
        r = post("/ui/api/promote", {"version": "v0002"}, token="forged")
        assert r.status_code == 403
        r = post("/ui/api/review", {"request_id": "gone", "label": "SUPPORT"})
        assert r.status_code == 404 and r.json()["error"]["type"] == "review_expired"
        # the page shows the message of a refused action
        page.evaluate("api('/ui/api/promote', {version: 'v0042'}).catch(e => toast(e.message, true))")
        page.wait_for_selector("#toast .msg.error")
        assert "no version v0042" in page.inner_text("#toast")
        # every console response carries a strict CSP
        csp = httpx.get(srv.url + "/ui", cookies=cookies).headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    finally:
        srv.stop()
    # without keys and without --ui-admin-open the console is read-only
    srv = Server(d / "pipeline.yaml")
    try:
        page = browser.new_page()
        page.goto(srv.url + "/ui/models")
        page.wait_for_selector("#versions-table")
        assert page.query_selector("[data-promote]") is None and "Read-only" in page.inner_text("main")
        csrf = page.get_attribute('meta[name="csrf-token"]', "content")
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        r = httpx.post(srv.url + "/ui/api/rollback", json={}, headers={"X-CSRF-Token": csrf}, cookies=cookies)
        assert r.status_code == 403 and "--ui-admin-open" in r.json()["error"]["message"]
    finally:
        srv.stop()


def test_login_with_keys(setup, browser):
    d = setup["dir"]
    srv = Server(d / "pipeline.yaml", "--api-keys", str(d / "users.txt"), "--admin-keys", str(d / "admin.txt"))
    try:
        page = browser.new_page()
        page.goto(srv.url + "/ui")
        assert page.url.endswith("/ui/login")
        page.fill("#key", "wrong-key-000000000000")
        page.click("#sign-in")
        page.wait_for_selector("#login-error")
        assert "unknown key" in page.inner_text("#login-error")
        page.screenshot(path=str(SHOTS / "login.png"))
        # a user key: read-only
        page.fill("#key", USER_KEY)
        page.click("#sign-in")
        page.wait_for_selector("#v-version")
        assert page.inner_text("#role") == "read-only"
        cookie = next(c for c in page.context.cookies() if c["name"] == "offramp_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and USER_KEY not in page.url
        csrf = page.get_attribute('meta[name="csrf-token"]', "content")
        r = httpx.post(
            srv.url + "/ui/api/promote",
            json={"version": "v0002"},
            headers={"X-CSRF-Token": csrf},
            cookies={"offramp_session": cookie["value"]},
        )
        assert r.status_code == 403 and r.json()["error"]["type"] == "admin_required"
        # an admin key: promote works
        admin = browser.new_page()
        admin.goto(srv.url + "/ui/login")
        admin.fill("#key", ADMIN_KEY)
        admin.click("#sign-in")
        admin.wait_for_selector("#v-version")
        assert admin.inner_text("#role") == "admin"
        headers = {"Authorization": f"Bearer {USER_KEY}"}
        before = httpx.get(srv.url + "/readyz", headers=headers).json()["version"]
        admin.goto(srv.url + "/ui/models")
        admin.click("[data-promote=v0002]")
        _until(lambda: "current v0002" in admin.inner_text("main"))
        assert httpx.get(srv.url + "/readyz", headers=headers).json()["version"] == "v0002"
        admin.click("#rollback")
        _until(lambda: f"current {before}" in admin.inner_text("main"))
    finally:
        srv.stop()
