"""``offramp demo --chain``: the support bot as a chain of specialised small models.

privacy guard → abuse detector (its own model: jailbreaks and off-purpose requests stop here) →
router (SUPPORT / GRATITUDE / OTHER) → for SUPPORT, a banking-intent model (Banking77's 77
intents) → an action per answer → a validator on the reply (no personal data goes back out).

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
    "# banking intents -> an action per answer -> a check that no personal data goes back out.\n"
    "# Add an llm: section and thresholds: on a stage to send what it is unsure of to an LLM.\n"
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
    on_progress: Callable[[str], None] | None = None,
) -> ChainDemoResult:
    """Train the chain's models, write its pipeline file and measure it end to end and per stage."""
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
    doc = {
        "label_sep": "/",
        "privacy": {"operator": "placeholder"},
        "audit": "audit.sqlite",
        "stages": [
            {"name": "privacy", "kind": "guard"},
            {"name": "abuse", "kind": "classify", "model": "stages/abuse", "label": False, "stop": ["TRY_TO_HACK"]},
            {"name": "router", "kind": "classify", "model": "stages/router"},
            {"name": "banking", "kind": "classify", "model": "stages/banking", "when": "router.label == SUPPORT"},
            {"name": "act", "kind": "action", "actions": actions},
            {"name": "reply_check", "kind": "validate", "check": "guard"},
        ],
    }
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
    )
