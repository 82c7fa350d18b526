"""``drift`` and ``shadow report``: is live traffic still handled well, and can the small model take over."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from offramp.cli import options as o
from offramp.cli.render import emit, out

shadow_app = typer.Typer(
    help="Shadow mode: the small model measured against the LLM on live traffic.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(shadow_app, name="shadow")
    app.command()(drift)


@shadow_app.command("report")
def shadow_report_cmd(
    pool: Path = typer.Argument(..., help="The capture pool the shadow answers went to."),
    target: float = typer.Option(0.95, "--target", min=0.0, max=1.0, help="The agreement the small model must keep."),
    since: Optional[str] = o.SINCE,
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Per-label agreement with the LLM (95% Wilson intervals), the threshold to switch at, a verdict."""
    from offramp.capture.pool import parse_since
    from offramp.monitoring.shadow import shadow_report

    rep = shadow_report(pool, target, since=parse_since(since))
    if as_json:
        emit(rep.to_dict())
        return
    t = Table(title=f"shadow agreement on {rep.compared} messages (by the small model's label)")
    for c in ("local label", "compared", "agreed", "agreement", "95% interval"):
        t.add_column(c, justify="left" if c == "local label" else "right")
    for lab, m in rep.per_label.items():
        lo, hi = m["ci95"]
        t.add_row(lab, str(m["compared"]), str(m["agreed"]), f"{m['agreement']:.3f}", f"[{lo:.3f}, {hi:.3f}]")
    lo, hi = rep.ci95
    t.add_row("all", str(rep.compared), str(rep.agreed), f"{rep.agreement or 0:.3f}", f"[{lo:.3f}, {hi:.3f}]")
    out.print(t)
    out.print(rep.verdict, markup=False)


def drift(
    source: Path = typer.Argument(..., help="An audit log or a capture pool (SQLite) of served traffic."),
    model: Path = typer.Option(..., "--model", help=o.MODEL.help + " The traffic was served by it."),
    window: int = typer.Option(1000, "--window", min=10, help="Compare the last this many messages."),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Drift of served traffic against the model's training reference (PSI of confidence and label mix)."""
    from offramp.monitoring.drift import drift_report

    rep = drift_report(source, model, window)
    if as_json:
        emit(rep.to_dict())
        return
    t = Table(title=f"drift over the last {rep.messages} messages of {rep.kind} {source}")
    t.add_column("signal")
    t.add_column("value", justify="right")
    t.add_column("", justify="left")
    for k, v in rep.psi.items():
        t.add_row(f"PSI {k}", f"{v:.3f}", "DRIFT" if v > rep.threshold else "ok")
    for k, v in rep.rate_change.items():
        t.add_row(f"{k} rate change", f"{v:+.3f}", "")
    out.print(t)
    out.print(
        f"drift in {', '.join(rep.drifted)} (PSI above {rep.threshold})"
        if rep.drifted
        else f"no drift (every PSI at or below {rep.threshold})",
        markup=False,
    )
