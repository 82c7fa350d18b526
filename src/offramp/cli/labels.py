"""``check-labels``: rows whose label is probably wrong, and texts labelled two ways."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from offramp.cli.common import LABEL_COL, MAX_CHARS, QUIET, RAW_CSV, TEXT_COL, info, out, status, warn
from offramp.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("check-labels")(check_labels_cmd)


def run_check(
    ds: Any, *, quality: str, seed: int, near: float | None, quiet: bool, label_sets: Any = None, label_sep: str = "|"
) -> Any:
    """Confident learning on ``ds`` (a labelled Dataset, or its texts with ``label_sets``); suspect
    and duplicate rows are given as the file's 0-based data rows."""
    from offramp.training.noise import check_label_sets, check_labels

    with status("checking labels", quiet) as say:
        if label_sets is not None:
            res = check_label_sets(ds.texts, label_sets, label_sep=label_sep, seed=seed, near=near, on_progress=say)
        else:
            assert ds.labels is not None
            res = check_labels(ds.texts, ds.labels, quality=quality, seed=seed, near=near, on_progress=say)
    rows = ds.data_rows()
    for s in res.suspects:
        s.row = int(rows[s.row])
    for d in res.duplicates:
        d.rows = [int(rows[r]) for r in d.rows]
    return res


def check_labels_cmd(
    data: Path = typer.Argument(..., help="Labelled file (CSV, TSV, JSONL, Parquet) to check."),
    out_file: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write the suspects here (.csv, .tsv or .jsonl): row,text,given,suggested,score."
    ),
    text_col: str = TEXT_COL,
    label_col: str = LABEL_COL,
    quality: str = typer.Option(
        "fast", "--quality", help="The model search whose out-of-fold probabilities are used (fast, balanced, best)."
    ),
    seed: int = typer.Option(0, "--seed", help="Fixes the folds: the same data and seed give the same list."),
    near: float = typer.Option(
        0.9,
        "--near",
        min=0.5,
        max=1.0,
        help="Similarity (character n-gram cosine) from which two texts count as near duplicates; 1 = exact only.",
    ),
    top: int = typer.Option(20, "--top", min=0, help="Suspects to print (all go to --out and --json)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout: suspects and duplicates."),
    multi_label: bool = typer.Option(
        False,
        "--multi-label",
        help="Several labels per message (joined by --label-sep): each label's decision is checked; "
        "given and suggested are label sets.",
    ),
    label_sep: str = typer.Option("|", "--label-sep", help="With --multi-label: what joins the labels in a cell."),
    max_chars: int = MAX_CHARS,
    raw_csv: bool = RAW_CSV,
    quiet: bool = QUIET,
) -> None:
    """Find rows whose given label is likely wrong (confident learning on out-of-fold probabilities),
    most suspicious first, and texts that appear with different labels. With --multi-label, each
    label of each row is checked (given but confidently absent, or missing but confidently present)."""
    from offramp.data.io import read_dataset, write_records

    if out_file is not None and out_file.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
        raise UsageError(f"--out {out_file} must end in .csv, .tsv or .jsonl")
    sets = None
    if multi_label:
        from offramp.cli.models import read_label_sets

        if quality != "fast":
            raise UsageError("check-labels --multi-label uses the fast tier", "leave out --quality")
        ds, sets, notes = read_label_sets(data, text_col, label_col, label_sep, max_chars)
        warn(ds.warnings + notes)
    else:
        ds = read_dataset(data, text_col=text_col, label_col=label_col, max_chars=max_chars)
        warn(ds.warnings)
    info(f"read {len(ds)} labelled texts from {data}", quiet)
    res = run_check(
        ds,
        quality=quality,
        seed=seed,
        near=None if near >= 1.0 else near,
        quiet=quiet,
        label_sets=sets,
        label_sep=label_sep,
    )
    warn(res.notes)
    if out_file is not None:
        cols = ("row", "text", "given", "suggested", "score")
        write_records(out_file, [{c: getattr(s, c) for c in cols} for s in res.suspects], raw=raw_csv)
    if as_json:
        print(json.dumps(res.to_dict(), ensure_ascii=False))
        return
    share = len(res.suspects) / max(1, res.rows)
    out.print(
        f"{len(res.suspects)} of {res.rows} rows ({share:.1%}) look mislabelled (out-of-fold probabilities of "
        f"{res.model}, {res.folds} folds); {len(res.duplicates)} texts or pairs carry different labels; "
        f"{res.seconds:.1f} s"
    )
    for s in res.suspects[:top]:
        text = s.text if len(s.text) <= 80 else s.text[:77] + "..."
        out.print(f"  row {s.row}: {s.given} → {s.suggested} (score {s.score:.3f}) {text!r}", markup=False)
    for d in res.duplicates[: min(top, 10)]:
        pairs = ", ".join(f"row {r}: {lab}" for r, lab in zip(d.rows, d.labels))
        out.print(f"  {d.kind} duplicate ({d.similarity:.2f}): {pairs} {d.texts[0][:60]!r}", markup=False)
    if out_file is not None:
        out.print(
            f"suspects written to {out_file}; train without them: offramp train {data} --drop-suspects"
            + (" --multi-label" if multi_label else "")
            + " ..."
        )
