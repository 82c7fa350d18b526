"""The HTTP service, tested as clients see it: a real server process on loopback."""

import shutil
import threading

import httpx
import pytest

from offramp.data.io import read_dataset
from offramp.registry.records import load

from helpers import Server, run_cli, until

KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(fast_model):
    s = Server(fast_model, "--max-body-bytes", "20000", "--max-text-chars", "2000", "--max-batch", "50")
    yield s
    out, err = s.stop()
    assert "Traceback" not in err


def test_classify_single_and_batch_match_the_model(server, fast_model, inbox_sample):
    test = read_dataset(inbox_sample[1])
    texts = [t for t in test.texts if len(t) <= 2000][:40]
    expected = list(load(fast_model).predict(texts))
    one = httpx.post(server.url + "/v1/classify", json={"text": texts[0]}).json()
    assert one["label"] == expected[0] and one["route"] == "local" and 0 < one["confidence"] <= 1 and one["request_id"]
    batch = httpx.post(server.url + "/v1/classify", json={"texts": texts}).json()
    assert [r["label"] for r in batch["results"]] == expected
    assert len({r["request_id"] for r in batch["results"]}) == len(texts)


def test_openai_compatible_drop_in(server):
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Classify the message."},
                {"role": "user", "content": [{"type": "text", "text": "thank you so much, that helped!"}]},
            ],
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "GRATITUDE"}


