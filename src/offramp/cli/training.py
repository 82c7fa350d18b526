"""``train`` and ``check-labels``: a model from labelled data, and the labels that look wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from offramp.cli import options as o
from offramp.cli.render import candidates_table, choice_line, emit, info, out, say, status, warn


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command("check-labels")(check_labels_cmd)


def _shares(languages: dict[str, Any]) -> str:
    items = sorted(languages["shares"].items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:.0%}" for k, v in items if v >= 0.01) or "none detected"


def train(
    data: Path = typer.Argument(..., help="Training file: CSV, TSV, JSONL or Parquet with a text and a label column."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory to write the model to."),
    registry: Optional[Path] = typer.Option(
        None,
        "--registry",
        help="Add the model to this registry as its next version instead (created if missing; "
        "the first version becomes current).",
    ),
    promote: bool = typer.Option(False, "--promote", help="With --registry: make the new version current."),
    gate: Optional[Path] = typer.Option(
        None,
        "--gate",
        help=o.GATE + " With --registry, at its first version: frozen in the registry (default: a stratified "
        "20%% of DATA, held out of training).",
    ),
    text_col: str = o.TEXT_COL,
    label_col: str = o.LABEL_COL,
    time_limit: Optional[str] = o.TIME_LIMIT,
    seed: int = o.SEED,
    quality: str = o.QUALITY,
    encoder_name: str = typer.Option(
        "auto",
        "--encoder",
        help="The accurate tier's sentence encoder: auto (chosen by the data's languages), minilm (English), "
        "use-multilingual (16 languages incl. Chinese) or mpnet (English, large); 'offramp encoders' lists them.",
    ),
    latency_budget_ms: Optional[float] = typer.Option(
        None, "--latency-budget-ms", help="Only candidates whose single-message p99 fits this budget can win."
    ),
    max_quality_loss: Optional[float] = typer.Option(
        None,
        "--max-quality-loss",
        help="The cheapest candidate within this much cross-validated macro-F1 of the best wins "
        "(default with --quality auto: within one standard error).",
    ),
    reject_target: Optional[str] = typer.Option(
        None,
        "--reject-target",
        help='Fit a "don\'t know" threshold to this target: in_scope_precision>=0.98 or oos_recall>=0.8.',
    ),
    reject_confidence: Optional[float] = typer.Option(
        None,
        "--reject-confidence",
        help="The reject target must hold for the held-out figure's lower confidence bound at this level "
        "(Wilson; default 0.95, or the level written in the target); 0 fits to the held-out figure itself.",
    ),
    oos_label: Optional[str] = typer.Option(
        None,
        "--oos-label",
        help="The label of out-of-scope examples (trained as a class; also the answer when rejecting).",
    ),
    val: Optional[Path] = typer.Option(
        None, "--val", help="Held-out labelled file to fit the threshold on (default: out-of-fold predictions)."
    ),
    refit_with_val: bool = typer.Option(
        False,
        "--refit-with-val",
        help="Once the threshold is fitted on --val, refit the winner with the --val rows added "
        "(keeping its calibration and threshold).",
    ),
    search_rows: Optional[int] = typer.Option(
        None,
        "--search-rows",
        min=1000,
        help="Cross-validate on a stratified sample of at most N rows; with more, the fast tier's winner is "
        "refitted on every row in bounded memory (default: all up to 300,000, else 100,000).",
    ),
    max_memory: Optional[float] = typer.Option(
        None,
        "--max-memory",
        help="Memory budget in GB: data that would need more is refused before reading (default: 80%% of "
        "this machine's memory).",
    ),
    multi_label: bool = o.MULTI_LABEL,
    label_sep: str = o.LABEL_SEP,
    label_precision: Optional[float] = typer.Option(
        None,
        "--label-precision",
        help="With --multi-label: fit each label's threshold to reach this precision (default: best F1).",
    ),
    drop_suspects: bool = typer.Option(
        False,
        "--drop-suspects",
        help="Leave out the rows 'offramp check-labels' ranks as mislabelled (a fast-tier check first, same seed).",
    ),
    hierarchy: Optional[str] = typer.Option(
        None,
        "--hierarchy",
        help='Labels are written parent SEP child (e.g. "/" for support/card_arrival): train a router and one '
        "model per parent, each in its own registry, and the chain's pipeline file, all under --out DIR.",
    ),
    parent_col: Optional[str] = typer.Option(
        None,
        "--parent-col",
        help="As --hierarchy, with each row's parent in this column and its child in --label-col "
        '(the full label joins them with --hierarchy, default "/").',
    ),
    max_chars: int = o.MAX_CHARS,
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Train a classifier: choose among candidates by cross-validated macro-F1, calibrate, save."""
    from offramp.errors import UsageError
    from offramp.modeldir.store import check_output_dir, read_metrics
    from offramp.training.train import train as train_model

    if hierarchy is not None or parent_col is not None:
        others = {
            "--registry": registry is not None,
            "--gate": gate is not None,
            "--multi-label": multi_label,
            "--reject-target": reject_target is not None,
            "--val": val is not None,
            "--drop-suspects": drop_suspects,
            "--promote": promote,
        }
        given = [k for k, v in others.items() if v]
        if given:
            raise UsageError(
                f"{given[0]} does not go with --hierarchy / --parent-col",
                "a chain's stages each get a registry under --out DIR",
            )
        if out_dir is None:
            raise UsageError("--hierarchy needs --out DIR", "the chain's registries and pipeline file go there")
        _train_hierarchy(
            data, out_dir, hierarchy or "/", parent_col, text_col, label_col, max_chars, quality, time_limit, seed,
            as_json, quiet,
        )  # fmt: skip
        return
    if (out_dir is None) == (registry is None):
        raise UsageError("give exactly one of --out DIR or --registry DIR")
    if out_dir is not None:
        check_output_dir(out_dir)  # a bad --out is refused now, not after the search
    with status("training", quiet) as progress:
        model, rep = train_model(
            data,
            text_col=text_col,
            label_col=label_col,
            max_chars=max_chars,
            max_memory=max_memory,
            quality=quality,
            time_limit=time_limit or "auto",
            seed=seed,
            val=val,
            oos_label=oos_label,
            reject_target=reject_target,
            reject_confidence=reject_confidence,
            refit_with_val=refit_with_val,
            latency_budget_ms=latency_budget_ms,
            max_quality_loss=max_quality_loss,
            search_rows=search_rows,
            encoder_name=encoder_name,
            multi_label=multi_label,
            label_sep=label_sep,
            label_precision=label_precision,
            drop_suspects=drop_suspects,
            registry=registry,
            gate=gate,
            promote=True if promote else None,
            on_progress=progress,
        )
        if rep.registry is not None:
            written = Path(rep.registry.path) / rep.registry.version
        else:
            assert out_dir is not None
            progress(f"writing {out_dir}")
            model.save(out_dir)
            written = out_dir
    warn(rep.warnings)
    size = read_metrics(written).get("model_bytes", 0)
    if as_json:
        emit({"model_dir": str(written), **rep.to_dict(), "model_bytes": size})
        return
    if rep.dropped_suspects is not None:
        info(
            f"left out {len(rep.dropped_suspects)} rows that look mislabelled "
            f"(see them with: offramp check-labels {data}" + (" --multi-label)" if multi_label else ")"),
            quiet,
        )
    if rep.multi_label:
        _print_multilabel(rep, written, size)
    else:
        _print_single(rep, written, size, quiet)
    if rep.registry is not None:
        r = rep.registry
        state = "current" if r.promoted else f"not promoted; current is {r.current}"
        out.print(f"{r.version} added to registry {r.path} ({state})", markup=False)


