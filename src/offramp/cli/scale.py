"""``predict``: labels for texts, a file, or any number of rows streamed through every core or a Ray cluster."""

from __future__ import annotations

import glob
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from offramp.cli import options as o
from offramp.cli.render import emit, err, info, warn


def register(app: typer.Typer) -> None:
    app.command()(predict)


DATA_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq")


def _is_source(arg: str) -> bool:
    """Whether the one positional argument names data (an existing file or directory, a glob, a
    data file's name, or - for stdin) rather than being a text to classify."""
    if arg == "-":
        return True
    if "\n" in arg or len(arg) > 4096:
        return False
    try:
        if Path(arg).exists():
            return True
    except OSError:
        return False
    if arg.lower().endswith(DATA_SUFFIXES) and " " not in arg:
        return True  # a data file that is not there: said so, not classified as a text
    return any(c in arg for c in "*?[") and (bool(glob.glob(arg)) or "/" in arg)


def predict(
    model_dir: Path = typer.Argument(..., help="Model directory written by 'offramp train' (or a registry)."),
    inputs: Optional[List[str]] = typer.Argument(
        None,
        help="What to classify: a file (CSV, TSV, JSONL, Parquet), a directory of Parquet/JSONL shards, a glob "
        "of them, or - for lines on stdin; or the texts themselves. Default: lines on stdin.",
    ),
    out_path: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Where to write: .jsonl, .csv or .tsv (records in the input's order), .parquet, or a directory "
        "(one Parquet part per input shard). Default: JSON lines on stdout. With a file input, the rows are "
        "streamed in batches on every core, in bounded memory, and the output appears under its name only "
        "once complete.",
    ),
    input_file: Optional[str] = o.hidden("--input", "-i"),
    output: Optional[Path] = o.hidden("--output"),
    text_col: str = o.TEXT_COL,
    top: int = typer.Option(3, "--top", min=1, help="How many labels (with their probabilities) to include per text."),
    workers: Optional[int] = o.WORKERS,
    keep_columns: Optional[str] = typer.Option(
        None, "--keep-columns", help="Comma-separated input columns copied to the output (e.g. an id)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue a killed run into the same directory output, keeping the parts it finished."
    ),
    batch_size: int = typer.Option(8192, "--batch-size", min=1, help="Rows read and predicted at a time."),
    engine: str = o.ENGINE,
    address: Optional[str] = o.ADDRESS,
    max_chars: int = o.MAX_CHARS,
    spreadsheet_safe: bool = o.SPREADSHEET_SAFE,
    raw_csv: bool = o.hidden("--raw-csv", default=False),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Classify texts; one record each with label, confidence and the top labels.

    With a data file and --out the input is streamed in batches on every core (or a Ray cluster),
    in bounded memory. --json prints a summary object instead of the records (with --out only).
    """
    from offramp.data.io import read_dataset

    o.cells_as_they_are(raw_csv)
    from offramp.data.text import clean_text
    from offramp.errors import UsageError
    from offramp.estimators.predict import prediction_records
    from offramp.registry.records import load

    args = list(inputs or [])
    source: str | None = None
    if input_file is not None:
        o.deprecated("predict --input", "the positional INPUT")
        if args:
            raise UsageError("give texts as arguments or an input file, not both")
        source = input_file
    elif len(args) == 1 and _is_source(args[0]) and args[0] != "-":
        source = args[0]
    texts = [] if source is not None or args == ["-"] else args
    out_path = o.pick(out_path, output, "predict --output", "--out")
    if as_json and out_path is None:
        raise UsageError("--json prints a summary of what was written: give --out too", "or leave out --json")
    if source is not None and out_path is not None:
        _predict_stream(
            model_dir, source, out_path, text_col, top, workers, keep_columns, resume, batch_size, max_chars,
            spreadsheet_safe, quiet, engine, address, as_json,
        )  # fmt: skip
        return
    if out_path is not None and out_path.suffix.lower() not in (".jsonl", ".csv", ".tsv"):
        raise UsageError(f"--out {out_path} must end in .jsonl, .csv or .tsv (or give a file input to stream)")
    if workers or keep_columns or resume or engine != "local" or address:
        raise UsageError("--workers, --keep-columns, --resume, --engine and --address go with a file input and --out")
    model = load(model_dir)
    warnings: list[str] = []
    if source is not None:
        ds = read_dataset(source, text_col=text_col, label_col=None, need_labels=False, max_chars=max_chars)
        items, warnings = ds.texts, ds.warnings
    elif texts:
        items = list(texts)
    elif args == ["-"] or not sys.stdin.isatty():
        # one text a line: the line ending (\n or \r\n) is not part of it
        items = [line.removesuffix("\n").removesuffix("\r") for line in sys.stdin if line.strip()]
    else:
        raise UsageError("nothing to classify", "pass texts as arguments, a file, or lines on stdin")
    if not items:
        raise UsageError("nothing to classify: the input has no non-empty text")
    items = [clean_text(t) for t in items]
    cut = sum(1 for t in items if len(t) > max_chars)
    if cut and source is None:
        items = [t[:max_chars] for t in items]
        warnings.append(f"{cut} texts longer than {max_chars} characters were cut to {max_chars}")
    warn(warnings)
    import json

    from offramp.data.io import RecordWriter

    sink = RecordWriter(out_path, "out", spreadsheet_safe) if out_path else None
    try:
        for rec in prediction_records(model, items, top):
            if sink is None:
                sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
            else:
                sink.write(rec)
    finally:
        if sink is not None:
            sink.close()
    if out_path:
        if as_json:
            emit({"out": str(out_path), "predicted": len(items)})
        else:
            info(f"wrote {len(items)} predictions to {out_path}", quiet)


def _predict_stream(
    model_dir: Path,
    input_spec: str,
    output: Path,
    text_col: str,
    top: int,
    workers: int | None,
    keep_columns: str | None,
    resume: bool,
    batch_size: int,
    max_chars: int,
    spreadsheet_safe: bool,
    quiet: bool,
    engine: str,
    address: str | None,
    as_json: bool,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from offramp.scale.stream import predict_files

    keep = [c.strip() for c in keep_columns.split(",") if c.strip()] if keep_columns else []
    progress = None
    if not quiet and err.is_terminal:
        progress = Progress(
            TextColumn("predicting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
        )
    t0 = time.perf_counter()
    task = None

    def on_progress(done: int, total: int | None) -> None:
        if progress is None:
            return
        nonlocal task
        if task is None:
            task = progress.add_task("predict", total=total, rate="")
        rate = done / max(time.perf_counter() - t0, 1e-9)
        progress.update(task, completed=done, rate=f"{rate:,.0f} rows/s")

    if progress is not None:
        progress.start()
    try:
        rep = predict_files(
            model_dir,
            input_spec,
            output,
            text_col=text_col,
            keep=keep,
            workers=workers,
            batch_size=batch_size,
            top=top,
            max_chars=max_chars,
            resume=resume,
            spreadsheet_safe=spreadsheet_safe,
            on_progress=on_progress,
            engine=engine,
            address=address,
        )
    finally:
        if progress is not None:
            progress.stop()
    warn(rep.warnings())
    if as_json:
        emit(rep.to_dict())
        return
    resumed = f", {rep.shards_resumed} resumed" if rep.shards_resumed else ""
    info(
        f"wrote {rep.predicted:,} predictions to {output} from {rep.rows_read:,} rows in {rep.shards} shard(s)"
        f"{resumed} in {rep.seconds:.1f} s ({rep.rows_per_s:,.0f} rows/s)",
        quiet,
    )
    if rep.rows_by_node:
        nodes = ", ".join(f"{node[:8]} {rows:,}" for node, rows in sorted(rep.rows_by_node.items()))
        info(f"rows predicted per Ray node: {nodes}", quiet)
