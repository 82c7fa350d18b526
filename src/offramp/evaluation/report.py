"""The side-by-side report: small model vs LLM, as HTML (self-contained, inline SVG) and Markdown.

No plotting library: the charts are small SVG drawings, so the report opens anywhere, offline,
and the core install stays light.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence, cast

from offramp.costs.calculator import CostInputs, CostReport, CostRow, compute_costs, estimate_tokens, load_prices
from offramp.data.io import Dataset, read_dataset
from offramp.errors import UsageError
from offramp.estimators.base import TextClassifier
from offramp.estimators.multilabel import Cooccurrence
from offramp.estimators.rejection import Rejection
from offramp.evaluation.cascade import cascade_view
from offramp.evaluation.evaluate import evaluate
from offramp.evaluation.metrics import MATRIX_LABELS
from offramp.evaluation.results import EvalReport, LLMComparison, MultiLabelEvaluation
from offramp.formats import markdown_cell
from offramp.modeldir.card import score_name
from offramp.registry.records import load

PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444"]


DEFAULT_PRICE_MODEL = "gpt-4o-mini"  # the LLM price the cascade view uses when the predictions carry no tokens


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v, kind: str) -> str:
    if v is None:
        return "—"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "f3":
        return f"{v:.3f}"
    if kind == "ms":
        return f"{v:.3f} ms" if v < 10 else f"{v:,.0f} ms"
    if kind == "rate":
        return f"{v:,.0f}/s"
    if kind == "bytes":
        return f"{v / 1e6:.2f} MB"
    if kind == "usd":
        return f"${v:,.4f}" if v < 1 else f"${v:,.2f}"
    if kind == "s":
        return f"{v:.1f} s"
    return str(v)


def breakeven_text(row: CostRow) -> str:
    be = row.breakeven_messages_per_month
    return "—" if be is None else ("always" if be == 0 else f"{be:,.0f} messages/month")


def side_by_side_rows(small: EvalReport, llm: EvalReport | None) -> list[tuple[str, str, str | None]]:
    """(metric, small model, LLM) rows shared by the terminal table, the HTML and the Markdown."""

    def get(report: EvalReport, field: str, key: str | None = None) -> object:
        value = getattr(report, field)
        return value.get(key) if key is not None and isinstance(value, dict) else value

    spec = [
        ("macro-F1", ("macro_f1",), "f3"),
        ("accuracy", ("accuracy",), "pct"),
        ("latency p50", ("latency_ms", "p50"), "ms"),
        ("latency p99", ("latency_ms", "p99"), "ms"),
        ("throughput", ("throughput_per_s",), "rate"),
        ("model size", ("model_bytes",), "bytes"),
        ("$ per 1M messages", ("cost_per_million_usd",), "usd"),
        ("training time", ("train_seconds",), "s"),
    ]
    rows = []
    for name, path, kind in spec:
        rows.append((name, _fmt(get(small, *path), kind), _fmt(get(llm, *path), kind) if llm else None))
    return rows


# ---------------------------------------------------------------- SVG charts
def svg_heatmap(labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str) -> str:
    n = len(labels)
    cell, left, top = 46, 130, 40
    longest = max((len(str(lab)) for lab in labels), default=4)
    w, h = left + cell * n + 8 * longest, top + cell * n + 30 + 7 * longest
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{_e(title)}">',
        f'<text x="8" y="20" font-weight="bold">{_e(title)}</text>',
    ]
    for i, row in enumerate(matrix):
        total: float = sum(row) or 1
        for j, v in enumerate(row):
            share = v / total
            color = (
                f"rgba(37,99,235,{0.08 + 0.92 * share:.3f})"
                if i == j
                else f"rgba(239,68,68,{min(1, 0.08 + 2 * share):.3f})"
            )
            if v == 0:
                color = "#f8fafc"
            x, y = left + j * cell, top + i * cell
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{color}"><title>'
                f"true {_e(labels[i])}, predicted {_e(labels[j])}: {v}</title></rect>"
            )
            parts.append(
                f'<text x="{x + cell / 2 - 1}" y="{y + cell / 2 + 4}" text-anchor="middle" font-size="12">{v}</text>'
            )
        parts.append(
            f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end" font-size="12">{_e(labels[i])}</text>'
        )
    for j, lab in enumerate(labels):
        xc = left + j * cell + cell / 2
        parts.append(
            f'<text transform="translate({xc},{top + n * cell + 8}) rotate(40)" font-size="12">{_e(lab)}</text>'
        )
    parts.append(f'<text x="8" y="{top + n * cell / 2}" font-size="11" fill="#555">true ↓</text>')
    parts.append(f'<text x="{left}" y="{h - 6}" font-size="11" fill="#555">predicted →</text></svg>')
    return "".join(parts)


def svg_grouped_bars(categories: Sequence[str], series: Mapping[str, Sequence[float]], title: str) -> str:
    """Values in [0, 1], one group per category, one bar per series."""
    k = max(1, len(series))
    bar, gap, left, top, height = 16, 18, 40, 36, 180
    w = left + len(categories) * (k * bar + gap) + 160
    h = top + height + 80
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{_e(title)}">',
        f'<text x="{left}" y="20" font-weight="bold">{_e(title)}</text>',
    ]
    for t in (0, 0.5, 1.0):
        y = top + height * (1 - t)
        parts.append(
            f'<line x1="{left}" x2="{w - 150}" y1="{y}" y2="{y}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4}" text-anchor="end" font-size="11">{t:.1f}</text>'
        )
    for ci, cat in enumerate(categories):
        x0 = left + ci * (k * bar + gap) + gap / 2
        for si, (name, values) in enumerate(series.items()):
            v = max(0.0, min(1.0, float(values[ci] or 0)))
            x, bh = x0 + si * bar, height * v
            parts.append(
                f'<rect x="{x}" y="{top + height - bh}" width="{bar - 2}" height="{bh}" fill="{PALETTE[si % 4]}">'
                f"<title>{_e(name)} {_e(cat)}: {v:.3f}</title></rect>"
            )
        parts.append(
            f'<text transform="translate({x0},{top + height + 12}) rotate(35)" font-size="11">{_e(cat)}</text>'
        )
    for si, name in enumerate(series):
        y = top + 10 + si * 18
        parts.append(
            f'<rect x="{w - 145}" y="{y - 10}" width="12" height="12" fill="{PALETTE[si % 4]}"/>'
            f'<text x="{w - 128}" y="{y}" font-size="12">{_e(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_cost_bars(names: Sequence[str], values: Sequence[float], title: str) -> str:
    """Horizontal bars on a log scale ($ per 1M messages spans many orders of magnitude)."""
    left, top, row, width = 210, 36, 24, 420
    vals = [max(v, 1e-6) for v in values]
    lo = math.floor(math.log10(min(vals)))
    hi = math.ceil(math.log10(max(vals))) + (1 if max(vals) == min(vals) else 0)
    span = max(hi - lo, 1)
    h = top + row * len(names) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 120}" height="{h}" role="img" aria-label="{_e(title)}">',
        f'<text x="{left}" y="20" font-weight="bold">{_e(title)}</text>',
    ]
    for d in range(lo, hi + 1):
        x = left + width * (d - lo) / span
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{top - 4}" y2="{h - 30}" stroke="#eee"/>'
            f'<text x="{x}" y="{h - 16}" text-anchor="middle" font-size="10">${10.0**d:g}</text>'
        )
    for i, (n, v) in enumerate(zip(names, vals)):
        y = top + i * row
        bw = max(2.0, width * (math.log10(v) - lo) / span)
        color = PALETTE[2] if "small model" in n else PALETTE[0]
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="12">{_e(n)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{bw}" height="{row - 8}" fill="{color}"/>'
            f'<text x="{left + bw + 4}" y="{y + 14}" font-size="11">{_e(_fmt(v, "usd"))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_reliability(bins: Sequence[dict], title: str) -> str:
    size, left, top = 220, 40, 34
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + size + 30}" height="{top + size + 40}" role="img" aria-label="{_e(title)}">',
        f'<text x="{left}" y="20" font-weight="bold">{_e(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="#ccc"/>',
        f'<line x1="{left}" y1="{top + size}" x2="{left + size}" y2="{top}" stroke="#999" stroke-dasharray="4"/>',
    ]
    for b in bins:
        if not b["count"]:
            continue
        x = left + size * b["lo"]
        bw = size * (b["hi"] - b["lo"])
        bh = size * b["accuracy"]
        parts.append(
            f'<rect x="{x + 1}" y="{top + size - bh}" width="{bw - 2}" height="{bh}" fill="{PALETTE[0]}" opacity="0.75">'
            f"<title>confidence {b['lo']:.1f}–{b['hi']:.1f}: accuracy {b['accuracy']:.3f} over {b['count']} messages</title></rect>"
        )
    parts.append(
        f'<text x="{left + size / 2}" y="{top + size + 28}" text-anchor="middle" font-size="11">confidence</text>'
        f'<text x="12" y="{top + size / 2}" font-size="11" transform="rotate(-90 12 {top + size / 2})" text-anchor="middle">accuracy</text></svg>'
    )
    return "".join(parts)


def svg_rejection_curve(rejection: Rejection, title: str) -> str:
    """The trade-off a "don't know" threshold makes, with the fitted point marked.

    With out-of-scope examples in the held-out data: out-of-scope recall (x) against in-scope
    accuracy (y); without them: share answered (x) against in-scope precision (y).
    """
    curve = rejection.curve
    with_oos = all(p.get("oos_recall") is not None for p in curve)
    xk, yk = ("oos_recall", "in_scope_accuracy") if with_oos else ("coverage", "in_scope_precision")
    xl, yl = ("out-of-scope recall", "in-scope accuracy") if with_oos else ("share answered", "in-scope precision")
    size, left, top = 220, 44, 34
    pts = " ".join(f"{left + size * (p[xk] or 0.0):.1f},{top + size * (1 - (p[yk] or 0.0)):.1f}" for p in curve)
    chosen = asdict(rejection.held_out)
    cx, cy = left + size * chosen[xk], top + size * (1 - chosen[yk])
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + size + 30}" height="{top + size + 44}" role="img" aria-label="{_e(title)}">'
        f'<text x="8" y="20" font-weight="bold">{_e(title)}</text>'
        f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="#ccc"/>'
        f'<polyline points="{pts}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>'
        f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{PALETTE[3]}"><title>threshold {rejection.threshold:.4f}: '
        f"{_e(xl)} {chosen[xk]:.3f}, {_e(yl)} {chosen[yk]:.3f}</title></circle>"
        f'<text x="{left}" y="{top + size + 16}" font-size="10">0</text><text x="{left + size - 6}" y="{top + size + 16}" font-size="10">1</text>'
        f'<text x="{left + size / 2}" y="{top + size + 32}" text-anchor="middle" font-size="11">{_e(xl)}</text>'
        f'<text x="12" y="{top + size / 2}" font-size="11" transform="rotate(-90 12 {top + size / 2})" text-anchor="middle">{_e(yl)}</text></svg>'
    )


# ---------------------------------------------------------------- documents
def html_page(title: str, intro_html: str, body_html: str) -> str:
    """A report page: self-contained (its style inline, no script), the title, an intro line and
    the body; ``intro_html`` and ``body_html`` are HTML already escaped by the caller."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body{{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#111;padding:0 1rem}}
