"""What an evaluation returns: :class:`EvalReport`, the same for a small model and for an LLM."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Sequence, TypedDict

import numpy as np

from offramp.estimators.multilabel import ConfusedPair, MultiLabelScores
from offramp.estimators.rejection import Rejection
from offramp.evaluation.metrics import Confusion, classification_metrics
from offramp.types import JSONDict


@dataclass
class EvalReport:
    """Quality, calibration, speed, size and cost of one classifier (a small model or an LLM) on a test set.

    ``to_dict()`` is exactly the object ``offramp eval --json`` prints. ``llm`` holds the LLM's
    report on the same texts when its predictions were given.
    """

    n: int
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion: Confusion
    model: str = ""
    ece: float | None = None
    reliability: list[JSONDict] | None = None
    model_bytes: int | None = None
    train_seconds: float | None = None
    rejection: Rejection | None = None
    latency_ms: dict[str, float | int | None] | None = None
    throughput_per_s: float | None = None
    cost_per_million_usd: float | None = None
    cost_basis: str | None = None
    warnings: list[str] = field(default_factory=list)
    data: str | None = None
    model_dir: str | None = None
    details: JSONDict = field(default_factory=dict)  # an LLM run's calls, cache hits, unlabelled answers
    llm: EvalReport | None = None
    # per message, in the test set's order (not in to_dict): the answers, the small model's
    # confidences; None where an LLM gave no prediction for a text
    predictions: list[str | None] | None = field(default=None, repr=False)
    confidences: list[float] | None = field(default=None, repr=False)
    cascade: JSONDict | None = None  # the report's cascade view, when an LLM's predictions were given

    @property
    def labels(self) -> list[str]:
        return list(self.confusion["labels"])

    def to_dict(self) -> JSONDict:
        out: JSONDict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "llm":
                if value is not None:
                    out["llm"] = value.to_dict()
            elif f.name == "details":
                out.update(value)
            elif f.name in ("predictions", "confidences"):
                continue
            elif f.name == "rejection":
                out[f.name] = value.to_dict() if value is not None else None
            elif f.name in ("ece", "reliability", "cost_basis", "cascade") and value is None:
                continue
            else:
                out[f.name] = value
        return out


class MultiLabelEvaluation(MultiLabelScores, total=False):
    """A multi-label model's figures on a test set, what ``offramp eval --json`` prints."""

    confused_pairs: list[ConfusedPair]
    multi_label: bool
    label_sep: str
    model: str
    warnings: list[str]
    latency_ms: dict[str, float | int | None]


class LLMComparison(TypedDict):
    """The model beside an LLM on the test rows the LLM answered."""

    n: int
    missing: int
    small: MultiLabelScores
    llm: MultiLabelScores
    llm_labels_outside: list[str]


def metrics_report(
    y_true: Sequence[str] | np.ndarray,
    y_pred: Sequence[str] | np.ndarray,
    labels: list[str] | None = None,
    **extra: Any,
) -> EvalReport:
    """An :class:`EvalReport` holding the classification metrics of ``y_pred`` against ``y_true``."""
    m = classification_metrics(y_true, y_pred, labels)
    return EvalReport(
        n=m["n"],
        accuracy=m["accuracy"],
        macro_f1=m["macro_f1"],
        per_class=m["per_class"],
        confusion=m["confusion"],
        **extra,
    )
