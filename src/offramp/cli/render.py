"""What every command shares to show results: the two consoles, progress, warnings, JSON, tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the library is imported by the commands that need it, so --help stays quick
    from offramp.evaluation.results import EvalReport
    from offramp.training.report import TrainReport

# when piped, rich would assume 80 columns and squeeze the tables; give them room instead
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def emit(doc: Any) -> None:
    """``--json``: one JSON object on stdout, nothing else there."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def status(message: str, quiet: bool) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr whose text follows the work; plain lines when stderr is not a terminal;
    nothing with --quiet."""
    if quiet or not err.is_terminal:
        yield (lambda msg: None if quiet else err.print(f"[dim]{msg}[/dim]"))
        return
    with err.status(message) as st:
        yield (lambda msg: st.update(msg))


def counter(say: Callable[[str], None], what: str) -> Callable[[int, int], None]:
    """A (done, total) progress callback that says ``what`` {done} of {total}."""
    return lambda done, total: say(f"{what} {done} of {total}")


def warn(warnings: list[str]) -> None:
    for w in warnings:
        err.print(f"warning: {w}", markup=False)


def info(msg: str, quiet: bool) -> None:
    """Information on stderr (stdout stays for results)."""
    if not quiet:
        err.print(msg, markup=False)


def say(msg: str, as_json: bool) -> None:
    """A result line: on stdout, or on stderr when stdout holds the JSON object."""
    (err if as_json else out).print(msg, markup=False)


def fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def print_side_by_side(small: EvalReport, llm: EvalReport | None, first: str = "small model") -> None:
    from offramp.evaluation.report import side_by_side_rows

    t = Table(title=f"{small.n} test messages")
    t.add_column("metric")
    t.add_column(first, justify="right")
    if llm:
        t.add_column(f"LLM ({llm.model or 'LLM'})", justify="right")
    for name, a, b in side_by_side_rows(small, llm):
        t.add_row(name, a, *([b or ""] if llm else []))
    out.print(t)
    pc = Table(title="per class")
    for c in ("label", "support", "precision", "recall", "F1") + (("LLM F1",) if llm else ()):
        pc.add_column(c, justify="left" if c == "label" else "right")
    for lab, m in small.per_class.items():
        extra = [f"{llm.per_class.get(lab, {}).get('f1', 0):.3f}"] if llm else []
        pc.add_row(lab, str(m["support"]), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", *extra)
    out.print(pc)


def print_cascade(cascade: dict[str, Any]) -> None:
    from offramp.evaluation.report import cascade_caption, cascade_rows

    t = Table(title="the whole system: cascade")
    for c in ("", "macro-F1", "handled locally", "$ per month"):
        t.add_column(c, justify="left" if not c else "right")
    for r in cascade_rows(cascade):
        t.add_row(*r)
    out.print(t)
    out.print(cascade_caption(cascade))


def candidates_table(report: TrainReport) -> Table:
    t = Table(title=f"candidates ({report.n_folds}-fold CV)")
    for c in ("candidate", "CV macro-F1", "± SE", "µs/message", "p99 ms", "seconds", "status"):
        t.add_column(c, justify="left" if c in ("candidate", "status") else "right")
    for r in report.candidates:
        mark = " ✓" if r.name == report.winner else ""
        t.add_row(
            r.name + mark,
            "—" if r.cv_macro_f1 is None else f"{r.cv_macro_f1:.4f}",
            "—" if r.cv_macro_f1_se is None else f"{r.cv_macro_f1_se:.4f}",
            "—" if r.cost_us is None else f"{r.cost_us:,.0f}" if r.cost_us >= 10 else f"{r.cost_us:.1f}",
            "—" if r.latency_p99_ms is None else f"{r.latency_p99_ms:.2f}",
            f"{r.seconds:.1f}",
            r.status,
        )
    return t


def choice_line(report: TrainReport) -> str:
    """One line: which model won and why (and what the time limit left out)."""
    if report.winner.startswith("static"):
        tier = "static tier (distilled embeddings)"
    elif report.winner.startswith(("stacked", "embed")):
        tier = "accurate tier (sentence embeddings)"
    else:
        tier = "fast tier (TF-IDF)"
    scored = [c for c in report.candidates if c.cv_macro_f1 is not None]
    others = sorted((c for c in scored if c.name != report.winner), key=lambda c: -(c.cv_macro_f1 or 0))
    top = others[0] if others and (others[0].cv_macro_f1 or 0) > report.cv_macro_f1 else None
    win = next((c for c in scored if c.name == report.winner), None)
    if report.rule == "cheapest" and top is not None and win is not None:
        se = f" ± {win.cv_macro_f1_se:.3f}" if win.cv_macro_f1_se is not None else ""
        within = (
            f"within the allowed loss of {report.max_quality_loss:g}"
            if report.max_quality_loss is not None
            else "within one standard error"
        )
        why = f"{report.cv_macro_f1:.4f}{se} vs {top.cv_macro_f1:.4f} for {top.name}"
        if win.cost_us and top.cost_us:
            why += f", {top.cost_us / win.cost_us:,.0f}× cheaper"
        why += f" ({within}: the cheapest of {len(scored)} scored)"
    else:
        why = f"highest cross-validated macro-F1 of {len(scored)} scored ({report.cv_macro_f1:.4f}"
        why += f" vs {others[0].cv_macro_f1:.4f} for {others[0].name})" if others else ")"
        if report.rule == "cheapest" and win is not None and others:
            cheaper = [
                c for c in others if c.cost_us is not None and win.cost_us is not None and c.cost_us < win.cost_us
            ]
            if cheaper:
                why += "; no cheaper candidate came within one standard error"
    line = f"chose {report.winner}, the {tier}: {why}"
    if report.skipped:
        line += f"; skipped for time: {', '.join(report.skipped)} (--time-limit none tries every candidate)"
    return line