def _train_hierarchy(
    data: Path,
    out_dir: Path,
    sep: str,
    parent_col: Optional[str],
    text_col: str,
    label_col: str,
    max_chars: int,
    quality: str,
    time_limit: Optional[str],
    seed: int,
    as_json: bool,
    quiet: bool,
) -> None:
    from offramp.chain.hierarchy import train_hierarchy

    with status("training the chain", quiet) as progress:
        rep = train_hierarchy(
            data,
            out_dir,
            sep=sep,
            parent_col=parent_col,
            text_col=text_col,
            label_col=label_col,
            max_chars=max_chars,
            quality=quality,
            time_limit=time_limit or "auto",
            seed=seed,
            on_progress=progress,
        )
    warn(rep.warnings)
    if as_json:
        emit(rep.to_dict())
        return
    from rich.table import Table

    t = Table(title=f"chain: {len(rep.parents)} parents, {sum(len(c) for c in rep.parents.values())} full labels")
    for col in ("stage", "decides", "labels", "rows", "chosen", "CV macro-F1", "registry", "version"):
        t.add_column(col)
    for s in rep.stages + ([rep.flat] if rep.flat else []):
        decides = "parent" if s.stage == "router" else ("full label" if s.stage == "flat" else f"{s.parent}{sep}…")
        t.add_row(
            s.stage, decides, str(len(s.labels)), f"{s.rows:,}", s.winner, f"{s.cv_macro_f1:.4f}", s.registry, s.version
        )
    out.print(t)
    out.print(
        f"pipeline written to {rep.pipeline} in {rep.seconds:.1f} s ({rep.rows:,} training rows; {rep.gate_rows:,} "
        f"held out as the gate sets); the flat model beside it is for comparison; measure both with: "
        f"offramp eval {rep.pipeline} TEST_FILE",
        markup=False,
    )


