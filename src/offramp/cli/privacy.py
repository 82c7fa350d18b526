"""``mask`` and ``audit verify`` / ``audit export``: personal data and the audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from offramp.cli.common import QUIET, RAW_CSV, err, out, status
from offramp.errors import DataError, UsageError

audit_app = typer.Typer(help="Check and export the audit log.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(mask)
    app.add_typer(audit_app, name="audit")


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
    raw_csv: bool = RAW_CSV,
    quiet: bool = QUIET,
) -> None:
    """Mask personal data in a dataset before it is shared: e-mails, phones, cards, IBANs, IPs, IDs, and
    names and places when the NER path is installed."""
    from offramp.data.io import WRITABLE, read_records, write_records
    from offramp.privacy.guard import PrivacyGuard, mask_records
    from offramp.privacy.vault import PseudonymVault

    if out_file.suffix.lower() not in WRITABLE:
        raise UsageError(f"--out {out_file} must end in {', '.join(WRITABLE)}")
    if out_file.resolve() == data.resolve():
        raise UsageError("--out must not be the input file", "write the masked copy to a new file")
    cols = [c.strip() for c in columns.split(",") if c.strip()]
    names, rows = read_records(data)
    if not rows:
        raise DataError(f"{data} has no data rows", "add at least one row below the header")
    missing = [c for c in cols + ([conversation_col] if conversation_col else []) if c not in names]
    if missing:
        raise UsageError(f"{data} has no column(s) {', '.join(missing)}", f"its columns are: {', '.join(names)}")
    if operator == "pseudonym" and vault is None:
        raise UsageError(
            "--operator pseudonym needs --vault FILE", "the vault keeps the mapping to turn pseudonyms back"
        )
    from offramp.privacy import ner as ner_path

    if ner is None:  # names are personal data too: find them whenever the NER path is installed
        ner = ner_path.available()
        if not ner:
            err.print(
                "note: names and places are NOT masked: the NER path is not installed "
                f"({ner_path.INSTALL_HINT}); e-mails, phones, cards, IBANs, IPs and IDs are",
                markup=False,
            )
    guard = PrivacyGuard(
        entities=[e.strip() for e in entities.split(",")] if entities else None,
        threshold=threshold,
        ner=ner,
        operator=operator,
        vault=PseudonymVault(vault) if vault else None,
    )
    with status(f"masking {len(rows)} rows", quiet) as say:
        masked_rows, counts = mask_records(
            rows, cols, guard, conversation_col, on_progress=lambda i, n: say(f"masked {i} of {n} rows")
        )
    write_records(out_file, masked_rows, raw=raw_csv)
    found = ", ".join(f"{k} {v}" for k, v in counts.most_common()) or "none"
    out.print(f"wrote {len(masked_rows)} rows to {out_file}; personal data replaced ({operator}): {found}")


@audit_app.command("verify")
def audit_verify(log_file: Path = typer.Argument(..., help="Audit log (SQLite) written by offramp serve.")) -> None:
    """Check the hash chain: names the first record that was edited, deleted, inserted or moved."""
    from offramp.audit.log import AuditLog

    verdict = AuditLog(log_file, create=False).verify()
    if not verdict.ok:
        err.print(f"TAMPERED: {verdict.message}", markup=False)
        raise typer.Exit(3)
    out.print(f"OK: {verdict.message}")


@audit_app.command("export")
def audit_export(
    log_file: Path = typer.Argument(..., help="Audit log (SQLite) written by offramp serve."),
    out_file: Path = typer.Option(..., "--out", "-o", help="File to write (.jsonl or .csv)."),
) -> None:
    """Write the records for an auditor, with a summary (requests, routes, what left the machine)."""
    from offramp.audit.log import AuditLog, export

    log = AuditLog(log_file, create=False)
    verdict = log.verify()
    summary = export(log, out_file)
    where = ", ".join(f"{k} {v}" for k, v in summary["endpoints"].items())
    routes = ", ".join(f"{k} {v}" for k, v in sorted(summary["routes"].items()))
    out.print(
        f"{summary['requests']} requests, {summary['left_machine']} left the machine"
        f"{' (' + where + ')' if where else ''}; routes: {routes or 'none'}; "
        f"{summary['pii_found']} personal-data values found; wrote {out_file}"
    )
    if not verdict.ok:
        err.print(f"warning: the chain does not verify: {verdict.message}", markup=False)
        raise typer.Exit(3)
