"""A chain of stages measured on a labelled file: end to end, per stage, and beside a flat model.

End to end, the chain's full labels are scored against the file's (accuracy, macro-F1), with the
single-message latency and the batch throughput of the whole chain. Per stage, each classify stage
is scored on its own question: the messages that reached it *with a correct path so far* (a child
model is not blamed for the router's mistakes), its answer against the part of the true label it
decides. A flat model over the full labels (``flat``: the one ``train --hierarchy`` writes beside
the chain) is measured on the same rows for comparison.
"""

from __future__ import annotations

import html
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from offramp.chain.run import Chain
from offramp.data.io import Dataset, read_dataset
from offramp.errors import UsageError
from offramp.estimators.base import TextClassifier
from offramp.evaluation.llm import score_llm_predictions
from offramp.evaluation.metrics import classification_metrics
from offramp.evaluation.report import html_page, report_paths, svg_grouped_bars
from offramp.formats import markdown_cell
from offramp.registry.records import load
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
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class LLMFigures:
    """An LLM's predictions of the full labels, beside the chain's on the same messages."""

    model: str
    n: int  # test messages the LLM answered
    accuracy: float
    macro_f1: float
    chain_accuracy: float  # the chain on those same messages
    chain_macro_f1: float
    cost_per_million_usd: float | None = None


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
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)  # end to end, by full label
    llm: LLMFigures | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _macro(truth: Sequence[str], pred: Sequence[str]) -> tuple[float, float]:
    m = classification_metrics(list(truth), list(pred))
    return m["accuracy"], m["macro_f1"]


def _per_class(truth: Sequence[str], pred: Sequence[str]) -> dict[str, dict[str, Any]]:
    per = classification_metrics(list(truth), list(pred), labels=sorted(set(truth)))["per_class"]
    return {lab: dict(m) for lab, m in per.items()}


def evaluate_chain(
    chain: Chain,
    data: Dataset,
    *,
    flat: TextClassifier | None = None,
    flat_name: str = "flat",
    pipeline: str = "",
    measure_speed: bool = True,
    llm_predictions: str | os.PathLike[str] | None = None,
) -> ChainEvaluation:
    """Score ``chain`` (its local answers) on ``data``; ``flat``: a model over the full labels to
    show beside it; ``llm_predictions``: a file of an LLM's full-label predictions on the same texts
    (columns ``text``, ``prediction``), scored beside the chain on the messages it covers."""
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
        flat_figures = FlatFigures(flat_name, f_acc, f_macro, f_lat, f_rate, _per_class(truth, fpred))
    llm_figures = None
    if llm_predictions is not None:
        scored = score_llm_predictions(llm_predictions, data)
        both = [i for i, p in enumerate(scored.predictions or []) if p is not None]
        c_acc, c_macro = _macro([truth[i] for i in both], [pred[i] for i in both])
        llm_figures = LLMFigures(
            scored.model or "LLM",
            len(both),
            scored.accuracy,
            scored.macro_f1,
            c_acc,
            c_macro,
            scored.cost_per_million_usd,
        )
    unknown = sorted(set(truth) - set(_answers(chain)))
    warnings = list(data.warnings)
    if llm_predictions is not None and scored.warnings:
        warnings += [f"LLM: {w}" for w in scored.warnings]
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
        _per_class(truth, pred),
        llm_figures,
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


def _ms(lat: dict[str, Any], key: str) -> str:
    v = lat.get(key)
    return "—" if v is None else f"{v:.2f}"


def overall_rows(ev: ChainEvaluation) -> list[list[str]]:
    """The end-to-end table's rows: the chain, the flat model, the LLM (accuracy, macro-F1,
    p50 and p99 ms for one message, messages per second in batches)."""
    rows = [
        ["chain", f"{ev.accuracy:.4f}", f"{ev.macro_f1:.4f}", _ms(ev.latency_ms, "p50"), _ms(ev.latency_ms, "p99"),
         f"{ev.throughput_per_s:,.0f}"],
    ]  # fmt: skip
    if ev.flat is not None:
        f = ev.flat
        rows.append(
            ["flat model", f"{f.accuracy:.4f}", f"{f.macro_f1:.4f}", _ms(f.latency_ms, "p50"),
             _ms(f.latency_ms, "p99"), f"{f.throughput_per_s:,.0f}"]
        )  # fmt: skip
    return rows


