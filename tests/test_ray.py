"""The Ray engine on a real local cluster: a head and a second node process, token auth on."""

import os
import secrets
import shutil
import signal
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths
from offramp.errors import UsageError
from offramp.scale.stream import predict_files

from helpers import _free_port, read_pairs, run_cli, run_cli_process, write_csv
from misbehaving_llm import GoldLLM

# Ray reads its authentication settings once, when first imported: set them before anything does
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
os.environ.update(AUTH)
import ray  # noqa: E402  (after the settings above; a missing Ray extra fails, never skips)


def _ray(*args: str, env: dict) -> None:
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    subprocess.run([ray_bin, *args], env=env, check=True, capture_output=True, timeout=180)


@pytest.fixture(scope="module")
def cluster():
    """``ray start --head`` and ``ray start --address`` on this machine: two nodes of one CPU each."""
    env = {**os.environ, **AUTH}
    port = _free_port()
    _ray("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false", env=env)
    try:
        _ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=1", env=env)
        yield {"address": f"127.0.0.1:{port}", "env": env}
    finally:
        subprocess.run([shutil.which("ray") or "ray", "stop", "--force"], capture_output=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray-shards")
    texts = read_dataset(demo_paths()[1]).texts
    for s in range(3):
        t = [texts[(s * 700 + k) % len(texts)] for k in range(4000)]
        if s == 2:
            t[5] = None
        pq.write_table(pa.table({"id": list(range(s * 4000, (s + 1) * 4000)), "text": t}), d / f"s{s}.parquet")
    return d


def _table(path):
    return pa.concat_tables([pq.read_table(p) for p in sorted(path.iterdir())])


def test_same_output_as_local_with_work_on_both_nodes(cluster, fast_model, shards, tmp_path):
    local = predict_files(fast_model, shards, tmp_path / "local", keep=["id"], workers=1, batch_size=500)
    rep = predict_files(
        fast_model, shards, tmp_path / "ray", keep=["id"], engine="ray", address=cluster["address"], batch_size=500
    )
    assert _table(tmp_path / "ray").equals(_table(tmp_path / "local"))  # row for row, every column
    assert rep.predicted == local.predicted == 11_999 and rep.warnings() == local.warnings()
    assert len(rep.rows_by_node) == 2 and min(rep.rows_by_node.values()) >= 4_000  # both nodes worked
    assert sum(rep.rows_by_node.values()) == rep.predicted


def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(cluster, fast_model, shards, tmp_path):
    killed: list[int] = []

    def kill_one_actor(done, total):
        if killed or done < 2_000:
            return
        pids = subprocess.run(["pgrep", "-f", "ray::Predictor"], capture_output=True, text=True).stdout.split()
        assert pids, "no Ray actor process found"
        os.kill(int(pids[0]), signal.SIGKILL)
        killed.append(int(pids[0]))

    out = tmp_path / "out.jsonl"
    rep = predict_files(
        fast_model,
        shards,
        out,
        keep=["id"],
        engine="ray",
        address=cluster["address"],
        batch_size=200,
        on_progress=kill_one_actor,
    )
    assert killed and rep.workers_replaced >= 1
    ids = [int(line.split('"id": ', 1)[1].split(",", 1)[0]) for line in out.read_text().splitlines()]
    expected = [i for i in range(12_000) if i != 8_005]
    assert ids == expected  # complete, in the input's order, no row twice
    local = tmp_path / "local.jsonl"
    predict_files(fast_model, shards, local, keep=["id"], workers=1)
    assert out.read_text() == local.read_text()


def test_cli_on_the_cluster_prints_rows_per_node(cluster, fast_model, shards, tmp_path):
    r = run_cli_process(
        "predict",
        str(fast_model),
        str(shards),
        "--out",
        str(tmp_path / "o.parquet"),
        "--engine",
        "ray",
        "--address",
        cluster["address"],
        env=cluster["env"],
    )
    assert r.returncode == 0, r.stderr
    assert "wrote 11,999 predictions" in r.stderr and "rows predicted per Ray node" in r.stderr
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 11_999


def test_an_address_where_nothing_answers_is_one_line(fast_model, shards, tmp_path):
    r = run_cli_process(
        "predict", str(fast_model), str(shards), "--out", str(tmp_path / "o"), "--engine", "ray",
        "--address", f"127.0.0.1:{_free_port()}",
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "no Ray cluster answers at 127.0.0.1:" in r.stderr
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".*"))


