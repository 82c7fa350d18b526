"""The cascade on the demo traffic: small model + LLM fallback vs the LLM alone.

Trains on 80% of the demo's training split, fits the routing threshold on the other 20% to send at
most ``--max-llm-share`` of messages to the LLM, then runs every test message through offramp's
``Cascade`` (the same object ``offramp serve`` uses). The fallback answers with the LLM's recorded
prediction for that message (``--llm-predictions``, default: the file bundled with the demo), or
asks a live server (``--llm M --base-url URL``).

    python3 benchmarks/cascade.py [--quality fast|balanced] [--max-llm-share 0.05]

Target (issue: serve the cascade): macro-F1 with fallback >= the LLM alone, with >= 95% of
messages never reaching it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sklearn.model_selection import train_test_split

from offramp import train
from offramp.data.io import Dataset, read_dataset, read_records
from offramp.data.text import normalize
from offramp.demo.data import demo_paths
from offramp.evaluation.metrics import classification_metrics
from offramp.llm.client import LLMBadResponse
from offramp.runtime.cascade import Cascade
from offramp.runtime.routing import fit_thresholds


class Recorded:
    """An LLM fallback that answers with recorded predictions (what the LLM said for each text)."""

    endpoint = "recorded LLM predictions"

    def __init__(self, table: dict[str, str]):
        self.table = table

    def __call__(self, text: str) -> str:
        label = self.table.get(normalize(text))
        if not label:  # the LLM named no label for this message: a failed answer, the local one stays
            raise LLMBadResponse("the recorded LLM gave no label for this message")
        return label


def recorded(path: Path):
    _, rows = read_records(path)
    table = {normalize(str(r["text"])): str(r.get("prediction") or "") for r in rows}
    model = next((str(r["model"]) for r in rows if r.get("model")), "LLM")
    return Recorded(table), table, model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quality", default="fast")
    ap.add_argument("--max-llm-share", type=float, default=0.05)
    ap.add_argument("--llm-predictions", type=Path, default=None)
    ap.add_argument("--llm", default=None)
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train_path, test_path, bundled = demo_paths()
    full, test = read_dataset(train_path), read_dataset(test_path)
    tr_t, va_t, tr_y, va_y = train_test_split(
        full.texts, full.labels, test_size=0.2, random_state=args.seed, stratify=full.labels
    )
    with tempfile.TemporaryDirectory():
        t0 = time.perf_counter()
        model, res = train(
            Dataset(list(tr_t), list(tr_y), "demo train split (80%)"),
            quality=args.quality,
            seed=args.seed,
            time_limit=60,
        )
        fit = fit_thresholds(model.predict_proba(va_t), model.classes_, va_y, max_llm_share=args.max_llm_share)
        if args.llm:
            from offramp.llm.client import ChatClient, LLMConfig
            from offramp.runtime.fallback import LLMFallback

            client = ChatClient(LLMConfig(base_url=args.base_url, model=args.llm, timeout_s=120, max_retries=1))
            fallback, name = LLMFallback(client, model.classes_, failure_threshold=10**9), args.llm
            alone = None
        else:
            fallback, table, name = recorded(args.llm_predictions or bundled)
            alone = [table.get(normalize(t)) or "(none)" for t in test.texts]
        cascade = Cascade(model, fallback=fallback, thresholds=fit["thresholds"])
        decisions = [cascade.run(t) for t in test.texts]
        elapsed = time.perf_counter() - t0
    labels = sorted(set(test.labels))
    small = classification_metrics(test.labels, [str(x) for x in model.predict(test.texts)], labels)
    both = classification_metrics(test.labels, [d.label for d in decisions], labels)
    sent = sum(1 for d in decisions if d.endpoints or d.route == "llm" or "fallback_failed" in d.flags)
    failed = sum(1 for d in decisions if "fallback_failed" in d.flags)
    rows = [("small model alone (" + res.winner + ")", small["macro_f1"], small["accuracy"], "0.0%")]
    if alone is not None:
        llm = classification_metrics(test.labels, alone, labels)
        rows.insert(0, (f"LLM alone ({name})", llm["macro_f1"], llm["accuracy"], "100.0%"))
    rows.append(
        (
            f"cascade: small model + {name} when unsure",
            both["macro_f1"],
            both["accuracy"],
            f"{sent / len(decisions):.1%}",
        )
    )
    print(
        f"{len(test.texts)} test messages of the demo inbox; threshold {fit['thresholds']['*']:.4f} fitted on "
        f"{len(va_t)} held-out training messages to send at most {args.max_llm_share:.0%} to the LLM "
        f"(held-out share {fit['held_out']['llm_share']:.1%}); {elapsed:.0f} s in all\n"
    )
    print("| system | macro-F1 | accuracy | messages sent to the LLM |")
    print("|---|---|---|---|")
    for n, f1, acc, share in rows:
        print(f"| {n} | {f1:.4f} | {acc:.4f} | {share} |")
    if failed:
        print(f"\n{failed} fallback answers were outside the label set or missing: the local answer was kept")
    if alone is not None:
        ok = both["macro_f1"] >= llm["macro_f1"] and sent / len(decisions) <= 0.05
        print(f"\ntarget (macro-F1 with fallback >= LLM alone, >= 95% never reach it): {'met' if ok else 'NOT met'}")
    print(json.dumps({"threshold": fit["thresholds"]["*"], "sent_share": sent / len(decisions)}))


if __name__ == "__main__":
    main()
