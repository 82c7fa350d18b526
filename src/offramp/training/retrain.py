"""Retrain behind a gate: the library behind ``offramp registry retrain``.

A candidate is trained on the current version's training rows plus the new ones, with the same
search (quality, time limit, seed, "don't know" target) as the current version, saved in the
registry unpromoted, and compared with the current version on the frozen gate set
(:func:`offramp.registry.gate.compare`). Only a candidate that passes is promoted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from offramp.data.io import Dataset
from offramp.errors import DataError, UsageError
from offramp.estimators.base import TextClassifier
from offramp.estimators.rejection import RejectTarget
from offramp.registry.gate import GateRecord, Verdict, compare, compare_sets
from offramp.registry.versions import Registry
from offramp.training.train import train
from offramp.types import JSONDict


@dataclass
class RetrainResult:
    """What a retrain decided; ``to_dict()`` is what ``offramp registry retrain --json`` prints."""

    decision: str  # "promoted", "refused", or "current_changed" (passed, but current moved while it trained)
    candidate: str
    current: str
    reasons: list[str]
    new_labels: list[str]
    gate: Verdict
    seconds: float
    n_train: int
    n_added: int
    warnings: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"

    def to_dict(self) -> JSONDict:
        return {
            "decision": self.decision,
            "candidate": self.candidate,
            "current": self.current,
            "reasons": list(self.reasons),
            "new_labels": list(self.new_labels),
            "gate": {
                **({"micro_f1": self.gate["micro_f1"]} if "micro_f1" in self.gate else {}),
                "macro_f1": self.gate["macro_f1"],
                "per_class": self.gate["per_class"],
                "n": self.gate["n"],
                **({"also": self.gate["also"]} if "also" in self.gate else {}),
            },
            "seconds": round(self.seconds, 3),
            "n_train": self.n_train,
            "n_added": self.n_added,
            "warnings": list(self.warnings),
        }


def retrain(
    registry: Registry | str | os.PathLike[str],
    added: Dataset | str | os.PathLike[str],
    *,
    gate: Dataset | str | os.PathLike[str] | None = None,
    max_class_drop: float = 0.02,
    n_boot: int = 1000,
    text_col: str = "text",
    label_col: str = "label",
    max_chars: int | None = None,
    on_progress: Callable[[str], None] | None = None,
    also: Callable[[TextClassifier], Verdict] | None = None,
) -> RetrainResult:
    """Train a candidate on the current version's rows plus ``added``; promote it if it passes the gate.

    ``registry``: a :class:`~offramp.registry.versions.Registry` or its directory. ``added``: the
    new labelled rows (a Dataset or a file, e.g. from :func:`~offramp.capture.pool.export_pool`);
    for a multi-label registry an empty label cell is the empty set, a row to keep. ``gate``:
    labelled messages to judge on (default: the registry's frozen gate set). The result says
    whether the candidate was promoted, and why not when it was not. ``also``: a second gate the
    candidate must pass as well, given the candidate model (a chain's end-to-end gate, see
    :func:`offramp.chain.gate.chain_gate`); its verdict is kept under the verdict's ``also``.
    """
    t0 = time.perf_counter()
    if not isinstance(registry, Registry):
        registry = Registry(registry)
    if not isinstance(added, Dataset) or (gate is not None and not isinstance(gate, Dataset)):
        from offramp.data.io import DEFAULT_MAX_CHARS, read_dataset
        from offramp.modeldir.store import read_model_json

        cur = registry.current
        sets = bool(cur and (read_model_json(registry.version_dir(cur)).get("info") or {}).get("multi_label"))
        limit = max_chars or DEFAULT_MAX_CHARS
        if not isinstance(added, Dataset):
            added = read_dataset(added, text_col=text_col, label_col=label_col, max_chars=limit, need_labels=not sets)
        if gate is not None and not isinstance(gate, Dataset):
            gate = read_dataset(gate, text_col=text_col, label_col=label_col, max_chars=limit, need_labels=not sets)
    if not 0 <= max_class_drop <= 1:
        raise UsageError(
            f"the per-class drop limit must be between 0 and 1, got {max_class_drop}", param="max_class_drop"
        )
    current = registry.current
    if current is None:
        raise UsageError(f"registry {registry.path} has no current version to retrain", "promote one first")
    if added.labels is None:
        raise DataError(f"{added.path} has no labels to train on")
    if gate is not None:
        if gate.labels is None:
            raise DataError(f"{gate.path} has no labels to judge on")
        gate_texts, gate_labels = registry.mask(gate.texts), list(gate.labels)
        gate_source = gate.path
    else:
        stored = registry.gate_set()
        if stored is None:
            raise UsageError(f"registry {registry.path} has no frozen gate set", "give one with --gate FILE")
        gate_texts, gate_labels = stored
        gate_source = "the registry's frozen gate set"
    old_model = registry.load(current)
    if getattr(old_model, "multi_label", False):
        return _retrain_sets(
            registry, old_model, added, gate_texts, gate_labels, gate_source, max_class_drop, n_boot, on_progress, t0
        )
    old_labels = set(map(str, old_model.classes_))
    base_texts, base_labels = registry.training_set(current)
    added_texts = registry.mask(added.texts)
    added_labels = [str(x) for x in added.labels]
    new_labels = sorted(set(added_labels) - old_labels - set(base_labels))
    unknown = sorted(set(gate_labels) - old_labels - set(added_labels))
    if unknown:
        raise DataError(
            f"the gate set ({gate_source}) has labels that neither the current model nor the added data has: "
            f"{', '.join(unknown)}",
            "add examples of them with --add, or use a gate set without them",
        )
    warnings: list[str] = list(added.warnings)
    keep = _not_in_gate(added_texts, gate_texts, warnings)
    added_texts = [added_texts[i] for i in keep]
    added_labels = [added_labels[i] for i in keep]
    info = (old_model.training_record_ or {}).get("info", {})
    rejection = (old_model.training_record_ or {}).get("metrics", {}).get("rejection") or None
    texts, labels = base_texts + added_texts, base_labels + added_labels
    ds = Dataset(texts, labels, f"{current} rows + {added.path}", rows_read=len(texts))
    if on_progress:
        on_progress(f"training a candidate on {len(texts)} messages ({len(added_texts)} new)")
    model, report = train(
        ds,
        quality="auto" if info.get("rule") == "cheapest" else str(info.get("quality") or "auto"),
        max_quality_loss=info.get("max_quality_loss") if info.get("rule") == "cheapest" else None,
        time_limit=info.get("time_limit"),
        seed=int(info.get("seed") or 0),
        latency_budget_ms=info.get("latency_budget_ms"),
        # a model fitted before targets had a confidence level was fitted to the held-out figure itself
        reject_target=RejectTarget.parse(rejection["target"], rejection.get("confidence", 0.0)) if rejection else None,
        oos_label=rejection["label"] if rejection and rejection["label"] in set(labels) else None,
        on_progress=on_progress,
    )
    warnings += report.warnings
    candidate = _add_candidate(registry, model, current, added_texts, added_labels)
    if on_progress:
        on_progress(f"judging {candidate} against {current} on {len(gate_texts)} gate messages")
    verdict = compare(
        gate_labels,
        [str(x) for x in old_model.predict(gate_texts)],
        [str(x) for x in model.predict(gate_texts)],
        new_labels=new_labels,
        max_class_drop=max_class_drop,
        n_boot=n_boot,
    )
    if also is not None:
        if on_progress:
            on_progress(f"judging {candidate} on the second gate")
        second = also(model)
        verdict["also"] = second
        if not second["passed"]:
            verdict["passed"] = False
            verdict["reasons"] = list(verdict["reasons"]) + [f"end to end: {r}" for r in second["reasons"]]
    return _decide(
        registry, candidate, current, verdict, gate_source, new_labels, t0, len(texts), len(added_texts), warnings
    )


def _retrain_sets(
    registry: Registry,
    old_model: Any,
    added: Dataset,
    gate_texts: list[str],
    gate_labels: list[str],
    gate_source: str,
    max_class_drop: float,
    n_boot: int,
    on_progress: Callable[[str], None] | None,
    t0: float,
) -> RetrainResult:
    """:func:`retrain` for a multi-label registry: label cells are sets joined by the model's
    separator (in the added rows, the gate set and the stored rows), the candidate repeats the
    current version's multi-label search, and the gate judges micro-F1 and every label's F1."""
    from offramp.data.multilabel import parse_label_sets
    from offramp.estimators.multilabel import indicator
    from offramp.training.multilabel import train_multilabel

    current = registry.current
    assert current is not None and added.labels is not None
    sep = str(old_model.label_sep_)
    old_labels = set(map(str, old_model.classes_))
    added_sets, notes = parse_label_sets(added.labels, sep)
    gate_sets, _ = parse_label_sets(gate_labels, sep)
    base_texts, base_cells = registry.training_set(current)
    base_sets, _ = parse_label_sets(base_cells, sep)
    added_texts = registry.mask(added.texts)
    added_seen = {lab for s in added_sets for lab in s}
    new_labels = sorted(added_seen - old_labels - {lab for s in base_sets for lab in s})
    unknown = sorted({lab for s in gate_sets for lab in s} - old_labels - added_seen)
    if unknown:
        raise DataError(
            f"the gate set ({gate_source}) has labels that neither the current model nor the added data has: "
            f"{', '.join(unknown)}",
            "add examples of them with --add, or use a gate set without them",
        )
    warnings: list[str] = list(added.warnings) + notes
    keep = _not_in_gate(added_texts, gate_texts, warnings)
    added_texts = [added_texts[i] for i in keep]
    added_sets = [added_sets[i] for i in keep]
    info = (old_model.training_record_ or {}).get("info", {})
    texts, sets = base_texts + added_texts, base_sets + added_sets
    if on_progress:
        on_progress(f"training a candidate on {len(texts)} messages ({len(added_texts)} new, several labels each)")
    quality = str(info.get("quality") or "fast")
    model, report = train_multilabel(
        texts,
        sets,
        seed=int(info.get("seed") or 0),
        label_precision=info.get("label_precision"),
        label_sep=sep,
        time_limit=info.get("time_limit", 60.0),
        data_path=f"{current} rows + {added.path}",
        on_progress=on_progress,
        quality=quality,
        encoder=str(info.get("encoder") or "minilm"),
    )
    warnings += report.warnings
    candidate = _add_candidate(registry, model, current, added_texts, [sep.join(s) for s in added_sets])
    if on_progress:
        on_progress(f"judging {candidate} against {current} on {len(gate_texts)} gate messages")
    labels = sorted(old_labels | set(map(str, model.classes_)) | {lab for s in gate_sets for lab in s})

    def answers(m: Any) -> np.ndarray:
        return indicator(m.predict_sets(gate_texts), labels)

    verdict = compare_sets(
        indicator(gate_sets, labels),
        answers(old_model),
        answers(model),
        labels,
        new_labels=new_labels,
        max_class_drop=max_class_drop,
        n_boot=n_boot,
    )
    return _decide(
        registry, candidate, current, verdict, gate_source, new_labels, t0, len(texts), len(added_texts), warnings
    )


def _not_in_gate(added_texts: list[str], gate_texts: list[str], warnings: list[str]) -> list[int]:
    """The added rows that are not gate-set messages (a model must not be judged on what it learned)."""
    held = set(gate_texts)
    keep = [i for i, t in enumerate(added_texts) if t not in held]
    if len(keep) < len(added_texts):
        warnings.append(
            f"{len(added_texts) - len(keep)} added rows are gate-set messages and were left out of training "
            "(a model must not be judged on what it learned)"
        )
    return keep


def _add_candidate(registry: Registry, model: Any, current: str, texts: list[str], labels: list[str]) -> str:
    """Save the candidate unpromoted: the current version's rows plus the added ones (stored masked)."""
    chunk = registry.store_rows(texts, labels) if texts else None
    base_chunks = registry.entry(current).get("data", [])
    return registry.add(model, data=base_chunks + ([chunk] if chunk else []), promote=False, parent=current)


def _decide(
    registry: Registry,
    candidate: str,
    current: str,
    verdict: Verdict,
    gate_source: str,
    new_labels: list[str],
    t0: float,
    n_train: int,
    n_added: int,
    warnings: list[str],
) -> RetrainResult:
    """Record the gate's verdict on the candidate's registry entry and promote it if it passed."""
    decision = "promoted" if verdict["passed"] else "refused"
    record = GateRecord(against=current, decision=decision, reasons=verdict["reasons"])
    if "micro_f1" in verdict:
        record["micro_f1"] = verdict["micro_f1"]
    record["macro_f1"] = verdict["macro_f1"]
    record["per_class"] = verdict["per_class"]
    record["source"] = gate_source
    record["n"] = verdict["n"]
    if "also" in verdict:
        record["also"] = verdict["also"]
    reasons = list(verdict["reasons"])
    # promoted only if current is still the version the candidate was judged against (compare and swap)
    promoted = registry.record_gate(candidate, record, promote_if_current=current if verdict["passed"] else None)
    if verdict["passed"] and not promoted:
        decision = "current_changed"
        reasons.append(
            f"{registry.current} was made current while the candidate trained; {candidate} was judged against "
            f"{current} and is kept unpromoted: promote it with 'offramp registry promote', or retrain again"
        )
    return RetrainResult(
        decision=decision,
        candidate=candidate,
        current=current,
        reasons=reasons,
        new_labels=new_labels,
        gate=verdict,
        seconds=time.perf_counter() - t0,
        n_train=n_train,
        n_added=n_added,
        warnings=warnings,
    )
