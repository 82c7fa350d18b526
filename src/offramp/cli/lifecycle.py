"""``registry``, ``retrain``: versions of a model, and retraining behind a regression gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from offramp.cli.common import LABEL_COL, MAX_CHARS, QUIET, TEXT_COL, out, status, warn

registry_app = typer.Typer(help="Versions of a model: list them, promote one, roll back.", no_args_is_help=True)

EXIT_REFUSED = 4  # retrain: the gate refused the candidate (a decision, not an error)


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")
    app.command()(retrain)


def _fmt(v: Any, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


@registry_app.command("list")
def list_cmd(
    registry: Path = typer.Argument(..., help="Registry directory."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """List the versions: created, family, CV macro-F1, gate result, which one is current."""
    from offramp.registry.versions import Registry

    reg = Registry(registry)
    versions = reg.versions()
    rows = [
        {
            "version": v["version"],
            "created": v.get("created"),
            "family": v.get("family"),
            "cv_macro_f1": v.get("cv_macro_f1"),
            "gate": v.get("gate"),
            "current": v["current"],
        }
        for v in versions
    ]
    if as_json:
        print(json.dumps({"current": reg.current, "versions": rows}))
        return
    t = Table(title=f"registry {registry}")
    for c in ("version", "created", "family", "CV macro-F1", "gate", "current"):
        t.add_column(c, justify="right" if c == "CV macro-F1" else "left")
    for r in rows:
        g = r["gate"]
        gate = "—" if not g else f"{g['decision']} vs {g['against']}"
        t.add_row(
            r["version"], str(r["created"]), str(r["family"]), _fmt(r["cv_macro_f1"]), gate, "✓" if r["current"] else ""
        )
    out.print(t)


@registry_app.command("promote")
def promote_cmd(
    registry: Path = typer.Argument(..., help="Registry directory."),
    version: str = typer.Argument(..., help="The version to make current, e.g. v0003."),
) -> None:
    """Make a version current (a server on the registry picks it up within seconds)."""
    from offramp.registry.versions import Registry

    before = Registry(registry).promote(version)
    out.print(f"{version} is now current in {registry}" + (f" (was {before})" if before and before != version else ""))


@registry_app.command("rollback")
def rollback_cmd(registry: Path = typer.Argument(..., help="Registry directory.")) -> None:
    """Go back to the version that was current before the current one."""
    from offramp.registry.versions import Registry

    reg = Registry(registry)
    left = reg.current
    back = reg.rollback()
    out.print(f"rolled back {registry}: {back} is current again (was {left})")


def gate_table(result: Any) -> Table:
    g = result.gate
    m = g["macro_f1"]
    t = Table(title=f"gate: {result.candidate} vs {result.current} on {g['n']} messages")
    for c in ("", result.current, result.candidate, "difference"):
        t.add_column(c, justify="left" if not c else "right")
    overall = [("micro-F1", g["micro_f1"])] if "micro_f1" in g else []  # several labels: micro-F1 decides
    for name, fig in overall + [("macro-F1", m)]:
        lo, hi = fig["ci95"]
        t.add_row(
            name,
            _fmt(fig["current"]),
            _fmt(fig["candidate"]),
            f"{fig['candidate'] - fig['current']:+.4f} [{lo:+.4f}, {hi:+.4f}]",
        )
    for lab, c in g["per_class"].items():
        note = " (new)" if c["new"] else ""
        lo_c, hi_c = c["ci95"]
        t.add_row(
            f"{lab}{note} F1",
            _fmt(c["current"]),
            _fmt(c["candidate"]),
            f"{c['candidate'] - c['current']:+.4f} [{lo_c:+.4f}, {hi_c:+.4f}]",
        )
    return t


def _multi_label(reg: Any) -> bool:
    """Whether the registry's current version is a multi-label model (from its model.json)."""
    from offramp.modeldir.store import read_model_json

    current = reg.current
    if current is None:
        return False
    return bool((read_model_json(reg.version_dir(current)).get("info") or {}).get("multi_label"))


def retrain(
    registry: Path = typer.Argument(..., help="Registry directory (its current version is retrained)."),
    add: Path = typer.Option(..., "--add", help="New labelled rows (e.g. from 'offramp pool export')."),
    gate: Optional[Path] = typer.Option(
        None, "--gate", help="Labelled file to judge on (default: the registry's frozen gate set)."
    ),
    max_class_drop: float = typer.Option(
        0.02, "--max-class-drop", min=0.0, max=1.0, help="Refuse if any label's F1 drops by more than this."
    ),
    text_col: str = TEXT_COL,
    label_col: str = LABEL_COL,
    max_chars: int = MAX_CHARS,
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    quiet: bool = QUIET,
) -> None:
    """Train a candidate on the current version's data plus --add, promote it only if the gate passes.

    Exit code 0: promoted; 4: refused by the gate (the candidate stays in the registry, unpromoted).
    """
    from offramp.data.io import read_dataset
    from offramp.registry.versions import Registry
    from offramp.training.retrain import retrain as run_retrain

    reg = Registry(registry)
    # several labels per message: an empty label cell is the empty set, a row to keep
    sets = _multi_label(reg)
    added = read_dataset(add, text_col=text_col, label_col=label_col, max_chars=max_chars, need_labels=not sets)
    gate_ds = (
        read_dataset(gate, text_col=text_col, label_col=label_col, max_chars=max_chars, need_labels=not sets)
        if gate
        else None
    )
    with status("retraining", quiet) as say:
        result = run_retrain(reg, added, gate=gate_ds, max_class_drop=max_class_drop, on_progress=say)
    warn(result.warnings)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        out.print(gate_table(result))
        if result.new_labels:
            out.print(f"new labels: {', '.join(result.new_labels)}")
        if result.promoted:
            metric = result.gate.get("metric", "macro_f1")
            m = result.gate[metric]
            out.print(
                f"promoted {result.candidate}: {metric.replace('_f1', '-F1')} {m['candidate']:.4f} vs "
                f"{m['current']:.4f} is not lower "
                f"and no label drops by more than {max_class_drop:g} ({result.seconds:.1f} s)"
            )
        else:
            out.print(f"refused {result.candidate} ({result.current} stays current):")
            for r in result.reasons:
                out.print(f"  - {r}")
    if not result.promoted:
        raise typer.Exit(EXIT_REFUSED)