table{{border-collapse:collapse;margin:1rem 0}} th,td{{border:1px solid #ddd;padding:4px 10px;text-align:right}}
th:first-child,td:first-child{{text-align:left}} thead{{background:#f1f5f9}}
.charts{{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start}} .muted{{color:#555}}
</style></head><body>
<h1>{_e(title)}</h1>
<p class="muted">{intro_html}</p>
{body_html}
</body></html>
"""


def _per_class_rows(small: EvalReport, llm: EvalReport | None) -> list[list[str]]:
    rows = []
    for lab, m in small.per_class.items():
        row = [lab, str(m["support"]), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}"]
        if llm:
            o = llm.per_class.get(lab, {})
            row += [f"{o.get('precision', 0):.3f}", f"{o.get('recall', 0):.3f}", f"{o.get('f1', 0):.3f}"]
        rows.append(row)
    return rows


def report_paths(out: str | Path) -> tuple[Path, Path]:
    """The HTML file (``.html`` added if needed, its directory created) and the Markdown beside it."""
    html_path = Path(out)
    if html_path.suffix.lower() not in (".html", ".htm"):
        html_path = html_path.with_suffix(".html")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    return html_path, html_path.with_suffix(".md")


@dataclass
class ReportSection:
    """A titled table the report shows after the side-by-side (e.g. the teacher and its student)."""

    title: str
    caption: str
    head: list[str]
    rows: list[list[str]]


def write_report(
    out: str | Path,
    small: EvalReport,
    llm: EvalReport | None = None,
    costs: CostReport | None = None,
    title: str = "offramp report",
    sections: Sequence[ReportSection] = (),
) -> tuple[Path, Path]:
    """Write ``out`` (HTML) and the same content as Markdown beside it; return both paths."""
    out, md_path = report_paths(out)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    llm_name = (llm.model or "LLM") if llm else None
    sbs = side_by_side_rows(small, llm)
    pcr = _per_class_rows(small, llm)
    warnings = list(small.warnings) + [f"LLM: {w}" for w in (llm.warnings if llm else [])]

    # ---- Markdown (every cell and line that can hold data-derived text is escaped)
    def row(cells: Sequence[object]) -> str:
        return "| " + " | ".join(markdown_cell(c) for c in cells) + " |"

    md = [
        f"# {title}",
        "",
        f"Model {markdown_cell(small.model_dir or '')} ({markdown_cell(small.model)}) on {markdown_cell(small.data or '')} "
        f"({small.n} messages). Written {created}.",
        "",
    ]
    head = ["metric", "small model"] + ([f"LLM ({llm_name})"] if llm else [])
    md += [row(head), "|" + "---|" * len(head)]
    md += [row([r[0], r[1]] + ([r[2] or ""] if llm else [])) for r in sbs]
    for sec in sections:
        md += ["", f"## {markdown_cell(sec.title)}", "", markdown_cell(sec.caption), ""]
        md += [row(sec.head), "|" + "---|" * len(sec.head)] + [row(r) for r in sec.rows]
    md += ["", "## Per class", ""]
    ph = ["label", "support", "precision", "recall", "F1"] + (["LLM precision", "LLM recall", "LLM F1"] if llm else [])
    md += [row(ph), "|" + "---|" * len(ph)] + [row(r) for r in pcr]
    labels = small.labels
    if small.confusion["matrix"] is None:  # too many labels for a matrix: the most frequent confusions
        md += [
            "",
            f"## Most frequent confusions (small model; {len(labels):,} labels, too many for a matrix)",
            "",
            row(["true", "predicted", "messages"]),
            "|---|---|---|",
        ]
        md += [row([t, p, str(n)]) for t, p, n in small.confusion["pairs"][:100]]
    else:
        md += [
            "",
            "## Confusion matrix (small model; rows: true, columns: predicted)",
            "",
            row(["", *labels]),
            "|" + "---|" * (len(labels) + 1),
        ]
        md += [row([labels[i], *counts]) for i, counts in enumerate(small.confusion["matrix"])]
    if small.cascade:
        ch = ["", "macro-F1", "handled locally", "$ per month"]
        md += ["", "## The whole system: cascade", "", markdown_cell(cascade_caption(small.cascade)), ""]
        md += [row(ch), "|" + "---|" * len(ch)] + [row(r) for r in cascade_rows(small.cascade)]
    if small.ece is not None:
        md += ["", f"Expected calibration error of the small model's confidence: {small.ece:.4f}."]
    rej = small.rejection
    if rej:
        h = asdict(rej.held_out)
        md += [
            "",
            f"Don't know: {score_name(rej.to_dict())} under {rej.threshold:.4f} is answered {markdown_cell(rej.label)} "
            f"(target {rej.target}, fitted on {rej.source}: in-scope accuracy {h['in_scope_accuracy']:.3f}, "
            f"out-of-scope recall {'—' if h['oos_recall'] is None else format(h['oos_recall'], '.3f')}, "
            f"answered {h['coverage']:.1%}).",
        ]
    if costs:
        md += [
            "",
            f"## Cost at {costs.inputs.messages_per_month:,.0f} messages a month",
            "",
            "| option | $ per 1M messages | $ per month | Wh per 1M messages | small model cheaper above |",
            "|---|---|---|---|---|",
        ]
        md += [
            row(
                [
                    r.name,
                    _fmt(r.usd_per_million, "usd"),
                    _fmt(r.usd_per_month, "usd"),
                    f"{r.wh_per_million:,.1f}",
                    breakeven_text(r),
                ]
            )
            for r in costs.rows
        ]
        md += [""] + [f"- {markdown_cell(a)}" for a in costs.assumptions]
    if warnings:
        md += ["", "## Warnings", ""] + [f"- {markdown_cell(w)}" for w in warnings]
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")

    # ---- HTML
    def table(head: list[str], rows: list[list[str]]) -> str:
        th = "".join(f"<th>{_e(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

    charts = []
    if small.confusion["matrix"] is not None:
        charts.append(svg_heatmap(labels, small.confusion["matrix"], "Confusion matrix: small model"))
    if llm and llm.confusion["matrix"] is not None:
        charts.append(svg_heatmap(llm.labels, llm.confusion["matrix"], f"Confusion matrix: {llm_name}"))
    if len(small.per_class) <= MATRIX_LABELS:  # one bar a label: the per-class table holds the rest
        f1_series = {"small model": [m["f1"] for m in small.per_class.values()]}
        if llm:
            f1_series[str(llm_name)] = [llm.per_class.get(lab, {}).get("f1", 0.0) for lab in small.per_class]
        charts.append(svg_grouped_bars(list(small.per_class), f1_series, "F1 per class"))
    if small.reliability:
        charts.append(svg_reliability(small.reliability, "Reliability: small model"))
    if small.rejection:
        charts.append(svg_rejection_curve(small.rejection, f"Don't know: target {small.rejection.target}"))
    cost_html = ""
    if costs:
        charts.append(
            svg_cost_bars(
                [r.name for r in costs.rows], [r.usd_per_million for r in costs.rows], "$ per 1M messages (log scale)"
            )
        )
        cost_html = (
            f"<h2>Cost at {costs.inputs.messages_per_month:,.0f} messages a month</h2>"
            + table(
                ["option", "$ per 1M messages", "$ per month", "Wh per 1M messages", "small model cheaper above"],
                [
                    [
                        r.name,
                        _fmt(r.usd_per_million, "usd"),
                        _fmt(r.usd_per_month, "usd"),
                        f"{r.wh_per_million:,.1f}",
                        breakeven_text(r),
                    ]
                    for r in costs.rows
                ],
            )
            + "<ul>"
            + "".join(f"<li>{_e(a)}</li>" for a in costs.assumptions)
            + "</ul>"
        )
    cascade_html = ""
    if small.cascade:
        cascade_html = (
            "<h2>The whole system: cascade</h2>"
            f'<p class="muted">{_e(cascade_caption(small.cascade))}</p>'
            + table(["", "macro-F1", "handled locally", "$ per month"], cascade_rows(small.cascade))
        )
    sections_html = "".join(
        f'<h2>{_e(sec.title)}</h2><p class="muted">{_e(sec.caption)}</p>' + table(sec.head, sec.rows)
        for sec in sections
    )
    if small.confusion["matrix"] is None:
        sections_html += f"<h2>Most frequent confusions ({len(labels):,} labels, too many for a matrix)</h2>" + table(
            ["true", "predicted", "messages"], [[t, p, str(n)] for t, p, n in small.confusion["pairs"][:100]]
        )
    warn_html = ("<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>") if warnings else ""
    intro = (
        f"Model <code>{_e(small.model_dir or '')}</code> ({_e(small.model)}) on <code>{_e(small.data or '')}</code>\n"
        f"({small.n} messages). Written {_e(created)}."
    )
    body = f"""<h2>Side by side</h2>
{table(head, [[r[0], r[1]] + ([r[2] or ""] if llm else []) for r in sbs])}
{cascade_html}
{sections_html}
<h2>Per class</h2>
{table(ph, pcr)}
<div class="charts">{"".join(charts)}</div>
{cost_html}
{warn_html}"""
    page = html_page(title, intro, body)
    out.write_text(page, encoding="utf-8")
    return out, md_path


def build_report(
    model: TextClassifier | str | os.PathLike[str],
    test: Dataset | str | os.PathLike[str],
    out: str | Path,
    *,
    llm_predictions: str | Path | None = None,
    messages_per_day: float = 100_000,
    title: str = "offramp report",
    route_threshold: float | None = None,
    llm_share: float = 0.1,
    sections: Callable[[EvalReport], Sequence[ReportSection]] | None = None,
    text_col: str = "text",
    label_col: str = "label",
) -> tuple[Path, Path, EvalReport]:
    """Evaluate ``model`` on ``test`` (beside an LLM's predictions when given), price both at
    ``messages_per_day``, and write the HTML and Markdown report; (html path, md path, evaluation).

    ``model`` may be a model directory or a registry, ``test`` the path of a labelled file
    (``text_col``, ``label_col``). The cascade view (small model, LLM, and the two as a cascade)
    answers locally at ``route_threshold`` or above, or, without one, at the threshold that sends
    at most ``llm_share`` of the messages to the LLM."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"{out} is a directory", "give a file name such as report.html", param="out")
    if not isinstance(model, TextClassifier):
        model = load(model)
    if not isinstance(test, Dataset):
        test = read_dataset(test, text_col=text_col, label_col=label_col)
    small = evaluate(model, test, llm_predictions=llm_predictions)
    costs = compute_costs(
        CostInputs.from_prices(
            load_prices(),
            messages_per_month=messages_per_day * 365 / 12,
            tokens_in=estimate_tokens(test.texts),
            throughput_per_s=small.throughput_per_s,
            throughput_measured=True,
        ),
        load_prices(),
    )
    if small.llm is not None and small.predictions and small.confidences and small.llm.predictions:
        api = [r for r in costs.rows if r.kind == "api"]
        default = next((r for r in api if r.name == (small.llm.model or "")), None) or next(
            (r for r in api if r.name == DEFAULT_PRICE_MODEL), api[0] if api else None
        )
        measured = small.llm.cost_per_million_usd
        per_message = measured / 1e6 if measured is not None else (default.usd_per_message if default else None)
        reject = model.reject_label_
        small.cascade = cascade_view(
            test.labels or [],
            cast("list[str]", small.predictions),  # the small model always answers
            small.confidences,
            small.llm.predictions,
            threshold=route_threshold,
            llm_share=llm_share,
            refusal=str(reject) if reject is not None else None,
            small_usd_per_month=costs.row("small model (local CPU)").usd_per_month,
            llm_usd_per_message=per_message,
            messages_per_month=costs.inputs.messages_per_month,
        )
        small.cascade["llm_price"] = (
            f"measured tokens of {small.llm.model}" if measured is not None else (default.name if default else None)
        )
    extra = sections(small) if sections is not None else ()
    html_path, md_path = write_report(out, small, small.llm, costs, title=title, sections=extra)
    return html_path, md_path, small


def cascade_rows(cascade: dict) -> list[list[str]]:
    return [
        [
            r["name"],
            f"{r['macro_f1']:.4f}",
            f"{r['local_share']:.1%}",
            "—" if r["usd_per_month"] is None else f"${r['usd_per_month']:,.2f}",
        ]
        for r in cascade["rows"]
    ]


def cascade_caption(cascade: dict) -> str:
    return (
        f"On the {cascade['n']} test messages with an LLM prediction; the cascade answers locally at confidence "
        f">= {cascade['threshold']:.4f} ({cascade['threshold_rule']}) and asks the LLM otherwise. "
        f"$ per month at {cascade['messages_per_month']:,.0f} messages, LLM priced as {cascade.get('llm_price')}."
    )


def write_multilabel_report(
    out: str | Path,
    res: MultiLabelEvaluation,
    model_dir: str,
    data: str,
    cooccurrence: Sequence[Cooccurrence],
    title: str = "offramp report",
    llm: LLMComparison | None = None,
) -> tuple[Path, Path]:
    """The report of a multi-label model: overall figures, per-label bars and table, the labels that
    come together in training and the most confused pairs; with ``llm`` (see
    :func:`offramp.evaluation.multilabel.compare_with_llm`) the LLM's figures beside the model's on
    the messages both answered; HTML and Markdown."""
    out, md_path = report_paths(out)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    scores: Mapping[str, object] = res
    overall = [
        [name, f"{scores[key]:.4f}"]
        for name, key in (
            ("micro-F1", "micro_f1"),
            ("macro-F1", "macro_f1"),
            ("samples-F1", "samples_f1"),
            ("subset accuracy", "subset_accuracy"),
            ("Hamming loss", "hamming_loss"),
        )
    ]
    lat = res.get("latency_ms") or {}
    if lat:
        overall.append(["p99 latency (ms, one message)", f"{lat['p99']:.2f}"])
    labels = list(res["per_label"])
    per = [
        [lab, str(m["support"]), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}"]
        for lab, m in res["per_label"].items()
    ]
    co = [[" + ".join(c["labels"]), str(c["messages"])] for c in cooccurrence]
    conf = [[c["true"], c["predicted"], str(c["count"])] for c in res.get("confused_pairs", [])]
    sections = [
        ("Overall", ["metric", "value"], overall),
        ("Per label", ["label", "support", "precision", "recall", "F1"], per),
    ]
    if llm is not None:
        keys = [("micro-F1", "micro_f1"), ("macro-F1", "macro_f1"), ("samples-F1", "samples_f1")]
        keys += [("subset accuracy", "subset_accuracy"), ("Hamming loss", "hamming_loss")]
        small_scores: Mapping[str, object] = llm["small"]
        llm_scores: Mapping[str, object] = llm["llm"]
        both = [[name, f"{small_scores[k]:.4f}", f"{llm_scores[k]:.4f}"] for name, k in keys]
        per_both = [
            [lab, str(llm["small"]["per_label"][lab]["support"])]
            + [f"{llm[w]['per_label'][lab][m]:.3f}" for w in ("small", "llm") for m in ("precision", "recall", "f1")]
            for lab in labels
        ]
        title_llm = f"Side by side with the LLM ({llm['n']} messages both answered"
        title_llm += f"; {llm['missing']} without an LLM answer)" if llm["missing"] else ")"
        sections += [
            (title_llm, ["metric", "small model", "LLM"], both),
            (
                "Per label, small model vs LLM",
                ["label", "support", "small P", "small R", "small F1", "LLM P", "LLM R", "LLM F1"],
                per_both,
            ),
        ]
    sections += [
        ("Labels that come together (training data)", ["labels", "messages"], co),
        (
            "Most confused pairs (missed one, added the other, on the same message)",
            ["true", "predicted", "messages"],
            conf,
        ),
    ]

    def row(cells: Sequence[object]) -> str:
        return "| " + " | ".join(markdown_cell(c) for c in cells) + " |"

    md = [
        f"# {title}",
        "",
        f"Multi-label model {markdown_cell(model_dir)} on {markdown_cell(data)} ({res['n']} messages). Written {created}.",
        "",
    ]
    for name, head, rows in sections:
        md += [f"## {name}", "", row(head), "|" + "---|" * len(head)] + [row(r) for r in rows] + [""]
    md_path.write_text("\n".join(md), encoding="utf-8")

    def table(head: list[str], rows: list[list[str]]) -> str:
        th = "".join(f"<th>{_e(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

    bars = svg_grouped_bars(
        labels,
        {k: [res["per_label"][lab][k] for lab in labels] for k in ("precision", "recall", "f1")},
        "Per label: precision, recall, F1",
    )
    if llm is not None:
        bars += svg_grouped_bars(
            labels,
            {
                "small model F1": [llm["small"]["per_label"][lab]["f1"] for lab in labels],
                "LLM F1": [llm["llm"]["per_label"][lab]["f1"] for lab in labels],
            },
            "Per label F1: small model vs LLM",
        )
    body = "".join(f"<h2>{_e(name)}</h2>" + table(head, rows) for name, head, rows in sections)
    intro = (
        f"Multi-label model <code>{_e(model_dir)}</code> on <code>{_e(data)}</code> ({res['n']} messages). "
        f"Written {_e(created)}."
    )
    page = html_page(title, intro, f"{bars}\n{body}")
    out.write_text(page, encoding="utf-8")
    return out, md_path
