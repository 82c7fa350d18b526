"""``serve --workers 2``: two processes on one port, one set of metrics, one audit chain, reloads everywhere."""

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from offramp.audit.log import AuditLog
from offramp.training.train import train

from helpers import Server, metric, run_cli, until


def _classify(url: str, text: str) -> tuple[int, str]:
    # a new connection each time: uvicorn's workers share the listening socket, so both get some
    r = httpx.post(url + "/v1/classify", json={"text": text}, headers={"Connection": "close"}, timeout=30)
    return r.status_code, r.json().get("label", "")


@pytest.fixture(scope="module")
def two_workers(fast_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("workers")
    shutil.copytree(fast_model, d / "model")  # a copy: a test writes a new model over it
    srv = Server(d / "model", "--workers", "2", "--audit", str(d / "audit.sqlite"))
    yield srv, d
    srv.stop()


def test_both_workers_answer_and_metrics_count_every_request(two_workers):
    srv, _ = two_workers
    seen = set()
    deadline = time.time() + 30
    while len(seen) < 2 and time.time() < deadline:  # both processes are up and accepting
        seen.add(httpx.get(srv.url + "/readyz", headers={"Connection": "close"}).json()["worker"])
    assert len(seen) == 2
    before = metric(
        httpx.get(srv.url + "/metrics").text, "offramp_requests_total", endpoint="/v1/classify", status="200"
    )
    texts = [f"my card was charged twice, order {i}" for i in range(200)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda t: _classify(srv.url, t), texts))
    assert all(code == 200 for code, _ in answers)

    def total():
        text = httpx.get(srv.url + "/metrics", headers={"Connection": "close"}).text
        return metric(text, "offramp_requests_total", endpoint="/v1/classify", status="200")

    # other workers' counts arrive within half a second, whichever worker answers the scrape
    until(lambda: all(total() == (before or 0) + 200 for _ in range(4)))
    for _ in range(6):  # whichever worker answers the scrape, the total is the server's
        text = httpx.get(srv.url + "/metrics", headers={"Connection": "close"}).text
        assert metric(text, "offramp_requests_total", endpoint="/v1/classify", status="200") == (before or 0) + 200
        assert metric(text, "offramp_request_seconds_count") >= 200


def test_one_audit_chain_from_both_workers(two_workers):
    srv, d = two_workers
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: _classify(srv.url, f"thank you so much {i}"), range(100)))
    log = AuditLog(d / "audit.sqlite", create=False)
    # the workers' last batches are written a moment after the answers
    verdict = until(lambda: (v := log.verify()).records >= 100 and v) or log.verify()
    assert verdict.ok, verdict.message
    assert verdict.records >= 100
    r = run_cli("audit", "verify", str(d / "audit.sqlite"))
    assert r.returncode == 0, r.stderr


def test_a_reload_reaches_every_worker(two_workers):
    """A new model written over the served directory, one reload asked of one worker: every worker
    answers with the new version (a worker uvicorn restarted meanwhile starts on it too)."""
    srv, d = two_workers
    versions = lambda: {  # noqa: E731  (worker -> version), from as many answers as it takes to see both
        r["worker"]: r["version"]
        for r in (httpx.get(srv.url + "/readyz", headers={"Connection": "close"}).json() for _ in range(12))
    }
    old = set(versions().values())
    texts = ["reset my pin please", "thank you so much", "how do I reset the pin", "thanks a lot!"] * 5
    labels = ["SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE"] * 5
    model, _ = train(texts, labels, quality="fast", time_limit=None)
    model.save(d / "model")  # replaces the directory the workers serve
    r = httpx.post(srv.url + "/v1/admin/reload", json={})
    assert r.status_code == 200
    new = r.json()["version"]
    assert new not in old
    deadline = time.time() + 15
    seen = versions()
    while (len(seen) < 2 or set(seen.values()) != {new}) and time.time() < deadline:
        time.sleep(0.2)
        seen = versions()
    assert len(seen) >= 2 and set(seen.values()) == {new}, seen


def test_the_console_says_it_needs_one_worker(two_workers):
    srv, _ = two_workers
    r = httpx.get(srv.url + "/ui/review")
    assert r.status_code == 503 and "one worker" in r.json()["error"]["message"]


def test_feedback_capture_with_workers_is_refused_in_one_line(fast_model, tmp_path):
    (tmp_path / "p.yaml").write_text(f"model: {fast_model}\ncapture: {{pool: pool.sqlite, from: [feedback]}}\n")
    r = run_cli("serve", str(tmp_path / "p.yaml"), "--workers", "2", "--port", "1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "feedback" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_workers_socket_gives_accepted_connections_tcp_nodelay():
    """uvicorn's own socket for --workers leaves the protocol at 0, and asyncio then leaves Nagle
    on: every keep-alive answer waited ~40 ms for a delayed ACK."""
    import asyncio
    import socket

    from offramp.serving.workers import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    got = {}

    async def main():
        async def handle(reader, writer):
            got["nodelay"] = writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    assert got["nodelay"]
