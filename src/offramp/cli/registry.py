"""``registry list|promote|rollback|retrain``: versions of a model, and retraining behind a regression gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from offramp.cli import options as o
from offramp.cli.render import emit, fmt, out, say, status, warn

registry_app = typer.Typer(
    help="Versions of a model: list them, promote one, roll back, retrain behind the regression gate.",
    no_args_is_help=True,
)

EXIT_REFUSED = 4  # retrain: the gate refused the candidate (a decision, not an error)


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")
    # the spelling before retrain joined its group
    app.command("retrain", hidden=True)(retrain_alias)


@registry_app.command("list")
def list_cmd(
    registry: Path = typer.Argument(..., help="Registry directory."),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """List the versions: created, family, CV macro-F1, gate result, which one is current."""
    from offramp.registry.versions import Registry

    reg = Registry(registry)
    reg_versions = reg.versions()
    rows = [
        {
            "version": v["version"],
            "created": v.get("created"),
            "family": v.get("family"),
            "cv_macro_f1": v.get("cv_macro_f1"),
            "gate": v.get("gate"),
            "current": v["current"],
        }
        for v in reg_versions
    ]
    if as_json:
        emit({"current": reg.current, "versions": rows})
        return
    t = Table(title=f"registry {registry}")
    for c in ("version", "created", "family", "CV macro-F1", "gate", "current"):
        t.add_column(c, justify="right" if c == "CV macro-F1" else "left")
    for v in reg_versions:
        g = v.get("gate")
        gate = "—" if not g else f"{g.get('decision')} vs {g.get('against')}"
        t.add_row(
            v["version"],
            str(v.get("created")),
            str(v.get("family")),
            fmt(v.get("cv_macro_f1")),
            gate,
            "✓" if v["current"] else "",
        )
    out.print(t)


@registry_app.command("promote")
def promote_cmd(
    registry: Path = typer.Argument(..., help="Registry directory."),
    version: str = typer.Argument(..., help="The version to make current, e.g. v0003."),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Make a version current (a server on the registry picks it up within seconds)."""
    from offramp.registry.versions import Registry

    before = Registry(registry).promote(version)
    if as_json:
        emit({"registry": str(registry), "current": version, "was": before})
        return
    say(
        f"{version} is now current in {registry}" + (f" (was {before})" if before and before != version else ""),
        as_json,
    )