def _print_single(rep: Any, written: Path, size: int, quiet: bool) -> None:
    from dataclasses import asdict

    from offramp.modeldir.card import fitted_bound, score_name

    if not quiet:
        out.print(candidates_table(rep))
    out.print(choice_line(rep), markup=False)
    if rep.encoder:
        e = rep.encoder
        langs = e.languages.as_dict()
        out.print(
            f"languages: {_shares(langs)} (of {langs['sample']} sampled messages); "
            f"encoder: {e.name} ({e.reason})" + ("" if e.used else "; the chosen model does not use it"),
            markup=False,
        )
    if rep.refit:
        r = rep.refit
        which = "the refit" if r.kept == "refit" else "the sample's model (the refit scored lower)"
        out.print(
            f"{rep.n_train:,} rows: the search cross-validated a sample of {rep.search_rows:,}; the winner was "
            f"refitted on {r.rows:,} rows in {r.epochs} passes ({r.seconds:.0f} s); on {r.holdout_rows:,} "
            f"held-out rows macro-F1 {r.holdout_macro_f1_sample:.4f} (sample) vs {r.holdout_macro_f1_refit:.4f} "
            f"(refit): kept {which}"
        )
    out.print(
        f"model written to {written} ({size / 1e6:.2f} MB) in {rep.train_seconds:.1f} s; "
        f"CV macro-F1 {rep.cv_macro_f1:.4f}; calibration error {rep.ece_uncalibrated:.3f} → {rep.ece_calibrated:.3f}",
        markup=False,
    )
    rej = rep.rejection
    if rej:
        h = asdict(rej.held_out)
        stored = rej.to_dict()
        bound = fitted_bound(stored)
        oos = "—" if h["oos_recall"] is None else f"{h['oos_recall']:.3f}"
        out.print(
            f"don't know: {score_name(stored)} < {rej.threshold:.4f} → {rej.label} (target {rej.target}, "
            f"{'met' if rej.met else 'NOT met'} on {rej.source}"
            f"{'' if bound is None else f', lower bound {bound:.3f}'}: in-scope precision "
            f"{h['in_scope_precision']:.3f}, in-scope accuracy {h['in_scope_accuracy']:.3f}, oos recall {oos}, "
            f"answered {h['coverage']:.1%})",
            markup=False,
        )
        if rej.refit_with_val:
            out.print(f"then refitted with {rej.refit_with_val:,} --val rows added (the figures above are from before)")


