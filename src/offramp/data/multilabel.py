"""Label sets: a message may carry zero, one or several labels.

In a CSV or TSV file the label column holds the labels joined by a separator (``|`` by default:
``GRATITUDE|SUPPORT``); in JSONL or Parquet a JSON list works too (``["GRATITUDE", "SUPPORT"]``).
An empty cell (or ``[]``) is the empty set: "none of these".
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Sequence

from offramp.data.io import DEFAULT_MAX_CHARS, Dataset, read_dataset
from offramp.errors import DataError

DEFAULT_SEP = "|"


def parse_label_sets(raw: Sequence[str | None], sep: str = DEFAULT_SEP) -> tuple[list[list[str]], list[str]]:
    """Each cell as a sorted list of distinct labels, and warnings about what was tidied."""
    if not sep:
        raise DataError("the label separator is empty", "pass --label-sep with one or more characters")
    out: list[list[str]] = []
    spaced = dup = json_rows = 0
    bad_json: list[int] = []
    for i, cell in enumerate(raw):
        s = (cell or "").strip()
        parts: list[str]
        if s.startswith("[") and s.endswith("]"):
            try:
                doc = json.loads(s)
            except ValueError:
                doc = None
            if not isinstance(doc, list) or not all(isinstance(x, (str, int)) for x in doc):
                bad_json.append(i + 1)
                parts = []
            else:
                parts = [str(x) for x in doc]
                json_rows += 1
        else:
            parts = s.split(sep) if s else []
        clean = [p.strip() for p in parts]
        if any(p != c for p, c in zip(parts, clean)):
            spaced += 1
        clean = [c for c in clean if c]
        if len(set(clean)) < len(clean):
            dup += 1
        out.append(sorted(set(clean)))
    if bad_json:
        shown = ", ".join(map(str, bad_json[:5]))
        raise DataError(
            f"{len(bad_json)} label cells look like JSON lists but are not lists of labels (rows {shown})",
            'write them as ["A", "B"] or as labels joined by the separator',
        )
    warnings = []
    if spaced:
        warnings.append(f"{spaced} label cells had spaces around their labels, which were removed")
    if dup:
        warnings.append(f"{dup} label cells named a label twice; it counts once")
    several = sum(1 for s in out if len(s) > 1)
    if not several and out and not json_rows:
        warnings.append(
            f"the separator {sep!r} never joins two labels in this file: every message has at most one label "
            "(check --label-sep, or train without --multi-label)"
        )
    return out, warnings


def looks_multilabel(labels: Sequence[str], sep: str = DEFAULT_SEP) -> str | None:
    """A warning when single-label data looks like joined label sets (``A|B`` where ``A`` and ``B``
    are labels of their own too), else None."""
    counts = Counter(labels)
    joined = [lab for lab in counts if sep in lab]
    if not joined:
        return None
    singles = {lab for lab in counts if sep not in lab}
    hits = [lab for lab in joined if all(p.strip() in singles for p in lab.split(sep) if p.strip())]
    if not hits:
        return None
    rows = sum(counts[h] for h in hits)
    return (
        f"{rows} rows carry labels like {hits[0]!r} that join other labels with {sep!r}: if a message can carry "
        "several labels, train with --multi-label; as it is, each combination is a label of its own"
    )


def label_counts(sets: Sequence[Sequence[str]]) -> Counter[str]:
    return Counter(lab for s in sets for lab in s)


def read_label_sets(
    path: str | os.PathLike[str], text_col: str, label_col: str, sep: str = DEFAULT_SEP, max_chars: int | None = None
) -> tuple[Dataset, list[list[str]], list[str]]:
    """(dataset, label sets, notes) of a multi-label file; a missing label column is one line.
    An empty label cell is the empty set (a row kept, not skipped)."""
    ds = read_dataset(
        path, text_col=text_col, label_col=label_col, need_labels=False, max_chars=max_chars or DEFAULT_MAX_CHARS
    )
    if ds.labels is None:
        raise DataError(f"{path} has no label column {label_col!r}", "choose the label column", param="label_col")
    sets, notes = parse_label_sets(ds.labels, sep)
    return ds, sets, notes
