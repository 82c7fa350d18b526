"""``pool export``: what live traffic taught, as a training file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from offramp.cli import options as o
from offramp.cli.render import emit, info

pool_app = typer.Typer(help="The capture pool: the LLM's answers and people's corrections.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(pool_app, name="pool")


@pool_app.command("export")
def export_cmd(
    pool: Path = typer.Argument(..., help="The capture pool (a pipeline's capture.pool)."),
    out_file: Path = typer.Option(
        ..., "--out", "-o", help="File to write (.csv, .tsv or .jsonl): text,label,source,time."
    ),
    sources: str = typer.Option("llm,shadow,feedback", "--from", help="Which rows: any of llm, shadow, feedback."),
    since: Optional[str] = o.SINCE,
    spreadsheet_safe: bool = o.SPREADSHEET_SAFE,
    raw_csv: bool = o.hidden("--raw-csv", default=False),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Write the pool's rows for 'offramp registry retrain' (a correction beats the LLM's answer to the same request)."""
    from offramp.capture.pool import export_pool

    o.cells_as_they_are(raw_csv)

    res = export_pool(pool, out_file, sources=sources.split(","), since=since, spreadsheet_safe=spreadsheet_safe)
    if as_json:
        emit(res.to_dict())
        return
    counts = ", ".join(f"{k}: {v}" for k, v in res.by_source.items())
    info(f"wrote {res.rows} rows to {out_file} ({counts})", quiet)
