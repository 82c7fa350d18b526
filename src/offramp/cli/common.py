"""What every command shares: the consoles, common options, progress, warnings and tables."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable

import typer
from rich.console import Console
from rich.table import Table

from offramp.errors import UsageError

if TYPE_CHECKING:  # the library is imported by the commands that need it, so --help stays quick
    from offramp.evaluation.results import EvalReport

# when piped, rich would assume 80 columns and squeeze the tables; give them room instead
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)

TEXT_COL = typer.Option("text", "--text-col", help="Name of the column holding the texts.")
LABEL_COL = typer.Option("label", "--label-col", help="Name of the column holding the labels.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress or information on stderr (warnings still show).")
API_KEY_ENV = typer.Option(
    "OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key (never printed)."
)
CONCURRENCY = typer.Option(4, "--concurrency", min=1, max=64, help="LLM requests in flight at once.")
PRICE_MODEL = typer.Option(None, "--price-model", help="Price-table row for the cost (default: --llm).")
ANSWER_CACHE = typer.Option(None, "--cache", help="Answer cache (SQLite; default ~/.cache/offramp/llm-answers.sqlite).")
LOGPROBS = typer.Option(
    True,
    "--logprobs/--no-logprobs",
    help="Ask for token logprobs and report the answer's probability as its confidence (skipped if the server refuses them).",
)
RAW_CSV = typer.Option(
    False,
    "--raw-csv",
    help="Write CSV/TSV cells as they are (by default text starting with = + - @ gets a leading ' so spreadsheets do not run it).",
)
MAX_CHARS = typer.Option(20_000, "--max-chars", min=1, help="Texts longer than this are cut (with a warning).")

# the library names the parameter an error is about; the CLI names its option
PARAM_FLAGS = {
    "text_col": "--text-col",
    "label_col": "--label-col",
    "out": "--out",
    "quality": "--quality",
    "time_limit": "--time-limit",
    "reject_target": "--reject-target",
    "oos_label": "--oos-label",
    "val": "--val",
    "latency_budget_ms": "--latency-budget-ms",
    "prices": "--prices",
    "predictions": "--predictions",
    "volume": "--messages-per-day / --messages-per-month / --messages-total",
}


@contextmanager
def status(message: str, quiet: bool) -> Iterator[Callable[[str], None]]:
    """A spinner whose text follows the work; silent with --quiet or when stderr is not a terminal."""
    if quiet or not err.is_terminal:
        yield (lambda msg: None if quiet else err.print(f"[dim]{msg}[/dim]"))
        return
    with err.status(message) as st:
        yield (lambda msg: st.update(msg))


def warn(warnings: list[str]) -> None:
    for w in warnings:
        err.print(f"warning: {w}", markup=False)


def info(msg: str, quiet: bool) -> None:
    if not quiet:
        err.print(msg)


def positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise UsageError(f"{name} must be greater than zero, got {value}")


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
