"""``mask``: personal data out of a data file before it is shared."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from offramp.cli import options as o
from offramp.cli.render import counter, emit, err, say, status


def register(app: typer.Typer) -> None:
    app.command()(mask)


def mask(
    data: Path = typer.Argument(..., help="Data file to mask (CSV, TSV, JSONL, Parquet)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Masked file to write (.csv, .tsv or .jsonl)."),
    columns: str = typer.Option("text", "--columns", help="Comma-separated columns to mask; the others are copied."),
    operator: str = typer.Option("placeholder", "--operator", help="redact, mask, placeholder or pseudonym."),
    entities: Optional[str] = typer.Option(None, "--entities", help="Comma-separated entity types (default: all)."),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="Minimum detection score."),
    ner: Optional[bool] = typer.Option(
        None,
        "--ner/--no-ner",
        help="Also find names and places with Presidio + spaCy (default: on when they are installed).",
    ),
    vault: Optional[Path] = typer.Option(None, "--vault", help="Pseudonym vault (SQLite) for --operator pseudonym."),
    conversation_col: Optional[str] = typer.Option(
        None,
        "--conversation-col",
        help="Column naming the conversation: the same value gets the same pseudonym within it.",
    ),
    spreadsheet_safe: bool = o.SPREADSHEET_SAFE,
    raw_csv: bool = o.hidden("--raw-csv", default=False),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Mask personal data in a dataset before it is shared: e-mails, phones, cards, IBANs, IPs, IDs, and
    names and places when the NER path is installed."""
    from offramp.privacy.files import mask as mask_file

    o.cells_as_they_are(raw_csv)

    with status("masking", quiet) as progress:
        res = mask_file(
            data,
            out_file,
            columns=[c.strip() for c in columns.split(",") if c.strip()],
            operator=operator,
            entities=[e.strip() for e in entities.split(",")] if entities else None,
            threshold=threshold,
            ner=ner,
            vault=vault,
            conversation_col=conversation_col,
            spreadsheet_safe=spreadsheet_safe,
            on_progress=counter(progress, "masked row"),
        )
    for note in res.notes:
        err.print(f"note: {note}", markup=False)
    if as_json:
        emit(res.to_dict())
        return
    found = ", ".join(f"{k} {v}" for k, v in res.counts.items()) or "none"
    say(
        f"wrote {res.rows} rows to {out_file} ({res.masked_rows} with personal data); "
        f"personal data replaced ({operator}): {found}",
        as_json,
    )
