"""``encoders``: the sentence encoders the accurate tier can use."""

from __future__ import annotations

import typer
from rich.table import Table

from offramp.cli import options as o
from offramp.cli.render import emit, out


def register(app: typer.Typer) -> None:
    app.command()(encoders)


def encoders(as_json: bool = o.JSON, quiet: bool = o.QUIET) -> None:
    """List the sentence encoders the accurate tier can use: languages, size, speed, installed or not."""
    from offramp.encoders.sentence import ENCODERS

    if as_json:
        emit({"encoders": [info.as_dict() for info in ENCODERS.values()]})
        return
    table = Table("encoder", "model", "dim", "languages", "MB", "installed", "package")
    for e in ENCODERS.values():
        langs = "en" if e.languages == ("en",) else f"{len(e.languages)}: " + " ".join(e.languages)
        table.add_row(
            e.name, e.title, str(e.dim), langs, f"{e.size_mb:.0f}", "yes" if e.installed() else "no", e.package
        )
    out.print(table)
    for i in ENCODERS.values():
        if not i.installed():
            out.print(f"to install {i.name}: {i.install}", markup=False)
