"""The support bot's pipeline that ``offramp demo`` writes beside its model."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from offramp.demo.data import demo_docs
from offramp.runtime.config import PipelineSpec

HEADER = """\
# The support bot's inbox: what to do with each label.
# Personal data is masked before anything leaves (here nothing does: there is no llm: section);
# one hash-chained record per message goes to audit.sqlite (check it: offramp audit verify audit.sqlite).
"""


def demo_pipeline(model: str = "registry") -> dict:
    """The demo's pipeline as a mapping (checked against the pipeline schema)."""
    doc = {
        "model": model,
        "actions": {
            "SUPPORT": {"type": "answer_from_docs", "docs": "docs"},
            "GRATITUDE": {"type": "reply", "text": "👍"},
            "TRY_TO_HACK": {
                "type": "refuse",
                "template": "I can only help with questions about your account and cards.",
            },
            "OTHER": {"type": "none"},
        },
        "privacy": {"operator": "placeholder"},
        "audit": "audit.sqlite",
    }
    PipelineSpec.model_validate(doc)
    return doc


def write_demo_pipeline(out_dir: str | Path) -> Path:
    """``out_dir/pipeline.yaml`` and the help-centre pages it answers from (``out_dir/docs``)."""
    out_dir = Path(out_dir)
    docs = out_dir / "docs"
    if docs.exists():
        shutil.rmtree(docs)
    shutil.copytree(demo_docs(), docs)
    path = out_dir / "pipeline.yaml"
    path.write_text(HEADER + yaml.safe_dump(demo_pipeline(), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path
