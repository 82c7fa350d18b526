"""The bundled demo data: a support bot's inbox (see LICENSES.md beside the files)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def demo_paths() -> tuple[Path, Path, Path | None]:
    """(train.csv, test.csv, recorded LLM predictions or None) of the bundled support inbox."""
    base = Path(str(resources.files("offramp.demo").joinpath("inbox")))
    llm = base / "llm_predictions.jsonl"
    return base / "train.csv", base / "test.csv", llm if llm.is_file() else None


def demo_docs() -> Path:
    """The demo's help-centre pages (Markdown), answered from for SUPPORT messages."""
    return Path(str(resources.files("offramp.demo").joinpath("inbox").joinpath("docs")))


def demo_task() -> Path:
    """The inbox as a task spec for an LLM (labels with one-line descriptions)."""
    return Path(str(resources.files("offramp.demo").joinpath("inbox").joinpath("task.yaml")))


def demo_teacher_labels() -> Path | None:
    """The local LLM's recorded labels of a sample of the training texts (``offramp label``
    output), from which the demo trains its student; None if absent."""
    p = Path(str(resources.files("offramp.demo").joinpath("inbox").joinpath("teacher_labels.jsonl")))
    return p if p.is_file() else None


def multilabel_inbox(texts: list[str], labels: list[str], seed: int = 0) -> list[tuple[str, str]]:
    """A multi-label variant of the inbox, constructed from its real messages: about a third of the
    SUPPORT questions get a thank-you message of the inbox joined in front ("GRATITUDE|SUPPORT"),
    a tenth of the jailbreak attempts get a SUPPORT question after them ("SUPPORT|TRY_TO_HACK"),
    and OTHER messages carry no label at all (the empty set: none of the three apply)."""
    import random

    rng = random.Random(seed)
    thanks = [t for t, y in zip(texts, labels) if y == "GRATITUDE" and len(t) < 120]
    questions = [t for t, y in zip(texts, labels) if y == "SUPPORT"]
    rows: list[tuple[str, str]] = []
    for t, y in zip(texts, labels):
        if y == "OTHER":
            rows.append((t, ""))
        elif y == "SUPPORT" and thanks and rng.random() < 0.33:
            rows.append((f"{rng.choice(thanks).rstrip()} {t}", "GRATITUDE|SUPPORT"))
        elif y == "TRY_TO_HACK" and questions and rng.random() < 0.1:
            rows.append((f"{t.rstrip()} {rng.choice(questions)}", "SUPPORT|TRY_TO_HACK"))
        else:
            rows.append((t, y))
    return rows
