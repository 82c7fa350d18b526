"""A chain of stages measured on a labelled file: end to end, per stage, and beside a flat model.

End to end, the chain's full labels are scored against the file's (accuracy, macro-F1), with the
single-message latency and the batch throughput of the whole chain. Per stage, each classify stage
is scored on its own question: the messages that reached it *with a correct path so far* (a child
model is not blamed for the router's mistakes), its answer against the part of the true label it
decides. A flat model over the full labels (``flat``: the one ``train --hierarchy`` writes beside
the chain) is measured on the same rows for comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from offramp.chain.run import Chain
from offramp.data.io import Dataset
from offramp.estimators.base import TextClassifier
from offramp.evaluation.metrics import classification_metrics
from offramp.training.speed import measure_latency, measure_throughput


@dataclass
class StageFigures:
    stage: str
    version: str | None
    reached: int  # messages the stage answered
    share: float  # ... of all messages
    judged: int  # of them, those whose path to it was right (its own question)
    accuracy: float | None
    macro_f1: float | None


@dataclass
class FlatFigures:
    model: str
    accuracy: float
    macro_f1: float
    latency_ms: dict[str, Any]
    throughput_per_s: float


@dataclass
class ChainEvaluation:
    """What ``offramp eval PIPELINE data.csv --json`` prints for a chain."""

    pipeline: str
    data: str
    n: int
    accuracy: float
    macro_f1: float
    latency_ms: dict[str, Any]
    throughput_per_s: float
    stages: list[StageFigures]
    flat: FlatFigures | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _macro(truth: Sequence[str], pred: Sequence[str]) -> tuple[float, float]:
    m = classification_metrics(list(truth), list(pred))
    return m["accuracy"], m["macro_f1"]


def evaluate_chain(
    chain: Chain,
    data: Dataset,
    *,
    flat: TextClassifier | None = None,
    flat_name: str = "flat",
    pipeline: str = "",
    measure_speed: bool = True,
) -> ChainEvaluation:
    """Score ``chain`` (its local answers) on ``data``; ``flat``: a model over the full labels to
    show beside it."""
    texts = list(data.texts)
    truth = [str(x) for x in data.labels or []]
    decisions = chain.run_many(texts)
    pred = [d.local_label for d in decisions]
    acc, macro = _macro(truth, pred)
    sep = chain.label_sep
    specs = {s.name: s.spec for s in chain.stages}
    figures = []
    for stage in chain.classify_stages:
        reached, judged_truth, judged_pred = 0, [], []
        for d, t in zip(decisions, truth):
            path = d.path or []
            names = [str(p["stage"]) for p in path]
            if stage.name not in names:
                continue
            reached += 1
            at = names.index(stage.name)
            # a detector before it that let the message through was right only if it is not what it stops
            if any(t in specs[n].stop for n in names[:at] if specs[n].kind == "classify" and not specs[n].label):
                continue
            local_part = str(path[at]["label"])
            if not stage.spec.label:  # a detector: judged on its decision to stop the message or not
                if stage.spec.stop:
                    judged_truth.append(t if t in stage.spec.stop else "(passed on)")
                    judged_pred.append(local_part if local_part in stage.spec.stop else "(passed on)")
                continue
            # the part of the full label this stage decides, and whether the parts before it were right
            k = sum(1 for n in names[: names.index(stage.name)] if specs[n].kind == "classify" and specs[n].label)
            true_parts = t.split(sep)
            got = [
                str(p["label"])
                for p in path
                if specs[str(p["stage"])].kind == "classify" and specs[str(p["stage"])].label
            ]
            if k < len(true_parts) and got[:k] == true_parts[:k]:
                judged_truth.append(true_parts[k])
                judged_pred.append(local_part)
        s_acc, s_macro = _macro(judged_truth, judged_pred) if judged_truth else (None, None)
        figures.append(
            StageFigures(
                stage.name,
                stage.version,
                reached,
                round(reached / max(1, len(texts)), 6),
                len(judged_truth),
                s_acc,
                s_macro,
            )
        )
    latency: dict[str, Any] = {}
    throughput = 0.0
    if measure_speed and texts:
        latency = measure_latency(chain.run, texts, n=1000, warmup=20, max_seconds=2.0, min_n=100)
        throughput = measure_throughput(chain.run_many, texts)
    flat_figures = None
    if flat is not None:
        fpred = [str(x) for x in flat.predict(texts)]
        f_acc, f_macro = _macro(truth, fpred)
        f_lat: dict[str, Any] = {}
        f_rate = 0.0
        if measure_speed and texts:
            f_lat = measure_latency(flat.predict_one, texts, n=1000, warmup=20, max_seconds=2.0, min_n=100)
            f_rate = measure_throughput(flat.predict, texts)
        flat_figures = FlatFigures(flat_name, f_acc, f_macro, f_lat, f_rate)
    unknown = sorted(set(truth) - set(_answers(chain)))
    warnings = list(data.warnings)
    if unknown:
        warnings.append(
            f"{len(unknown)} label(s) in the data the chain never answers (counted as wrong): "
            + ", ".join(unknown[:5])
            + (" ..." if len(unknown) > 5 else "")
        )
    return ChainEvaluation(
        pipeline,
        data.path,
        len(texts),
        acc,
        macro,
        latency,
        float(throughput),
        figures,
        flat_figures,
        warnings,
    )


def _answers(chain: Chain) -> list[str]:
    from offramp.chain.run import possible_labels

    return possible_labels(chain)


def per_stage_rows(ev: ChainEvaluation) -> list[list[str]]:
    """The per-stage table's rows (stage, version, share reached, judged, accuracy, macro-F1)."""
    rows = []
    for s in ev.stages:
        rows.append(
            [
                s.stage,
                str(s.version or "")[:12],
                f"{s.share:.1%}",
                f"{s.judged:,}",
                "—" if s.accuracy is None else f"{s.accuracy:.4f}",
                "—" if s.macro_f1 is None else f"{s.macro_f1:.4f}",
            ]
        )
    return rows
