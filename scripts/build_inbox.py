"""Rebuild the bundled demo data: a support bot's inbox with four classes.

Every message is real text that nobody on this project wrote:

* SUPPORT      Banking77 queries and CLINC150's banking and credit-card intents
* GRATITUDE    CLINC150's ``thank_you`` intent
* TRY_TO_HACK  CLINC150's off-purpose requests (translate, recipe, jokes, calculator, definitions,
               spelling, unit conversion, fun facts); jailbreak templates shipped in the PyPI
               package ``pyrit`` (MIT), each wrapped around one of those off-purpose requests; and
               short attack and off-task prompts from the seed datasets in the same package
               (AdvBench harmful instructions, system-prompt extraction, code-writing tasks, ...)
* OTHER        CLINC150's small talk and meta intents, and its out-of-scope queries

Usage (from the repository root; the output is committed, CI does not run this)::

    pip download --no-deps pyrit==1.1.0 -d /tmp/pyrit
    python scripts/build_inbox.py --benchmarks ../shared/benchmarks --pyrit-wheel /tmp/pyrit/pyrit-1.1.0-py3-none-any.whl

The same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
import zipfile
from pathlib import Path

import yaml

PYRIT_SHA256 = "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a"  # pyrit-1.1.0-py3-none-any.whl
SEED = 2026
TEST_SHARE = 0.25
MAX_TEMPLATE_CHARS = 8000

SUPPORT_CLINC_DOMAINS = ("banking", "credit_cards")
HACK_INTENTS = (
    "translate",
    "recipe",
    "tell_joke",
    "calculator",
    "definition",
    "spelling",
    "measurement_conversion",
    "fun_fact",
)
OTHER_DOMAINS = ("small_talk", "meta")
NOT_OTHER = ("thank_you",) + HACK_INTENTS

N_BANKING77 = 700
N_SUPPORT_CLINC = 500
N_PER_HACK_INTENT = 80
N_JAILBREAKS = 600
N_PER_OTHER_INTENT = 30
N_OOS = 400
N_ADVBENCH = 300
SEED_FILES = (  # pyrit seed datasets of short prompts that are attacks on, or off the purpose of, a support bot
    "airt/harassment",
    "airt/harms",
    "airt/hate",
    "airt/illegal",
    "airt/leakage",
    "airt/malware",
    "airt/misinformation",
    "airt/scams",
    "airt/violence",
    "garak/access_shell_commands",
    "garak/normal_instructions",
    "garak/package_hallucination_real_tasks",
    "garak/system_prompt_extraction",
    "garak/web_html_js",
    "psfuzz_steal_system",
)


def norm(t: str) -> str:
    return " ".join(t.lower().split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmarks", type=Path, required=True)
    ap.add_argument("--pyrit-wheel", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("src/offramp/demo/inbox"))
    args = ap.parse_args()

    digest = hashlib.sha256(args.pyrit_wheel.read_bytes()).hexdigest()
    if digest != PYRIT_SHA256:
        raise SystemExit(f"{args.pyrit_wheel}: sha256 {digest} is not the pinned pyrit 1.1.0 wheel")
    rng = random.Random(SEED)

    clinc = json.loads((args.benchmarks / "clinc150/data_full.json").read_text())
    domains = json.loads((args.benchmarks / "clinc150/domains.json").read_text())
    by_intent: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        for text, intent in clinc[split]:
            by_intent.setdefault(intent, []).append(text)
    oos = [t for s in ("oos_train", "oos_val", "oos_test") for t, _ in clinc[s]]
    with open(args.benchmarks / "banking77/train.csv", newline="") as f:
        b77 = [r["text"] for r in csv.DictReader(f)]
    with open(args.benchmarks / "banking77/test.csv", newline="") as f:
        b77 += [r["text"] for r in csv.DictReader(f)]

    rows: list[tuple[str, str, str]] = []  # (text, label, source)

    def take(pool: list[str], n: int, label: str, source: str) -> None:
        for t in rng.sample(pool, min(n, len(pool))):
            rows.append((t, label, source))

    take(b77, N_BANKING77, "SUPPORT", "banking77")
    support_clinc = [t for d in SUPPORT_CLINC_DOMAINS for i in domains[d] for t in by_intent[i]]
    take(support_clinc, N_SUPPORT_CLINC, "SUPPORT", "clinc150")
    take(by_intent["thank_you"], 10_000, "GRATITUDE", "clinc150:thank_you")
    for intent in HACK_INTENTS:
        take(by_intent[intent], N_PER_HACK_INTENT, "TRY_TO_HACK", f"clinc150:{intent}")
    for d in OTHER_DOMAINS:
        for intent in domains[d]:
            if intent not in NOT_OTHER:
                take(by_intent[intent], N_PER_OTHER_INTENT, "OTHER", f"clinc150:{intent}")
    take(oos, N_OOS, "OTHER", "clinc150:oos")

    # jailbreak templates, each wrapped around an off-purpose request
    requests = [t for i in HACK_INTENTS for t in by_intent[i]]
    templates = []
    with zipfile.ZipFile(args.pyrit_wheel) as z:
        for name in sorted(z.namelist()):
            if not re.match(r"pyrit/datasets/jailbreak/templates/.*\.yaml$", name):
                continue
            doc = yaml.safe_load(z.read(name))
            if not isinstance(doc, dict) or list(doc.get("parameters") or []) != ["prompt"]:
                continue
            value = str(doc.get("value", ""))
            if "{{ prompt }}" not in value or len(value) > MAX_TEMPLATE_CHARS:
                continue
            templates.append((name, value, str(doc.get("source", ""))))
    for name, value, source in rng.sample(templates, min(N_JAILBREAKS, len(templates))):
        text = value.replace("{{ prompt }}", rng.choice(requests)).strip()
        rows.append((text, "TRY_TO_HACK", f"pyrit:{Path(name).stem} ({source})"))

    # short attack and off-task prompts from pyrit's seed datasets
    with zipfile.ZipFile(args.pyrit_wheel) as z:

        def seeds(name: str) -> tuple[list[str], str]:
            doc = yaml.safe_load(z.read(f"pyrit/datasets/seed_datasets/local/{name}.prompt"))
            values = [str(x["value"]).strip() for x in doc.get("seeds", []) if x.get("data_type", "text") == "text"]
            return [v for v in values if v], str(doc.get("source", "") or doc.get("groups", "") or "")

        adv, src = seeds("adv_bench")
        for t in rng.sample(adv, N_ADVBENCH):
            rows.append((t, "TRY_TO_HACK", f"pyrit:adv_bench ({src})"))
        for name in SEED_FILES:
            values, src = seeds(name)
            for t in values:
                if "<" not in t or "script" in t:  # skip unfilled placeholders such as <language>
                    rows.append((t, "TRY_TO_HACK", f"pyrit:{name} ({src})"))

    # drop exact duplicates (after normalisation) so train and test never share a text
    seen, unique = set(), []
    for r in rows:
        k = norm(r[0])
        if k not in seen:
            seen.add(k)
            unique.append(r)
    # fixed stratified split
    train, test = [], []
    for label in sorted({r[1] for r in unique}):
        group = [r for r in unique if r[1] == label]
        rng.shuffle(group)
        n_test = round(len(group) * TEST_SHARE)
        test += group[:n_test]
        train += group[n_test:]
    rng.shuffle(train)
    rng.shuffle(test)

    args.out.mkdir(parents=True, exist_ok=True)
    for split, data in (("train", train), ("test", test)):
        with open(args.out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["text", "label", "source"])
            w.writerows(data)
    counts = {
        s: {lab: sum(1 for r in d if r[1] == lab) for lab in sorted({r[1] for r in d})}
        for s, d in (("train", train), ("test", test))
    }
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()