def test_without_ray_installed_the_error_names_the_extra(fast_model, shards, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes 'import ray' fail as if it were not installed
    with pytest.raises(UsageError) as e:
        predict_files(fast_model, shards, tmp_path / "o", engine="ray")
    assert "needs Ray" in str(e.value) and "offramp[ray]" in str(e.value)
    assert not (tmp_path / "o").exists()


TASK = """labels:
  SUPPORT: questions about using the product
  GRATITUDE: thanks
  TRY_TO_HACK: attempts to misuse the assistant
  OTHER: everything else
"""


def test_label_on_the_cluster_sends_each_text_once_within_one_rate(cluster, tmp_path):
    pairs = read_pairs(demo_paths()[1])[:60]
    data = write_csv(tmp_path / "in.csv", [(t, "") for t, _ in pairs])
    (tmp_path / "task.yaml").write_text(TASK)
    llm = GoldLLM(dict(pairs))
    try:
        args = ["label", str(data), "--llm", "gpt-4o-mini", "--base-url", llm.url + "/v1"]
        args += ["--task", str(tmp_path / "task.yaml"), "--cache", str(tmp_path / "c.sqlite"), "--no-schema"]
        args += ["--engine", "ray", "--address", cluster["address"], "--concurrency", "8", "--rate", "30"]
        r = run_cli_process(*args, "--out", str(tmp_path / "a.csv"), env=cluster["env"])
        assert r.returncode == 0, r.stderr
        assert len(llm.requests) == 60  # each text once
        assert [lab for _, lab in read_pairs(tmp_path / "a.csv")] == [lab for _, lab in pairs]
        nodes = r.stdout.split("requests sent per Ray node: ", 1)[1].strip().split(", ")
        assert len(nodes) == 2  # both nodes sent some
        # one rate for the whole cluster: turns 1/30 s apart when sent. Arrival times carry the
        # actors' queueing jitter (tens of ms on a busy machine), so a 1-second window may hold a
        # few more than 30; one limit per node would let about 60 through in a second, and the 60
        # requests would take about 1 s in all instead of 2
        times = sorted(llm.times)
        busiest = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
        assert busiest <= 33, busiest
        assert times[-1] - times[0] >= 59 / 30 - 0.3, times[-1] - times[0]
        r = run_cli_process(*args, "--out", str(tmp_path / "b.csv"), env=cluster["env"])
        assert r.returncode == 0, r.stderr
        assert len(llm.requests) == 60 and "0 calls sent, 60 answered from the cache" in r.stdout
    finally:
        llm.close()


def test_bad_inputs_are_refused_before_ray_starts(fast_model, shards, tmp_path):
    (tmp_path / "exists.jsonl").write_text("")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.parquet").write_bytes(b"not parquet")
    for args, message in [
        ([str(shards), "--out", str(tmp_path / "exists.jsonl")], "already exists"),
        ([str(tmp_path / "none-*.parquet"), "--out", str(tmp_path / "o")], "matches no file"),
        ([str(tmp_path / "bad"), "--out", str(tmp_path / "o")], "Parquet"),
    ]:
        r = run_cli("predict", str(fast_model), *args, "--engine", "ray")
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (args, r.stderr)
        assert message in r.stderr, r.stderr
        assert not (tmp_path / "o").exists()


def _clinc_hierarchy(tmp_path):
    """A small chain (router + one model per domain) on three CLINC150 domains."""
    import json
    from pathlib import Path

    from offramp.chain.hierarchy import train_hierarchy

    base = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "clinc150"
    data = json.loads((base / "data_full.json").read_text())
    domains = json.loads((base / "domains.json").read_text())
    keep = {i: d for d in ("banking", "travel", "work") for i in sorted(domains[d])[:5]}
    rows = [(t, f"{keep[i]}/{i}") for t, i in data["train"] if i in keep]
    rep = train_hierarchy(write_csv(tmp_path / "h.csv", rows), tmp_path / "h", quality="fast", flat=False)
    texts = [t for t, _ in data["test"]] + [t for t, _ in data["val"]]
    return Path(rep.pipeline), texts[:2000]


def test_a_chain_on_ray_serve_answers_as_in_process_with_a_stage_on_both_nodes(cluster, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import yaml

    from offramp.chain.run import Chain

    pipeline, texts = _clinc_hierarchy(tmp_path)
    doc = yaml.safe_load(pipeline.read_text())
    for stage in doc["stages"]:
        if stage["name"] == "banking":
            stage["replicas"] = 2  # the stage that gets the most traffic here gets two replicas
    pipeline.write_text(yaml.safe_dump(doc))
    expected = [d.label for d in Chain.from_pipeline(pipeline, llm=False).run_many(texts)]
    chain = Chain.from_pipeline(pipeline, llm=False, engine="ray", ray_address=cluster["address"])
    try:
        chunks = [texts[i : i + 50] for i in range(0, len(texts), 50)]
        with ThreadPoolExecutor(4) as pool:  # batches in flight together, as a busy service sends them
            got = [d.label for batch in pool.map(chain.run_many, chunks) for d in batch]
        assert got == expected
        assert chain.run(texts[0]).label == expected[0]
        counts = chain.replica_counts()
        assert set(counts) == {"router", "banking", "travel", "work"}
        banking = counts["banking"]
        assert len(banking) == 2 and all(n > 0 for n in banking.values())  # both replicas answered
        assert len({where.split("/")[0] for where in banking}) == 2  # ... on the two nodes
        assert sum(counts["router"].values()) == len(texts) + 1
    finally:
        chain.close()
    assert not ray.is_initialized()  # it joined the cluster for the chain and left with it
    # the same chain served over HTTP by the command line, its stages on the cluster
    import httpx

    from helpers import Server

    s = Server(pipeline, "--engine", "ray", "--address", cluster["address"], start_s=240)
    try:
        ready = httpx.get(s.url + "/readyz", timeout=30).json()
        assert [x["stage"] for x in ready["stages"]] == ["guard", "router", "banking", "travel", "work"]
        r = httpx.post(s.url + "/v1/classify", json={"texts": texts[:250]}, timeout=120)
        assert r.status_code == 200, r.text
        assert [a["label"] for a in r.json()["results"]] == expected[:250]
    finally:
        out, err = s.stop()
    # stopped by SIGTERM: uvicorn shuts down (the chain's Serve applications are deleted) and then
    # passes the signal on, which Ray's handler turns into exit code 15
    assert s.proc.returncode in (0, 15, -15), err[-2000:]
    from ray import serve

    ray.init(address=cluster["address"], logging_level="ERROR")
    try:
        left = [name for name in serve.status().applications if name.startswith("offramp-")]
    finally:
        ray.shutdown()
    assert left == [], left
    with pytest.raises(UsageError, match="serves a chain's stages"):
        from offramp.runtime.cascade import Cascade

        Cascade.from_pipeline(tmp_path / "h" / "stages" / "router", engine="ray")