def _print_multilabel(rep: Any, written: Path, size: int) -> None:
    cv = rep.cv
    out.print(
        f"chose {rep.winner} (one scorer per label) by cross-validated micro-F1 {cv['micro_f1']:.4f} "
        f"(macro-F1 {cv['macro_f1']:.4f}, samples-F1 {cv['samples_f1']:.4f}, subset accuracy "
        f"{cv['subset_accuracy']:.4f}) over {len(rep.candidates)} candidates",
        markup=False,
    )
    thr = ", ".join(f"{k} {v:.2f}" for k, v in rep.thresholds.items())
    out.print(f"per-label thresholds: {thr}", markup=False)
    out.print(
        f"model written to {written} ({size / 1e6:.2f} MB) in {rep.train_seconds:.1f} s; "
        f"{rep.n_train} messages, {rep.empty_rows} with no label",
        markup=False,
    )


def check_labels_cmd(
    data: Path = typer.Argument(..., help="Labelled file (CSV, TSV, JSONL, Parquet) to check."),
    out_file: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write the suspects here (.csv, .tsv or .jsonl): row,text,given,suggested,score."
    ),
    text_col: str = o.TEXT_COL,
    label_col: str = o.LABEL_COL,
    quality: str = o.QUALITY,
    seed: int = o.SEED,
    near: float = typer.Option(
        0.9,
        "--near",
        min=0.5,
        max=1.0,
        help="Similarity (character n-gram cosine) from which two texts count as near duplicates; 1 = exact only.",
    ),
    show: Optional[int] = typer.Option(
        None, "--show", min=0, help="Suspects to print (default 20; all go to --out and --json)."
    ),
    top: Optional[int] = o.hidden("--top", min=0),
    multi_label: bool = o.MULTI_LABEL,
    label_sep: str = o.LABEL_SEP,
    max_chars: int = o.MAX_CHARS,
    raw_csv: bool = o.RAW_CSV,
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Find rows whose given label is likely wrong (confident learning on out-of-fold probabilities),
    most suspicious first, and texts that appear with different labels. With --multi-label, each
    label of each row is checked (given but confidently absent, or missing but confidently present)."""
    from offramp.data.io import write_records
    from offramp.errors import UsageError
    from offramp.training.noise import check_labels

    show = o.pick(show, top, "check-labels --top", "--show")
    if out_file is not None and out_file.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
        raise UsageError(f"--out {out_file} must end in .csv, .tsv or .jsonl")
    if quality == "auto":  # checking labels: the fast tier's out-of-fold probabilities
        quality = "fast"
    with status("checking labels", quiet) as progress:
        res = check_labels(
            data,
            text_col=text_col,
            label_col=label_col,
            max_chars=max_chars,
            multi_label=multi_label,
            label_sep=label_sep,
            quality=quality,
            seed=seed,
            near=None if near >= 1.0 else near,
            on_progress=progress,
        )
    warn(res.notes)
    if out_file is not None:
        cols = ("row", "text", "given", "suggested", "score")
        write_records(out_file, [{c: getattr(s, c) for c in cols} for s in res.suspects], spreadsheet_safe=not raw_csv)
    if as_json:
        emit(res.to_dict())
        return
    info(f"read {res.rows} labelled texts from {data}", quiet)
    share = len(res.suspects) / max(1, res.rows)
    out.print(
        f"{len(res.suspects)} of {res.rows} rows ({share:.1%}) look mislabelled (out-of-fold probabilities of "
        f"{res.model}, {res.folds} folds); {len(res.duplicates)} texts or pairs carry different labels; "
        f"{res.seconds:.1f} s",
        markup=False,
    )
    limit = 20 if show is None else show
    for s in res.suspects[:limit]:
        text = s.text if len(s.text) <= 80 else s.text[:77] + "..."
        out.print(f"  row {s.row}: {s.given} → {s.suggested} (score {s.score:.3f}) {text!r}", markup=False)
    for d in res.duplicates[: min(limit, 10)]:
        pairs = ", ".join(f"row {r}: {lab}" for r, lab in zip(d.rows, d.labels))
        out.print(f"  {d.kind} duplicate ({d.similarity:.2f}): {pairs} {d.texts[0][:60]!r}", markup=False)
    if out_file is not None:
        say(
            f"suspects written to {out_file}; train without them: offramp train {data} --drop-suspects"
            + (" --multi-label" if multi_label else "")
            + " ...",
            as_json,
        )
