"""``export``: a model in a format other runtimes read (ONNX: token ids to calibrated probabilities)."""

from __future__ import annotations

from pathlib import Path

import typer

from offramp.cli import options as o
from offramp.cli.render import emit, out, say, status


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    model_dir: Path = typer.Argument(..., help="Model directory written by 'offramp train' (or a registry)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory to write (must not exist)."),
    fmt: str = typer.Option("onnx", "--format", help="The format: onnx."),
    int8: bool = typer.Option(False, "--int8", help="Store the embedding table as int8 (a quarter of the size)."),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Write a model as one ONNX graph from token ids to calibrated probabilities, with its
    tokenizer and labels: runnable by onnxruntime in another language, on a phone or in a browser."""
    from offramp.export import export_model
    from offramp.registry.records import load

    if out_dir.exists():
        from offramp.errors import UsageError

        raise UsageError(f"{out_dir} already exists", "choose a new --out directory or remove it", param="out")
    with status("exporting", quiet):
        res = export_model(load(model_dir), out_dir, fmt, int8=int8)
    if as_json:
        emit(res.to_dict())
        return
    say(f"wrote {res.path}: model.onnx, tokenizer.json, labels.json ({res.size_bytes / 1e6:.1f} MB)", quiet)
    out.print(f"{res.family} -> {res.format}{' (int8)' if res.int8 else ''}: {len(res.labels)} labels", markup=False)
