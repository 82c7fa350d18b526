"""``offramp demo --chain``: the support bot as a chain of specialised small models.

privacy guard → abuse detector (its own model: jailbreaks and off-purpose requests stop here) →
router (SUPPORT / GRATITUDE / OTHER) → for SUPPORT, a banking-intent model (Banking77's 77
intents) → an action per answer → validators on the reply: the privacy guard (no personal data
goes back out) and the abuse detector reading the reply (no jailbreak or attack text goes back
out). With an LLM (``llm=``, ``base_url=``), it answers what no stage is sure of (an ``llm`` stage
below ``llm_threshold``) and writes the replies to OTHER, which the validators check; the demo
then runs a sample of the test messages through it live.

Each model is trained into a registry of its own under ``OUT/stages/``, so each is retrained,
gated and promoted alone. The end-to-end test set is the inbox's test messages that are not
SUPPORT (their labels are the answers) and Banking77's test messages as ``SUPPORT/<intent>``;
each stage is also judged on its own question. Banking77's training file is sampled (at most
``per_intent`` messages an intent) so the demo stays quick; its test file is used whole, less any
text the inbox's training file holds.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from offramp.chain.run import Chain
from offramp.data.io import Dataset
from offramp.demo.data import demo_docs, demo_paths
from offramp.errors import UsageError
from offramp.evaluation.chain import ChainEvaluation, evaluate_chain
from offramp.training.speed import measure_latency
from offramp.training.train import train

HEADER = (
    "# The support bot as a chain of small models: privacy guard -> abuse detector -> router ->\n"
    "# banking intents -> an action per answer -> checks that no personal data and no attack text goes back out.\n"
    "# With an llm: section, the LLM answers what no stage is sure of and writes the replies to OTHER.\n"
)
WRITER = (
    "You are the support assistant of a bank. Answer the customer's message in at most two short sentences. "
    "Never ask for passwords, PINs or card numbers."
)
INTENT_REPLIES = {
    "card_arrival": "New cards arrive within 5 working days; you can follow the delivery in the app under Cards.",
    "lost_or_stolen_card": "Freeze the card now in the app (Cards → Freeze), then order a replacement there.",
    "activate_my_card": "Open the app, go to Cards and tap Activate; you will need the card in front of you.",
    "change_pin": "You can change your PIN at any of our cash machines with your current PIN.",
    "exchange_rate": "We use the interbank rate of the moment you pay; the app shows it before you confirm.",
}


def _read(path: Path, text_col: str, label_col: str) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(r[text_col], r[label_col]) for r in csv.DictReader(f)]


def banking77_paths() -> tuple[Path, Path]:
    """(train.csv, test.csv) of the bundled Banking77 copy (columns ``text``, ``category``)."""
    base = Path(str(resources.files("offramp.demo").joinpath("banking77")))
    return base / "train.csv", base / "test.csv"


@dataclass
class StageRow:
    stage: str
    kind: str
    version: str | None
    labels: int
    reached: float | None  # share of the test messages that reached it
    accuracy: float | None  # on its own question (the messages that reached it by a right path)
    macro_f1: float | None
    p50_ms: float | None  # its model alone, one message at a time
    p99_ms: float | None


@dataclass
class LiveFigures:
    """A sample of the test messages through the chain with its LLM, live."""

    llm: str
    n: int
    accuracy: float  # with the LLM
    macro_f1: float
    stages_accuracy: float  # the stages alone, on the same messages
    stages_macro_f1: float
    asked: int  # messages whose label the LLM gave
    failed: int  # messages whose LLM call failed (the stages' answer stood)
    replies: int  # replies the LLM wrote
    replies_masked: int  # ... with personal data masked by the guard
    replies_blocked: int  # ... blocked by the abuse detector reading them
    seconds: float


@dataclass
class ChainDemoResult:
    out_dir: str
    pipeline: str
    stages: list[StageRow]
    evaluation: ChainEvaluation
    local_share: float  # messages every stage answered with confidence >= the LLM threshold
    llm_threshold: float
    train_seconds: float
    seconds: float
    notes: list[str] = field(default_factory=list)
    live: LiveFigures | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stage_latency(chain: Chain, texts: list[str]) -> dict[str, tuple[float | None, float | None]]:
    out: dict[str, tuple[float | None, float | None]] = {}
    for s in chain.classify_stages:
        assert s.cascade is not None
        lat = measure_latency(s.cascade.model.predict_one, texts, n=300, warmup=10, max_seconds=0.5, min_n=50)
        out[s.name] = (lat["p50"], lat["p99"])
    return out


def run_chain_demo(
    out_dir: str | os.PathLike[str] = "offramp-demo-chain",
    *,
    quality: str = "fast",
    time_limit: float | str | None = "auto",
    per_intent: int = 60,
    seed: int = 0,
    llm_threshold: float = 0.5,
    llm: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    live_sample: int = 300,
    on_progress: Callable[[str], None] | None = None,
) -> ChainDemoResult:
    """Train the chain's models, write its pipeline file and measure it end to end and per stage;
    with ``llm`` and ``base_url`` (any OpenAI-compatible server), the pipeline asks that LLM and a
    sample of ``live_sample`` test messages goes through it live."""
    if (llm is None) != (base_url is None):
        raise UsageError("--llm and --base-url go together", "give both, or neither for the chain without an LLM")
    started = time.perf_counter()
    say = on_progress or (lambda _m: None)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        earlier = out / "pipeline.yaml"
        if not (earlier.is_file() and earlier.read_text(encoding="utf-8").startswith(HEADER)):
            raise UsageError(f"{out} is not empty and is not an earlier chain demo", "give a new directory with --out")
        shutil.rmtree(out)
    inbox_train, inbox_test, _ = demo_paths()
    b_train, b_test = banking77_paths()
    train_rows = _read(inbox_train, "text", "label")
    test_rows = _read(inbox_test, "text", "label")
    seen = {t for t, _ in train_rows}
    rng = random.Random(seed)
    by_intent: dict[str, list[str]] = {}
    for t, c in _read(b_train, "text", "category"):
        by_intent.setdefault(c, []).append(t)
    bank = [(t, c) for c, ts in sorted(by_intent.items()) for t in rng.sample(ts, min(per_intent, len(ts)))]
    stages = out / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    common: dict[str, Any] = {"quality": quality, "time_limit": time_limit, "seed": seed}

    def fit(name: str, rows: list[tuple[str, str]]) -> None:
        say(f"training {name} ({len(rows):,} messages, {len({lab for _, lab in rows})} labels)")
        train([t for t, _ in rows], [lab for _, lab in rows], registry=stages / name, **common)

    fit("abuse", [(t, "TRY_TO_HACK" if lab == "TRY_TO_HACK" else "SAFE") for t, lab in train_rows])
    fit("router", [(t, lab) for t, lab in train_rows if lab != "TRY_TO_HACK"])
    fit("banking", bank)
    train_seconds = time.perf_counter() - t0
    shutil.copytree(demo_docs(), out / "docs")
    actions: dict[str, dict[str, Any]] = {
        "TRY_TO_HACK": {"type": "refuse", "template": "I can only help with questions about your account and cards."},
        "GRATITUDE": {"type": "reply", "text": "👍"},
        **{f"SUPPORT/{k}": {"type": "reply", "text": v} for k, v in INTENT_REPLIES.items()},
    }
    stage_list: list[dict[str, Any]] = [
        {"name": "privacy", "kind": "guard"},
        {"name": "abuse", "kind": "classify", "model": "stages/abuse", "label": False, "stop": ["TRY_TO_HACK"]},
        {"name": "router", "kind": "classify", "model": "stages/router"},
        {"name": "banking", "kind": "classify", "model": "stages/banking", "when": "router.label == SUPPORT"},
    ]
    if llm is not None:
        stage_list.append({"name": "ask", "kind": "llm", "below": llm_threshold})
    stage_list.append({"name": "act", "kind": "action", "actions": actions})
    if llm is not None:
        stage_list.append(
            {"name": "write", "kind": "llm", "reply": True, "system": WRITER, "when": "router.label == OTHER"}
        )
    stage_list += [
        {"name": "reply_check", "kind": "validate", "check": "guard"},
        {
            "name": "reply_safety",  # the abuse detector reads the reply too: no attack text goes back out
            "kind": "validate",
            "model": "stages/abuse",
            "block": ["TRY_TO_HACK"],
            "text": "Sorry, I can't send that reply; a colleague will answer you.",
        },
    ]
    doc: dict[str, Any] = {"label_sep": "/", "privacy": {"operator": "placeholder"}, "audit": "audit.sqlite"}
    if llm is not None:
        doc["llm"] = {"base_url": base_url, "model": llm, "api_key_env": api_key_env, "timeout_s": 30}
    doc["stages"] = stage_list
    pipeline = out / "pipeline.yaml"
    pipeline.write_text(HEADER + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    say("measuring the chain")
    chain = Chain.from_pipeline(pipeline, llm=False)
    truth = [(t, lab) for t, lab in test_rows if lab != "SUPPORT"]
    truth += [(t, f"SUPPORT/{c}") for t, c in _read(b_test, "text", "category") if t not in seen]
    ds = Dataset([t for t, _ in truth], [lab for _, lab in truth], "inbox test (not SUPPORT) + Banking77 test")
    ev = evaluate_chain(chain, ds, pipeline=str(pipeline))
    decisions = chain.run_many(ds.texts)
    local = np.mean([all(float(str(p["confidence"])) >= llm_threshold for p in d.path or []) for d in decisions])
    lat = _stage_latency(chain, ds.texts)
    rows = []
    figures = {f.stage: f for f in ev.stages}
    for s in chain.stages:
        f = figures.get(s.name)
        p50, p99 = lat.get(s.name, (None, None))
        rows.append(
            StageRow(
                s.name,
                s.kind,
                s.version,
                len(s.labels),
                f.share if f is not None else None,
                f.accuracy if f is not None else None,
                f.macro_f1 if f is not None else None,
                p50,
                p99,
            )
        )
    chain.close()
    notes = [
        f"Banking77's training file sampled to {per_intent} messages an intent (seed {seed}); "
        f"{len(truth):,} test messages"
    ]
    live = None
    if llm is not None:
        say(f"asking {llm} live on {min(live_sample, len(truth))} test messages")
        live = _live(pipeline, truth, llm, live_sample, seed)
    return ChainDemoResult(
        str(out),
        str(pipeline),
        rows,
        ev,
        float(local),
        llm_threshold,
        round(train_seconds, 2),
        round(time.perf_counter() - started, 2),
        notes,
        live,
    )


def _live(pipeline: Path, truth: list[tuple[str, str]], llm: str, n: int, seed: int) -> LiveFigures:
    """A sample of the test messages through the chain with its LLM: quality beside the stages
    alone, the LLM's answers and replies, and what the validators did to the replies."""
    from offramp.evaluation.metrics import classification_metrics

    sample = random.Random(seed).sample(truth, min(n, len(truth)))
    texts, gold = [t for t, _ in sample], [lab for _, lab in sample]
    chain = Chain.from_pipeline(pipeline)
    t0 = time.perf_counter()
    try:
        decisions = chain.run_many(texts)
    finally:
        chain.close()
    seconds = time.perf_counter() - t0
    with_llm = classification_metrics(gold, [d.label for d in decisions])
    alone = classification_metrics(gold, [d.local_label for d in decisions])

    def step(d: Any, name: str) -> str | None:
        return next((str(p["route"]) for p in d.path or [] if p["stage"] == name), None)

    return LiveFigures(
        llm,
        len(texts),
        with_llm["accuracy"],
        with_llm["macro_f1"],
        alone["accuracy"],
        alone["macro_f1"],
        sum(step(d, "ask") == "llm" for d in decisions),
        sum(step(d, "ask") == "failed" for d in decisions),
        sum(step(d, "write") == "llm" for d in decisions),
        sum("reply_masked" in d.flags and step(d, "write") == "llm" for d in decisions),
        sum("reply_blocked" in d.flags and step(d, "write") == "llm" for d in decisions),
        round(seconds, 2),
    )