def write_chain_report(
    out: str | Path, ev: ChainEvaluation, title: str = "offramp report: a chain"
) -> tuple[Path, Path]:
    """Write the chain's report as HTML (self-contained) and Markdown beside it: end to end beside
    the flat model (and the LLM when its predictions were given), per stage, per full label."""
    html_path, md_path = report_paths(out)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    intro = f"Chain {ev.pipeline} on {ev.data} ({ev.n:,} messages). Written {created}."
    sections: list[tuple[str, str, list[str], list[list[str]]]] = [
        (
            "End to end",
            "Full labels scored against the file's; latency of one message through every stage, throughput in batches.",
            ["", "accuracy", "macro-F1", "p50 ms", "p99 ms", "msg/s (batch)"],
            overall_rows(ev),
        )
    ]
    if ev.llm is not None:
        g = ev.llm
        cost = "—" if g.cost_per_million_usd is None else f"${g.cost_per_million_usd:,.2f}"
        sections.append(
            (
                "Beside the LLM",
                f"On the {g.n:,} test messages the LLM answered; $ per 1M messages from its measured tokens.",
                ["", "accuracy", "macro-F1", "$ per 1M"],
                [
                    ["chain", f"{g.chain_accuracy:.4f}", f"{g.chain_macro_f1:.4f}", "—"],
                    [f"LLM ({g.model})", f"{g.accuracy:.4f}", f"{g.macro_f1:.4f}", cost],
                ],
            )
        )
    sections.append(
        (
            "Per stage",
            "Each stage judged on its own question, on the messages that reached it by a right path "
            "(a child model is not blamed for the router's mistakes).",
            ["stage", "version", "reached", "judged", "accuracy", "macro-F1"],
            per_stage_rows(ev),
        )
    )
    flat_pc = ev.flat.per_class if ev.flat is not None else {}
    worst = sorted(ev.per_class.items(), key=lambda kv: (kv[1]["f1"], kv[0]))
    sections.append(
        (
            "Per full label (weakest first)",
            "",
            ["label", "support", "chain P", "chain R", "chain F1"] + (["flat F1"] if flat_pc else []),
            [
                [lab, str(m["support"]), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}"]
                + ([f"{flat_pc.get(lab, {}).get('f1', 0.0):.3f}"] if flat_pc else [])
                for lab, m in worst
            ],
        )
    )

    def row(cells: Sequence[object]) -> str:
        return "| " + " | ".join(markdown_cell(c) for c in cells) + " |"

    md = [f"# {markdown_cell(title)}", "", markdown_cell(intro), ""]
    for name, caption, head, rows in sections:
        md += [f"## {name}", ""] + ([markdown_cell(caption), ""] if caption else [])
        md += [row(head), "|" + "---|" * len(head)] + [row(r) for r in rows] + [""]
    if ev.warnings:
        md += ["## Warnings", ""] + [f"- {markdown_cell(w)}" for w in ev.warnings] + [""]
    md_path.write_text("\n".join(md), encoding="utf-8")

    e = html.escape
    judged = [s for s in ev.stages if s.accuracy is not None]
    charts = svg_grouped_bars(
        [s.stage for s in judged],
        {
            "accuracy": [float(s.accuracy or 0) for s in judged],
            "macro-F1": [float(s.macro_f1 or 0) for s in judged],
            "share reached": [s.share for s in judged],
        },
        "Per stage: accuracy and macro-F1 on its own question, share of messages reached",
    )
    body = ""
    for name, caption, head, rows in sections:
        th = "".join(f"<th>{e(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
        body += f"<h2>{e(name)}</h2>" + (f'<p class="muted">{e(caption)}</p>' if caption else "")
        body += f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"
    if ev.warnings:
        body += "<h2>Warnings</h2><ul>" + "".join(f"<li>{e(w)}</li>" for w in ev.warnings) + "</ul>"
    page = html_page(title, e(intro), f"{charts}\n{body}")
    html_path.write_text(page, encoding="utf-8")
    return html_path, md_path


def build_chain_report(
    pipeline: str | os.PathLike[str],
    test: Dataset | str | os.PathLike[str],
    out: str | Path,
    *,
    llm_predictions: str | os.PathLike[str] | None = None,
    flat: TextClassifier | str | os.PathLike[str] | None = None,
    text_col: str = "text",
    label_col: str = "label",
    max_chars: int | None = None,
    title: str = "offramp report: a chain",
) -> tuple[Path, Path, ChainEvaluation]:
    """Evaluate the chain of ``pipeline`` on ``test`` (beside ``flat``, by default the flat model
    ``train --hierarchy`` wrote beside the pipeline file, and an LLM's predictions when given) and
    write the report; (html path, md path, evaluation)."""
    if Path(out).is_dir():
        raise UsageError(f"{out} is a directory", "give a file name such as report.html", param="out")
    chain = Chain.from_pipeline(pipeline, llm=False)
    try:
        if not isinstance(test, Dataset):
            kw: dict[str, Any] = {} if max_chars is None else {"max_chars": max_chars}
            test = read_dataset(test, text_col=text_col, label_col=label_col, **kw)
        flat_name = "flat"
        if flat is None:
            beside = Path(pipeline).parent / "flat"
            flat = beside if beside.is_dir() else None
        if flat is not None and not isinstance(flat, TextClassifier):
            flat_name = str(flat)
            flat = load(flat)
        ev = evaluate_chain(
            chain, test, flat=flat, flat_name=flat_name, pipeline=str(pipeline), llm_predictions=llm_predictions
        )
    finally:
        chain.close()
    html_path, md_path = write_chain_report(out, ev, title=title)
    return html_path, md_path, ev