def test_limits_and_errors_are_clear_json(server):
    def err(r, status, kind, needle):
        assert r.status_code == status, r.text
        e = r.json()["error"]
        assert e["type"] == kind and needle in e["message"], e
        assert "Traceback" not in r.text

    err(
        httpx.post(server.url + "/v1/classify", content=b"x" * 30000, headers={"content-type": "application/json"}),
        413,
        "body_too_large",
        "20,000-byte limit",
    )
    # a body sent in chunks, with no declared length, is counted as it arrives
    err(
        httpx.post(
            server.url + "/v1/classify",
            content=iter([b'{"text": "' + b"x" * 15000, b"x" * 15000 + b'"}']),
            headers={"content-type": "application/json"},
        ),
        413,
        "body_too_large",
        "20,000-byte limit",
    )
    r = httpx.post(
        server.url + "/v1/classify",
        content=iter([b'{"text": ', b'"thanks a lot"}']),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200 and r.json()["label"], r.text
    err(httpx.post(server.url + "/v1/classify", json={"text": "a" * 2001}), 422, "text_too_long", "the limit is 2,000")
    err(httpx.post(server.url + "/v1/classify", json={"texts": ["hi"] * 51}), 422, "batch_too_large", "the limit is 50")
    err(
        httpx.post(server.url + "/v1/classify", json={"text": "a", "texts": ["b"]}),
        422,
        "invalid_request",
        "exactly one",
    )
    err(httpx.post(server.url + "/v1/classify", json={}), 422, "invalid_request", "exactly one")
    err(httpx.post(server.url + "/v1/classify", json={"text": "   "}), 422, "invalid_request", "is empty")
    err(httpx.post(server.url + "/v1/classify", json={"texts": []}), 422, "invalid_request", "no text")
    err(
        httpx.post(server.url + "/v1/classify", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "invalid_request",
        "",
    )
    err(httpx.post(server.url + "/v1/classify", json={"text": 5}), 422, "invalid_request", "text")
    for path in ("/v1/classify", "/v1/chat/completions"):  # hostile nesting, well under the size limit
        err(
            httpx.post(
                server.url + path, content=b"[" * 9000 + b"]" * 9000, headers={"content-type": "application/json"}
            ),
            422,
            "invalid_request",
            "nested too deeply",
        )
        err(httpx.post(server.url + path, json=["not", "an", "object"]), 422, "invalid_request", "")
    err(httpx.post(server.url + "/v1/chat/completions", json={"messages": "x"}), 422, "invalid_request", "messages")
    # the routes that read their own body still document it
    spec = httpx.get(server.url + "/openapi.json").json()
    for path, field in (("/v1/classify", "texts"), ("/v1/chat/completions", "messages")):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert field in body["properties"] and "$ref" not in str(body)
    err(
        httpx.post(server.url + "/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]}),
        422,
        "invalid_request",
        "no 'user' message",
    )
    err(httpx.get(server.url + "/nope"), 404, "http_error", "Not Found")
    # a lone surrogate (legal in JSON, not in UTF-8) is classified, not a 500
    r = httpx.post(
        server.url + "/v1/classify",
        content=b'{"text": "thanks \\ud800 a lot"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    # no CORS headers unless configured
    r = httpx.options(
        server.url + "/v1/classify", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in r.headers


def test_metrics_count_what_happened(fast_model):
    s = Server(fast_model)
    try:
        for t in ["thanks!", "how do I reset my pin", "thank you"]:
            assert httpx.post(s.url + "/v1/classify", json={"text": t}).status_code == 200
        httpx.post(s.url + "/v1/classify", json={"texts": ["hello", "bye"]})
        httpx.post(s.url + "/v1/classify", json={"text": ""})
        m = httpx.get(s.url + "/metrics").text
        assert 'offramp_requests_total{endpoint="/v1/classify",status="200"} 4' in m
        assert 'offramp_requests_total{endpoint="/v1/classify",status="422"} 1' in m
        assert 'offramp_decisions_total{route="local"} 5' in m
        labels = sum(
            float(line.rsplit(" ", 1)[1]) for line in m.splitlines() if line.startswith("offramp_labels_total{")
        )
        assert labels == 5
        assert "offramp_request_seconds_count 5" in m
        saved = [line for line in m.splitlines() if line.startswith("offramp_estimated_usd_saved_total ")]
        assert saved and float(saved[0].split()[1]) > 0
    finally:
        s.stop()


def test_api_keys_and_rate_limit(fast_model, tmp_path):
    keys = tmp_path / "keys.txt"
    h = run_cli("hash-key", KEY).stdout.strip()
    keys.write_text(f"# the support bot\n{h}\n")
    assert KEY not in keys.read_text()
    s = Server(fast_model, "--api-keys", str(keys), "--rate-limit", "3")
    try:
        r = httpx.post(s.url + "/v1/classify", json={"text": "hi"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        r = httpx.post(
            s.url + "/v1/classify", json={"text": "hi"}, headers={"Authorization": "Bearer wrong-key-xxxxxxxxxxxx"}
        )
        assert r.status_code == 401
        auth = {"Authorization": f"Bearer {KEY}"}
        codes = [httpx.post(s.url + "/v1/classify", json={"text": "hi"}, headers=auth).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        r = httpx.post(s.url + "/v1/classify", json={"text": "hi"}, headers=auth)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert httpx.get(s.url + "/healthz").status_code == 200  # probes need no key
    finally:
        s.stop()
    bad = tmp_path / "bad.txt"
    bad.write_text(KEY + "\n")  # a key in clear is refused: the file must hold hashes
    r = run_cli("serve", str(fast_model), "--api-keys", str(bad))
    assert r.returncode == 2 and "not a SHA-256 hex digest" in r.stderr


def test_hot_reload_keeps_serving(fast_model, inbox_sample, tmp_path):
    d = tmp_path / "live"
    shutil.copytree(fast_model, d)
    s = Server(d, "--rate-limit", "1000000")
    try:
        before = httpx.get(s.url + "/readyz").json()
        stop, codes = threading.Event(), []

        def hammer():
            with httpx.Client() as c:
                while not stop.is_set():
                    codes.append(c.post(s.url + "/v1/classify", json={"text": "where is my new card"}).status_code)

        t = threading.Thread(target=hammer)
        t.start()
        until(lambda: len(codes) >= 5)  # the traffic is flowing
        r = run_cli("train", str(inbox_sample[0]), "--out", str(d), "--quality", "fast", "--seed", "5", "--quiet")
        assert r.returncode == 0, r.stderr
        rr = httpx.post(s.url + "/v1/admin/reload", json={})
        after = len(codes)
        until(lambda: len(codes) >= after + 5)  # and goes on after the reload
        stop.set()
        t.join()
        assert rr.status_code == 200, rr.text
        after = httpx.get(s.url + "/readyz").json()
        assert after["created"] >= before["created"]
        assert codes and set(codes) == {200}, set(codes)
        # a broken new version is refused; the old one keeps answering
        (d / "arrays.npz").write_bytes(b"garbage")
        rr = httpx.post(s.url + "/v1/admin/reload", json={})
        assert rr.status_code == 409 and "previous one keeps serving" in rr.json()["error"]["message"]
        assert str(d) not in rr.text and str(tmp_path) not in rr.text  # no server paths in the answer
        assert httpx.post(s.url + "/v1/classify", json={"text": "thanks"}).status_code == 200
    finally:
        s.stop()


def test_bad_model_dir_refused_at_start(tmp_path):
    r = run_cli("serve", str(tmp_path / "none"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_openapi_docs(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/classify" in spec["paths"] and "/v1/chat/completions" in spec["paths"]


def test_micro_batcher_groups_what_is_ready_and_fails_a_batch_whole():
    import asyncio

    from offramp.serving.batching import MicroBatcher

    calls = []

    def work(items):
        calls.append(list(items))
        if "boom" in items:
            raise RuntimeError("model failed")
        return [x.upper() for x in items]

    async def main():
        b = MicroBatcher(work, max_size=3)
        # five messages ready in the same turn of the event loop: one call per max_size chunk
        got = await asyncio.gather(*[b.submit(x) for x in "abcde"])
        assert got == list("ABCDE") and calls == [list("abc"), list("de")]
        # a lone message is not held back for company
        assert await asyncio.wait_for(b.submit("z"), timeout=1) == "Z" and calls[-1] == ["z"]
        # a failure reaches every message of its batch, and only that batch
        results = await asyncio.gather(b.submit("x"), b.submit("boom"), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert await b.submit("y") == "Y"
        # a message whose client went away is not worked on
        gone = b.submit("gone")
        gone.cancel()
        assert await b.submit("kept") == "KEPT" and calls[-1] == ["kept"]

    asyncio.run(main())


def test_under_load_a_batch_waits_a_turn_or_two_for_more():
    import asyncio

    from offramp.serving.batching import MicroBatcher

    calls = []

    def work(items):
        calls.append(list(items))
        return items

    async def main():
        b = MicroBatcher(work, max_size=64)
        await asyncio.gather(*[b.submit(x) for x in "abcd"])  # busy: the last batch held 4
        loop = asyncio.get_running_loop()
        later: list = []
        loop.call_soon(lambda: later.append(b.submit("f")))  # arrives a turn after the others
        first = await asyncio.gather(*[b.submit(x) for x in "xyz"])
        assert first == list("xyz") and calls[-1] == ["x", "y", "z", "f"]  # it joined their call
        assert await later[0] == "f"
        # quiet again: a lone message waits for nobody
        for x in "pq":
            await b.submit(x)
        assert calls[-2:] == [["p"], ["q"]]

    asyncio.run(main())


def test_concurrent_requests_share_model_calls_and_keep_their_own_answers(fast_model, inbox_sample):
    import asyncio

    texts = [t for t in read_dataset(inbox_sample[1]).texts if t.strip()][:48]
    model = load(fast_model)
    s = Server(fast_model, "--rate-limit", "100000")
    try:

        async def main():
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=48)) as client:
                return await asyncio.gather(*[client.post(s.url + "/v1/classify", json={"text": t}) for t in texts])

        responses = asyncio.run(main())
        assert all(r.status_code == 200 for r in responses)
        bodies = [r.json() for r in responses]
        assert [b["label"] for b in bodies] == [model.predict_one(t)[0] for t in texts]
        for b, t in zip(bodies, texts):
            assert abs(b["confidence"] - model.predict_one(t)[1]) < 1e-4
        assert len({b["request_id"] for b in bodies}) == len(texts)
        m = httpx.get(s.url + "/metrics").text
        calls = float(next(line.split()[1] for line in m.splitlines() if line.startswith("offramp_model_calls_total ")))
        assert 1 <= calls < len(texts)  # requests that arrived together were classified together
    finally:
        s.stop()


def test_a_flag_beats_the_pipeline_file(fast_model, tmp_path):
    """serve pipeline.yaml --max-batch 3 refuses a batch of 4 though the file says 256; --audit beats
    the file's audit: too (one precedence for every setting)."""
    shutil.copytree(fast_model, tmp_path / "model")
    p = tmp_path / "p.yaml"
    p.write_text("model: model\nlimits: {max_batch: 256}\naudit: from-yaml.sqlite\n")
    s = Server(p, "--max-batch", "3", "--audit", str(tmp_path / "from-flag.sqlite"))
    try:
        r = httpx.post(s.url + "/v1/classify", json={"texts": ["hi", "thanks", "pin", "card"]})
        assert r.status_code == 422 and r.json()["error"]["type"] == "batch_too_large" and "limit is 3" in r.text
        assert httpx.post(s.url + "/v1/classify", json={"texts": ["hi", "thanks", "pin"]}).status_code == 200
    finally:
        s.stop()
    assert (tmp_path / "from-flag.sqlite").exists() and not (tmp_path / "from-yaml.sqlite").exists()
    s = Server(p)  # without the flag, the file's limit applies
    try:
        assert httpx.post(s.url + "/v1/classify", json={"texts": ["hi"] * 4}).status_code == 200
    finally:
        s.stop()
    assert (tmp_path / "from-yaml.sqlite").exists()


def test_cross_site_requests_forwarded_addresses_and_locked_endpoints(fast_model, tmp_path):
    """Bodies a browser may send across sites without asking (text/plain, forms, none) are refused
    with 415; X-Forwarded-For does not reset a client's rate limit; with API keys, readiness,
    metrics and the OpenAPI schema need a key unless --public-endpoints opens them."""
    s = Server(fast_model)
    try:
        body = '{"text": "thanks"}'
        for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}):
            r = httpx.post(s.url + "/v1/classify", content=body, headers=headers)
            assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_media_type", r.text
        r = httpx.post(s.url + "/v1/admin/reload")
        assert r.status_code == 415
    finally:
        s.stop()
    s = Server(fast_model, "--rate-limit", "3")
    try:
        codes = [
            httpx.post(
                s.url + "/v1/classify", json={"text": "hi"}, headers={"X-Forwarded-For": f"10.0.0.{i}"}
            ).status_code
            for i in range(4)
        ]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429, codes  # the real client is counted, whatever it claims
    finally:
        s.stop()
    keys = tmp_path / "keys.txt"
    keys.write_text(run_cli("hash-key", KEY).stdout)
    for extra, opened in (([], False), (["--public-endpoints"], True)):
        s = Server(fast_model, "--api-keys", str(keys), *extra)
        try:
            assert httpx.get(s.url + "/healthz").status_code == 200  # probes stay open
            for path in ("/readyz", "/metrics"):
                assert httpx.get(s.url + path).status_code == (200 if opened else 401), path
                assert httpx.get(s.url + path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
            assert httpx.get(s.url + "/openapi.json").status_code == (200 if opened else 404)
        finally:
            s.stop()