@registry_app.command("rollback")
def rollback_cmd(
    registry: Path = typer.Argument(..., help="Registry directory."),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Go back to the version that was current before the current one."""
    from offramp.registry.versions import Registry

    reg = Registry(registry)
    left = reg.current
    back = reg.rollback()
    if as_json:
        emit({"registry": str(registry), "current": back, "was": left})
        return
    say(f"rolled back {registry}: {back} is current again (was {left})", as_json)


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
            fmt(fig["current"]),
            fmt(fig["candidate"]),
            f"{fig['candidate'] - fig['current']:+.4f} [{lo:+.4f}, {hi:+.4f}]",
        )
    for lab, c in g["per_class"].items():
        note = " (new)" if c["new"] else ""
        lo_c, hi_c = c["ci95"]
        t.add_row(
            f"{lab}{note} F1",
            fmt(c["current"]),
            fmt(c["candidate"]),
            f"{c['candidate'] - c['current']:+.4f} [{lo_c:+.4f}, {hi_c:+.4f}]",
        )
    return t


@registry_app.command("retrain")
def retrain(
    registry: Path = typer.Argument(..., help="Registry directory (its current version is retrained)."),
    data: Optional[Path] = typer.Argument(
        None, help="The new labelled rows (e.g. from 'offramp pool export'), added to the current version's."
    ),
    add: Optional[Path] = o.hidden("--add"),
    gate: Optional[Path] = typer.Option(
        None, "--gate", help=o.GATE + " Here, for this run (default: the registry's frozen gate set)."
    ),
    max_class_drop: float = typer.Option(
        0.02, "--max-class-drop", min=0.0, max=1.0, help="Refuse if any label's F1 drops by more than this."
    ),
    chain: Optional[Path] = typer.Option(
        None,
        "--in-chain",
        help="REGISTRY is a stage of this chain (its pipeline file): the candidate must also pass the chain's "
        "end-to-end gate (the chain's full labels with the candidate in the stage's place).",
    ),
    chain_gate_file: Optional[Path] = typer.Option(
        None,
        "--chain-gate",
        help="With --in-chain: labelled file of full labels to judge the chain on (default: the frozen gate set of "
        "the flat model that 'train --hierarchy' writes beside the pipeline).",
    ),
    text_col: str = o.TEXT_COL,
    label_col: str = o.LABEL_COL,
    max_chars: int = o.MAX_CHARS,
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Train a candidate on the current version's data plus DATA, promote it only if the gate passes.

    Exit code 0: promoted; 4: refused by the gate, or passed while another version was made current
    meanwhile (JSON decision current_changed); either way the candidate stays in the registry, unpromoted.
    """
    from offramp.errors import UsageError
    from offramp.training.retrain import retrain as run_retrain

    if add is not None:
        o.deprecated("retrain --add FILE", "the positional DATA")
        if data is not None:
            raise UsageError("give the new rows once: as DATA or as --add, not both")
        data = add
    if data is None:
        raise UsageError("give the new labelled rows as DATA", "for example: offramp registry retrain reg/ new.csv")
    if chain_gate_file is not None and chain is None:
        raise UsageError("--chain-gate goes with --in-chain PIPELINE")
    also = None
    if chain is not None:
        from offramp.chain.gate import chain_gate

        also = chain_gate(chain, registry, chain_gate_file, max_class_drop=max_class_drop)
    with status("retraining", quiet) as progress:
        result = run_retrain(
            registry,
            data,
            gate=gate,
            max_class_drop=max_class_drop,
            text_col=text_col,
            label_col=label_col,
            max_chars=max_chars,
            on_progress=progress,
            also=also,
        )
    warn(result.warnings)
    if as_json:
        emit(result.to_dict())
    else:
        out.print(gate_table(result))
        second = result.gate.get("also")
        if second is not None:
            m = second["macro_f1"]
            out.print(
                f"end to end ({second['n']:,} messages of {second.get('source', 'the chain gate')}): macro-F1 "
                f"{m['candidate']:.4f} vs {m['current']:.4f} — {'passed' if second['passed'] else 'refused'}",
                markup=False,
            )
        if result.new_labels:
            out.print(f"new labels: {', '.join(result.new_labels)}", markup=False)
        if result.promoted:
            metric = result.gate.get("metric", "macro_f1")
            m = result.gate["micro_f1" if metric == "micro_f1" else "macro_f1"]
            out.print(
                f"promoted {result.candidate}: {metric.replace('_f1', '-F1')} {m['candidate']:.4f} vs "
                f"{m['current']:.4f} is not lower "
                f"and no label drops by more than {max_class_drop:g} ({result.seconds:.1f} s)",
                markup=False,
            )
        elif result.decision == "current_changed":
            out.print(f"kept {result.candidate} unpromoted: the gate passed, but current changed:", markup=False)
            for r in result.reasons:
                out.print(f"  - {r}", markup=False)
        else:
            out.print(f"refused {result.candidate} ({result.current} stays current):", markup=False)
            for r in result.reasons:
                out.print(f"  - {r}", markup=False)
    if not result.promoted:
        raise typer.Exit(EXIT_REFUSED)


def retrain_alias(
    registry: Path = typer.Argument(..., help="Registry directory (its current version is retrained)."),
    data: Optional[Path] = typer.Argument(None, help="The new labelled rows."),
    add: Optional[Path] = o.hidden("--add"),
    gate: Optional[Path] = typer.Option(None, "--gate", help="Labelled file to judge on."),
    max_class_drop: float = typer.Option(0.02, "--max-class-drop", min=0.0, max=1.0, help="Per-label F1 drop limit."),
    chain: Optional[Path] = typer.Option(None, "--in-chain", help="REGISTRY is a stage of this chain."),
    chain_gate_file: Optional[Path] = typer.Option(None, "--chain-gate", help="The chain's end-to-end gate file."),
    text_col: str = o.TEXT_COL,
    label_col: str = o.LABEL_COL,
    max_chars: int = o.MAX_CHARS,
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """The former spelling of 'offramp registry retrain'."""
    o.deprecated("offramp retrain REGISTRY --add FILE", "offramp registry retrain REGISTRY FILE")
    if add is not None and data is not None:
        from offramp.errors import UsageError

        raise UsageError("give the new rows once: as DATA or as --add, not both")
    retrain(
        registry, data or add, None, gate, max_class_drop, chain, chain_gate_file, text_col, label_col, max_chars,
        as_json, quiet,
    )  # fmt: skip
