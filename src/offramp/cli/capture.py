"""``pool export``, ``shadow report`` and ``drift``: what live traffic taught, and whether it moved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from offramp.cli.common import QUIET, RAW_CSV, info, out
from offramp.errors import DataError, UsageError

pool_app = typer.Typer(help="The capture pool: the LLM's answers and people's corrections.", no_args_is_help=True)
shadow_app = typer.Typer(
    help="Shadow mode: the small model measured against the LLM on live traffic.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(pool_app, name="pool")
    app.add_typer(shadow_app, name="shadow")
    app.command()(drift)


@pool_app.command("export")
def export_cmd(
    pool: Path = typer.Argument(..., help="The capture pool (a pipeline's capture.pool)."),
    out_file: Path = typer.Option(
        ..., "--out", "-o", help="File to write (.csv, .tsv or .jsonl): text,label,source,time."
    ),
    sources: str = typer.Option("llm,shadow,feedback", "--from", help="Which rows: any of llm, shadow, feedback."),
    since: Optional[str] = typer.Option(None, "--since", help="Only rows since: an ISO date/time or an age (24h, 7d)."),
    raw_csv: bool = RAW_CSV,
    quiet: bool = QUIET,
) -> None:
    """Write the pool's rows for 'offramp retrain --add' (a correction beats the LLM's answer to the same request)."""
    from offramp.capture.pool import parse_since, read_rows, training_rows
    from offramp.data.io import WRITABLE, write_records

    if out_file.suffix.lower() not in WRITABLE:
        raise UsageError(f"--out {out_file} must end in {', '.join(WRITABLE)}")
    wanted = [s.strip() for s in sources.split(",") if s.strip()]
    rows = training_rows(read_rows(pool, wanted, parse_since(since)))
    if not rows:
        raise DataError(
            f"pool {pool} has no rows from {', '.join(wanted)}" + (f" since {since}" if since else ""),
            "serve traffic with a capture: section first, or widen --from / --since",
        )
    write_records(out_file, rows, raw=raw_csv)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    info(f"wrote {len(rows)} rows to {out_file} ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})", quiet)


@shadow_app.command("report")
def shadow_report_cmd(
    pool: Path = typer.Argument(..., help="The capture pool the shadow answers went to."),
    target: float = typer.Option(0.95, "--target", min=0.0, max=1.0, help="The agreement the small model must keep."),
    since: Optional[str] = typer.Option(None, "--since", help="Only rows since: an ISO date/time or an age (24h, 7d)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Per-label agreement with the LLM (95% Wilson intervals), the threshold to switch at, a verdict."""
    from offramp.capture.pool import parse_since, read_rows
    from offramp.monitoring.shadow import shadow_report

    rows = read_rows(pool, ["shadow"], parse_since(since))
    if not rows:
        raise DataError(
            f"pool {pool} has no shadow rows", "serve traffic with a shadow: section and capture from: [shadow]"
        )
    rep = shadow_report(rows, target)
    if as_json:
        print(json.dumps(rep))
        return
    t = Table(title=f"shadow agreement on {rep['compared']} messages (by the small model's label)")
    for c in ("local label", "compared", "agreed", "agreement", "95% interval"):
        t.add_column(c, justify="left" if c == "local label" else "right")
    for lab, m in rep["per_label"].items():
        lo, hi = m["ci95"]
        t.add_row(lab, str(m["compared"]), str(m["agreed"]), f"{m['agreement']:.3f}", f"[{lo:.3f}, {hi:.3f}]")
    lo, hi = rep["ci95"]
    t.add_row("all", str(rep["compared"]), str(rep["agreed"]), f"{rep['agreement']:.3f}", f"[{lo:.3f}, {hi:.3f}]")
    out.print(t)
    out.print(rep["verdict"])


def drift(
    source: Path = typer.Argument(..., help="An audit log or a capture pool (SQLite) of served traffic."),
    model: Path = typer.Option(..., "--model", help="The model (directory or registry) the traffic was served by."),
    window: int = typer.Option(1000, "--window", min=10, help="Compare the last this many messages."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Drift of served traffic against the model's training reference (PSI of confidence and label mix)."""
    from offramp.monitoring.drift import drift_report

    rep = drift_report(source, model, window)
    if as_json:
        print(json.dumps(rep))
        return
    t = Table(title=f"drift over the last {rep['messages']} messages of {rep['kind']} {source}")
    t.add_column("signal")
    t.add_column("value", justify="right")
    t.add_column("", justify="left")
    for k, v in rep["psi"].items():
        t.add_row(f"PSI {k}", f"{v:.3f}", "DRIFT" if v > rep["threshold"] else "ok")
    for k, v in rep["rate_change"].items():
        t.add_row(f"{k} rate change", f"{v:+.3f}", "")
    out.print(t)
    out.print(
        f"drift in {', '.join(rep['drifted'])} (PSI above {rep['threshold']})"
        if rep["drifted"]
        else f"no drift (every PSI at or below {rep['threshold']})"
    )
