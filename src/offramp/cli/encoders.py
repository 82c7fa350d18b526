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

    rows = [info.as_dict() for info in ENCODERS.values()]
    if as_json:
        emit({"encoders": rows})
        return
    table = Table("encoder", "model", "dim", "languages", "MB", "installed", "package")
    for r in rows:
        langs = "en" if r["languages"] == ["en"] else f"{len(r['languages'])}: " + " ".join(r["languages"])
        table.add_row(
            r["name"],
            r["title"],
            str(r["dim"]),
            langs,
            f"{r['size_mb']:.0f}",
            "yes" if r["installed"] else "no",
            r["package"],
        )
    out.print(table)
    for i in ENCODERS.values():
        if not i.installed():
            out.print(f"to install {i.name}: {i.install}", markup=False)
