"""Reading a label out of an LLM's answer, and the plain label prompt the fallback sends."""

from __future__ import annotations

import re
from typing import Sequence


def parse_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an LLM answer names, or None when it names none (or more than one)."""
    clean = re.sub(r"^[\s\"'`*.:]+|[\s\"'`*.!:]+$", "", answer or "")
    by_lower = {str(lab).lower(): str(lab) for lab in labels}
    if clean.lower() in by_lower:
        return by_lower[clean.lower()]
    found = {by_lower[w.lower()] for w in re.findall(r"[A-Za-z0-9_\-]+", answer or "") if w.lower() in by_lower}
    return found.pop() if len(found) == 1 else None


def label_prompt(labels: Sequence[str], descriptions: dict[str, str] | None = None) -> str:
    lines = ["Classify the user's message. Answer with exactly one of these labels and nothing else:"]
    for lab in labels:
        d = (descriptions or {}).get(lab)
        lines.append(f"- {lab}" + (f": {d}" if d else ""))
    return "\n".join(lines)
