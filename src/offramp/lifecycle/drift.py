"""Drift offline: the service's drift signals computed from a capture pool or an audit log."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from offramp.capture.pool import read_rows
from offramp.errors import DataError
from offramp.models.drift import PSI_WARN, DriftReference
from offramp.models.store import load_model


def _audit_rows(path: Path) -> list[dict[str, Any]] | None:
    """Records of an offramp audit log (no key needed to read them); None if ``path`` is not one."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"records", "head"} <= tables:
                return None
            bodies = [json.loads(b) for (b,) in con.execute("SELECT body FROM records ORDER BY seq")]
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return None
    return [
        {
            "confidence": b.get("confidence"),
            "label": b.get("decision"),
            "dont_know": b.get("route") == "refused",
            "fallback": b.get("route") == "llm" or bool(set(b.get("flags") or []) & {"fallback_failed"}),
        }
        for b in bodies
    ]


def drift_report(source: str | Path, model_dir: str | Path, window: int = 1000) -> dict[str, Any]:
    """The drift signals of the last ``window`` messages in ``source`` (an audit log or a capture
    pool) against the training reference of ``model_dir`` (a model directory or a registry)."""
    source = Path(source)
    if not source.is_file():
        raise DataError(f"{source} does not exist", "give an audit log or a capture pool (SQLite)")
    model = load_model(model_dir)
    reference = DriftReference.of(model)
    if reference is None:
        raise DataError(
            f"{model_dir} holds no drift reference (it was trained by an older offramp)", "retrain it to add one"
        )
    rows = _audit_rows(source)
    kind = "audit log"
    if rows is None:
        kind = "capture pool"
        rows = [
            {
                "confidence": r["confidence"],
                "label": r["local_label"],
                "dont_know": False,
                "fallback": r["source"] == "llm",
            }
            for r in read_rows(source)
            if r["local_label"] is not None and r["confidence"] is not None
        ]
    rows = [r for r in rows if r["confidence"] is not None]
    if not rows:
        raise DataError(f"{source} has no messages with a confidence to compare", "serve some traffic first")
    recent = rows[-window:]
    values = reference.compare(
        [r["confidence"] for r in recent],
        [str(r["label"]) for r in recent],
        [bool(r["dont_know"]) for r in recent],
        [bool(r["fallback"]) for r in recent],
    )
    return {
        "source": str(source),
        "kind": kind,
        "messages": len(recent),
        "psi": {"confidence": values["confidence"], "label_mix": values["label_mix"]},
        "rate_change": {"dont_know": values["dont_know"], "fallback": values["fallback"]},
        "reference": {
            "n": reference.n,
            "dont_know_rate": reference.dont_know_rate,
            "fallback_rate": reference.fallback_rate,
        },
        "threshold": PSI_WARN,
        "drifted": [k for k in ("confidence", "label_mix") if values[k] > PSI_WARN],
    }
