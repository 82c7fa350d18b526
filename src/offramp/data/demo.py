"""The bundled demo data: a support bot's inbox (see LICENSES.md beside the files)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def demo_paths() -> tuple[Path, Path, Path | None]:
    """(train.csv, test.csv, recorded LLM predictions or None) of the bundled support inbox."""
    base = Path(str(resources.files("offramp.data").joinpath("inbox")))
    llm = base / "llm_predictions.jsonl"
    return base / "train.csv", base / "test.csv", llm if llm.is_file() else None


def demo_docs() -> Path:
    """The demo's help-centre pages (Markdown), answered from for SUPPORT messages."""
    return Path(str(resources.files("offramp.data").joinpath("inbox").joinpath("docs")))


def demo_task() -> Path:
    """The inbox as a task spec for an LLM (labels with one-line descriptions)."""
    return Path(str(resources.files("offramp.data").joinpath("inbox").joinpath("task.yaml")))
