"""``audit verify`` and ``audit export``: the hash-chained audit trail."""

from __future__ import annotations

from pathlib import Path

import typer

from offramp.cli import options as o
from offramp.cli.render import emit, err, say

audit_app = typer.Typer(help="Check and export the audit log.", no_args_is_help=True)

EXIT_TAMPERED = 3


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    log_file: Path = typer.Argument(..., help="Audit log (SQLite) written by offramp serve."),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Check the hash chain: names the first record that was edited, deleted, inserted or moved (exit 3)."""
    from offramp.audit.log import AuditLog

    verdict = AuditLog(log_file, create=False).verify()
    if as_json:
        emit({"ok": verdict.ok, "message": verdict.message})
    elif verdict.ok:
        say(f"OK: {verdict.message}", as_json)
    else:
        err.print(f"TAMPERED: {verdict.message}", markup=False)
    if not verdict.ok:
        raise typer.Exit(EXIT_TAMPERED)


@audit_app.command("export")
def audit_export(
    log_file: Path = typer.Argument(..., help="Audit log (SQLite) written by offramp serve."),
    out_file: Path = typer.Option(..., "--out", "-o", help="File to write (.jsonl or .csv)."),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Write the records for an auditor, with a summary (requests, routes, what left the machine)."""
    from offramp.audit.log import AuditLog, export

    log = AuditLog(log_file, create=False)
    verdict = log.verify()
    summary = export(log, out_file)
    if as_json:
        emit({**summary, "out": str(out_file), "verified": verdict.ok, "verify_message": verdict.message})
    else:
        where = ", ".join(f"{k} {v}" for k, v in summary["endpoints"].items())
        routes = ", ".join(f"{k} {v}" for k, v in sorted(summary["routes"].items()))
        say(
            f"{summary['requests']} requests, {summary['left_machine']} left the machine"
            f"{' (' + where + ')' if where else ''}; routes: {routes or 'none'}; "
            f"{summary['pii_found']} personal-data values found; wrote {out_file}",
            as_json,
        )
    if not verdict.ok:
        err.print(f"warning: the chain does not verify: {verdict.message}", markup=False)
        raise typer.Exit(EXIT_TAMPERED)
