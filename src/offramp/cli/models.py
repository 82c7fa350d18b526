"""``train``, ``eval``, ``predict`` and ``report``: a model from data, and what it is worth."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from offramp.cli.common import (
    LABEL_COL,
    MAX_CHARS,
    QUIET,
    RAW_CSV,
    TEXT_COL,
    info,
    out,
    positive,
    print_side_by_side,
    status,
    warn,
)
from offramp.errors import UsageError

TIME_LIMIT_HELP = (
    "Seconds the model search may take (the first candidate always runs; candidates that would not "
    "fit are skipped and listed); 'none' tries every candidate, so the same data and seed give the "
    "same model on any machine. Default 60 / 180 / 1800 for fast / balanced / best."
)


def parse_time_limit(value: str | None) -> str:
    """--time-limit as the library takes it ("auto" when not given), checked now rather than after
    the data is read."""
    from offramp.training.train import resolve_time_limit

    resolve_time_limit(value or "auto", "fast")
    return value or "auto"


def candidates_table(report: Any) -> Table:
    t = Table(title=f"candidates ({report.n_folds}-fold CV)")
    for c in ("candidate", "CV macro-F1", "p99 ms", "seconds", "status"):
        t.add_column(c, justify="left" if c in ("candidate", "status") else "right")
    for r in report.candidates:
        mark = " ✓" if r.name == report.winner else ""
        t.add_row(
            r.name + mark,
            "—" if r.cv_macro_f1 is None else f"{r.cv_macro_f1:.4f}",
            "—" if r.latency_p99_ms is None else f"{r.latency_p99_ms:.2f}",
            f"{r.seconds:.1f}",
            r.status,
        )
    return t


def choice_line(report: Any) -> str:
    """One line: which model won and why (and what the time limit left out)."""
    tier = (
        "accurate tier (sentence embeddings)"
        if report.winner.startswith(("stacked", "embed"))
        else "fast tier (TF-IDF)"
    )
    scored = [c for c in report.candidates if c.cv_macro_f1 is not None]
    others = sorted((c for c in scored if c.name != report.winner), key=lambda c: -(c.cv_macro_f1 or 0))
    why = f"highest cross-validated macro-F1 of {len(scored)} scored ({report.cv_macro_f1:.4f}"
    why += f" vs {others[0].cv_macro_f1:.4f} for {others[0].name})" if others else ")"
    line = f"chose {report.winner}, the {tier}: {why}"
    if report.skipped:
        line += f"; skipped for time: {', '.join(report.skipped)} (--time-limit none tries every candidate)"
    return line


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command("eval")(eval_cmd)
    app.command()(predict)
    app.command()(report)
    app.command()(encoders)


def encoders(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON.")) -> None:
    """List the sentence encoders the accurate tier can use: languages, size, speed, installed or not."""
    from offramp.encoders.sentence import ENCODERS

    rows = [info.as_dict() for info in ENCODERS.values()]
    if as_json:
        out.print_json(json.dumps(rows))
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
    missing = [i for i in ENCODERS.values() if not i.installed()]
    for i in missing:
        out.print(f"to install {i.name}: {i.install}")


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
        help="With --registry, at the first train: the labelled gate set retrains are judged on "
        "(default: a stratified 20%% of DATA, held out of training).",
    ),
    text_col: str = TEXT_COL,
    label_col: str = LABEL_COL,
    time_limit: Optional[str] = typer.Option(None, "--time-limit", help=TIME_LIMIT_HELP),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same data and seed give the same model."),
    quality: str = typer.Option(
        "auto",
        "--quality",
        help="fast (TF-IDF), balanced or best (add sentence embeddings); auto = balanced when the encoder is installed.",
    ),
    encoder_name: str = typer.Option(
        "auto",
        "--encoder",
        help="The accurate tier's sentence encoder: auto (chosen by the data's languages), minilm (English), "
        "use-multilingual (16 languages incl. Chinese) or mpnet (English, large); 'offramp encoders' lists them.",
    ),
    latency_budget_ms: Optional[float] = typer.Option(
        None, "--latency-budget-ms", help="Only candidates whose single-message p99 fits this budget can win."
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
    multi_label: bool = typer.Option(
        False,
        "--multi-label",
        help="A message may carry several labels (or none): the label column holds them joined by --label-sep "
        "(or a JSON list in JSONL/Parquet).",
    ),
    label_sep: str = typer.Option("|", "--label-sep", help="With --multi-label: what joins the labels in a cell."),
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
    max_chars: int = MAX_CHARS,
    as_json: bool = typer.Option(False, "--json", help="Print the training summary as JSON on stdout."),
    quiet: bool = QUIET,
) -> None:
    """Train a classifier: choose among candidates by cross-validated macro-F1, calibrate, save."""
    from offramp.data.io import read_dataset
    from offramp.encoders.sentence import encoder_info
    from offramp.estimators.rejection import RejectTarget
    from offramp.modeldir.card import score_name
    from offramp.modeldir.store import check_output_dir
    from offramp.training.train import train as train_model
    from offramp.training.train import val_rows_known

    limit = parse_time_limit(time_limit)
    if encoder_name != "auto":
        encoder_info(encoder_name)  # an unknown name is refused before reading the data
    target = RejectTarget.parse(reject_target, reject_confidence) if reject_target is not None else None
    if val is not None and target is None:
        raise UsageError(
            "--val is used to fit the rejection threshold; give --reject-target too",
            "for example --reject-target in_scope_precision>=0.98",
        )
    if refit_with_val and val is None:
        raise UsageError("--refit-with-val adds the --val rows to the training rows; give --val too")
    if (out_dir is None) == (registry is None):
        raise UsageError("give exactly one of --out DIR or --registry DIR")
    if registry is None and (promote or gate is not None):
        raise UsageError("--promote and --gate go with --registry DIR")
    reg = None
    if registry is not None:
        from offramp.registry.versions import Registry

        reg = Registry.create(registry)
        if gate is not None and reg.gate_set() is not None:
            raise UsageError(
                f"registry {registry} already has a frozen gate set",
                "leave --gate out, or give it to 'offramp retrain' for one run",
            )
    else:
        assert out_dir is not None
        check_output_dir(out_dir)  # a bad --out is refused now, not after the search
    _check_memory(data, [text_col, label_col], max_memory)
    if multi_label or label_precision is not None:
        if not multi_label:
            raise UsageError("--label-precision goes with --multi-label")
        if target is not None or val is not None or search_rows or oos_label:
            raise UsageError(
                "--multi-label does not take --reject-target, --val, --search-rows or --oos-label",
                "leave them out: the pipeline's routing.unsure_band sends doubtful labels to the LLM",
            )
        _train_multilabel(
            data,
            out_dir,
            text_col,
            label_col,
            label_sep,
            label_precision,
            seed,
            max_chars,
            as_json,
            quiet,
            quality,
            encoder_name,
            limit,
            drop_suspects,
            reg,
            gate,
            promote,
        )
        return
    ds = read_dataset(data, text_col=text_col, label_col=label_col, max_chars=max_chars)
    val_ds = read_dataset(val, text_col=text_col, label_col=label_col, max_chars=max_chars) if val else None
    info(f"read {len(ds)} texts from {data}", quiet)
    from offramp.data.multilabel import looks_multilabel

    joined = looks_multilabel(ds.labels or [], label_sep)
    if joined:
        warn([joined])
    gate_rows = None
    if reg is not None and reg.gate_set() is None:
        ds, gate_rows = _gate_rows(ds, gate, text_col, label_col, max_chars, seed)
    dropped = None
    if drop_suspects:
        from offramp.data.io import Dataset
        from offramp.training.noise import without_suspects

        assert ds.labels is not None
        with status("checking labels", quiet) as say:
            kept_texts, kept_labels, check = without_suspects(
                ds.texts, ds.labels, quality="fast", seed=seed, near=None, on_progress=say
            )
        rows = ds.data_rows()
        dropped = sorted(int(rows[s.row]) for s in check.suspects)
        ds = Dataset(kept_texts, kept_labels, ds.path, ds.warnings, ds.rows_read)
        info(
            f"left out {len(dropped)} of {len(rows)} rows that look mislabelled "
            f"(see them with: offramp check-labels {data})",
            quiet,
        )
    with status("training", quiet) as say:
        model, rep = train_model(
            ds,
            quality=quality,
            time_limit=limit,
            seed=seed,
            latency_budget_ms=latency_budget_ms,
            reject_target=target,
            oos_label=oos_label,
            val=val_ds,
            on_progress=say,
            search_rows=search_rows,
            encoder_name=encoder_name,
            refit_with_val=refit_with_val,
        )
        version = None
        if reg is not None:
            say(f"adding to {registry}")
            if gate_rows is not None:
                reg.set_gate(*gate_rows)
            assert ds.labels is not None
            rows_texts, rows_labels = list(ds.texts), [str(lab) for lab in ds.labels]
            if rep.rejection and rep.rejection.get("refit_with_val") and val_ds is not None:
                added = val_rows_known(model, val_ds)  # the --val rows the model was refitted on
                rows_texts += [val_ds.texts[i] for i in added]
                rows_labels += [str((val_ds.labels or [])[i]) for i in added]
            version = reg.add(model, rows_texts, rows_labels, promote=True if promote else None)
            out_dir = reg.version_dir(version)
        else:
            assert out_dir is not None
            say(f"writing {out_dir}")
            model.save(out_dir)
    warn(rep.warnings)
    from offramp.modeldir.store import read_metrics

    size = read_metrics(out_dir).get("model_bytes", 0)
    extra: dict[str, Any] = {}
    if reg is not None:
        extra = {"registry": str(registry), "version": version, "current": reg.current}
    if dropped is not None:
        extra["dropped_suspects"] = dropped
    if as_json:
        out.print_json(json.dumps({"model_dir": str(out_dir), **extra, **rep.to_dict(), "model_bytes": size}))
        return
    if not quiet:
        out.print(candidates_table(rep))
    out.print(choice_line(rep))
    if rep.encoder:
        e = rep.encoder
        out.print(
            f"languages: {_shares(e['languages'])} (of {e['languages']['sample']} sampled messages); "
            f"encoder: {e['name']} ({e['reason']})" + ("" if e["used"] else "; the chosen model does not use it")
        )
    if rep.refit:
        r = rep.refit
        which = "the refit" if r["kept"] == "refit" else "the sample's model (the refit scored lower)"
        out.print(
            f"{rep.n_train:,} rows: the search cross-validated a sample of {rep.search_rows:,}; the winner was "
            f"refitted on {r['rows']:,} rows in {r['epochs']} passes ({r['seconds']:.0f} s); on {r['holdout_rows']:,} "
            f"held-out rows macro-F1 {r['holdout_macro_f1_sample']:.4f} (sample) vs {r['holdout_macro_f1_refit']:.4f} "
            f"(refit): kept {which}"
        )
    out.print(
        f"model written to {out_dir} ({size / 1e6:.2f} MB) in {rep.train_seconds:.1f} s; "
        f"CV macro-F1 {rep.cv_macro_f1:.4f}; calibration error {rep.ece_uncalibrated:.3f} → {rep.ece_calibrated:.3f}"
    )
    if reg is not None:
        state = "current" if reg.current == version else f"not promoted; current is {reg.current}"
        out.print(f"{version} added to registry {registry} ({state})")
    rej = rep.rejection
    if rej:
        h = rej["held_out"]
        oos = "—" if h["oos_recall"] is None else f"{h['oos_recall']:.3f}"
        out.print(
            f"don't know: {score_name(rej)} < {rej['threshold']:.4f} → {rej['label']} (target {rej['target']}, "
            f"{'met' if rej['met'] else 'NOT met'} on {rej['source']}{_bound_note(rej)}: in-scope precision "
            f"{h['in_scope_precision']:.3f}, in-scope accuracy {h['in_scope_accuracy']:.3f}, oos recall {oos}, "
            f"answered {h['coverage']:.1%})"
        )
        if rej.get("refit_with_val"):
            out.print(
                f"then refitted with {rej['refit_with_val']:,} --val rows added (the figures above are from before)"
            )


def _bound_note(rej: dict[str, Any]) -> str:
    """ ", lower bound 0.761" when the target was fitted to a confidence bound."""
    from offramp.modeldir.card import fitted_bound

    bound = fitted_bound(rej)
    return "" if bound is None else f", lower bound {bound:.3f}"


def read_label_sets(data: Path, text_col: str, label_col: str, sep: str, max_chars: int) -> tuple[Any, Any, list[str]]:
    """(dataset, label sets, notes) of a multi-label file; a missing label column is one line."""
    from offramp.data.io import read_dataset
    from offramp.data.multilabel import parse_label_sets
    from offramp.errors import DataError

    ds = read_dataset(data, text_col=text_col, label_col=label_col, need_labels=False, max_chars=max_chars)
    if ds.labels is None:
        raise DataError(f"{data} has no label column {label_col!r}", "choose the label column", param="label_col")
    sets, notes = parse_label_sets(ds.labels, sep)
    return ds, sets, notes


def _multilabel_results(model: Any, data: Path, text_col: str, label_col: str, max_chars: int, quiet: bool) -> Any:
    """A multi-label model's figures on a labelled file (what ``eval --json`` prints)."""
    from offramp.evaluation.multilabel import evaluate_multilabel

    ds, sets, notes = read_label_sets(data, text_col, label_col, model.label_sep_, max_chars)
    with status("evaluating", quiet):
        res = evaluate_multilabel(model, ds.texts, sets)
    warn(ds.warnings + notes + res["warnings"])
    return res


def _train_multilabel(
    data: Path,
    out_dir: Path | None,
    text_col: str,
    label_col: str,
    sep: str,
    label_precision: float | None,
    seed: int,
    max_chars: int,
    as_json: bool,
    quiet: bool,
    quality: str = "auto",
    encoder_name: str = "auto",
    time_limit: str = "auto",
    drop_suspects: bool = False,
    reg: Any = None,
    gate: Path | None = None,
    promote: bool = False,
) -> None:
    from offramp.encoders import sentence as encoder
    from offramp.estimators.multilabel import train_multilabel
    from offramp.modeldir.store import check_output_dir, read_metrics
    from offramp.training.train import resolve_time_limit

    if out_dir is not None:
        check_output_dir(out_dir)
    ds, sets, notes = read_label_sets(data, text_col, label_col, sep, max_chars)
    warn(ds.warnings + notes)
    info(f"read {len(ds)} texts from {data}", quiet)
    gate_rows = None
    if reg is not None and reg.gate_set() is None:  # the first version: freeze a gate set of label sets
        ds, sets, gate_rows = _gate_sets(ds, sets, gate, text_col, label_col, sep, max_chars, seed)
    dropped = None
    if drop_suspects:
        from offramp.data.io import Dataset
        from offramp.training.noise import check_label_sets

        with status("checking labels", quiet) as say:
            check = check_label_sets(ds.texts, sets, label_sep=sep, seed=seed, near=None, on_progress=say)
        rows = ds.data_rows()
        gone = {s.row for s in check.suspects}
        dropped = sorted(int(rows[i]) for i in gone)
        keep = [i for i in range(len(ds.texts)) if i not in gone]
        ds = Dataset([ds.texts[i] for i in keep], None, ds.path, ds.warnings, ds.rows_read)
        sets = [sets[i] for i in keep]
        info(
            f"left out {len(dropped)} of {len(rows)} rows whose labels look wrong "
            f"(see them with: offramp check-labels {data} --multi-label)",
            quiet,
        )
    # multi-label: auto is the fast tier (its search stays within a minute on 20k messages);
    # balanced and best add the stacked tier
    quality = "fast" if quality == "auto" else quality
    choice = encoder.choose_encoder(ds.texts, encoder_name, seed)
    if quality != "fast":
        from offramp.training.train import resolve_quality

        quality, _ = resolve_quality(quality, choice.name)
        if choice.warning:
            warn([choice.warning])
    limit = resolve_time_limit(time_limit, quality)  # auto: 60 s for fast, 180 s for balanced
    with status("training (multi-label)", quiet) as say:
        model, rep = train_multilabel(
            ds.texts,
            sets,
            seed=seed,
            label_precision=label_precision,
            label_sep=sep,
            data_path=str(data),
            warnings=ds.warnings + notes,
            on_progress=say,
            quality=quality,
            encoder=choice.name,
            time_limit=limit,
        )
        extra: dict[str, Any] = {}
        if reg is not None:
            say(f"adding to {reg.path}")
            if gate_rows is not None:
                reg.set_gate(*gate_rows)
            version = reg.add(model, ds.texts, [sep.join(s) for s in sets], promote=True if promote else None)
            out_dir = reg.version_dir(version)
            extra = {"registry": str(reg.path), "version": version, "current": reg.current}
        else:
            assert out_dir is not None
            say(f"writing {out_dir}")
            model.save(out_dir)
    size = read_metrics(out_dir).get("model_bytes", 0)
    if dropped is not None:
        extra["dropped_suspects"] = dropped
    if as_json:
        out.print_json(json.dumps({"model_dir": str(out_dir), **rep.to_dict(), **extra, "model_bytes": size}))
        return
    cv = rep.cv
    out.print(
        f"chose {rep.winner} (one scorer per label) by cross-validated micro-F1 {cv['micro_f1']:.4f} "
        f"(macro-F1 {cv['macro_f1']:.4f}, samples-F1 {cv['samples_f1']:.4f}, subset accuracy "
        f"{cv['subset_accuracy']:.4f}) over {len(rep.candidates)} candidates"
    )
    thr = ", ".join(f"{k} {v:.2f}" for k, v in rep.thresholds.items())
    out.print(f"per-label thresholds: {thr}", markup=False)
    out.print(
        f"model written to {out_dir} ({size / 1e6:.2f} MB) in {rep.train_seconds:.1f} s; "
        f"{rep.n_train} messages, {rep.empty_rows} with no label"
    )


def _check_memory(data: Path, columns: list[str], max_memory: float | None) -> None:
    """Refuse, before reading, data whose training would need more memory than the budget."""
    from offramp.data.io import data_bytes
    from offramp.training.large import default_memory_budget, training_memory

    positive("--max-memory", max_memory)
    budget = int(max_memory * 2**30) if max_memory else default_memory_budget()
    size = data_bytes(data, columns)
    need = training_memory(size)
    if need > budget:
        gb = math.ceil(need / 2**30 * 10) / 10
        stated = "--max-memory" if max_memory else "the default budget, 80% of this machine's memory"
        raise UsageError(
            f"{data} holds {size / 2**20:,.1f} MB of data; training on it needs about {gb:g} GB of memory, "
            f"over {budget / 2**30:.1f} GB ({stated})",
            f"train on a part of the file, or give --max-memory {gb:g} on a machine with that much memory",
        )


def _gate_sets(
    ds: Any,
    sets: list[list[str]],
    gate: Path | None,
    text_col: str,
    label_col: str,
    sep: str,
    max_chars: int,
    seed: int,
) -> tuple[Any, list[list[str]], Any]:
    """:func:`_gate_rows` for label sets: the --gate file's sets, or 20% held out stratified by
    label combination; the gate's labels are stored joined by the separator."""
    from offramp.data.io import Dataset
    from offramp.data.multilabel import parse_label_sets

    if gate is not None:
        g, gsets, _ = read_label_sets(gate, text_col, label_col, sep, max_chars)
        return ds, sets, (g.texts, [sep.join(s) for s in gsets], str(gate))
    joined = Dataset(ds.texts, [sep.join(s) for s in sets], ds.path, ds.warnings, ds.rows_read)
    rest, gate_rows = _gate_rows(joined, None, text_col, label_col, max_chars, seed)
    rest_sets, _ = parse_label_sets(rest.labels, sep)
    rest.labels = None
    return rest, rest_sets, gate_rows


def _gate_rows(ds: Any, gate: Path | None, text_col: str, label_col: str, max_chars: int, seed: int) -> tuple[Any, Any]:
    """(training data, (gate texts, gate labels, source)) for a registry's first version: the
    --gate file, or a stratified 20% held out of the data."""
    from offramp.data.io import Dataset, read_dataset
    from offramp.registry.versions import gate_split

    if gate is not None:
        g = read_dataset(gate, text_col=text_col, label_col=label_col, max_chars=max_chars)
        return ds, (g.texts, g.labels, str(gate))
    held = gate_split(ds.labels, seed=seed)
    if not len(held):
        raise UsageError(
            f"{ds.path} is too small to hold out a gate set (no label has 5 examples)",
            "give a labelled gate set with --gate FILE",
        )
    mask = set(held.tolist())
    train_rows = [i for i in range(len(ds.texts)) if i not in mask]
    rest = Dataset(
        [ds.texts[i] for i in train_rows],
        [ds.labels[i] for i in train_rows],
        ds.path,
        ds.warnings + [f"{len(held)} rows ({len(held) / len(ds.texts):.0%}, stratified) are held out as the gate set"],
        ds.rows_read,
    )
    # the gate rows count as left out of the training part, so its rows still name the file's rows
    file_rows = ds.data_rows()
    rest.skipped_rows = sorted(set(ds.skipped_rows) | set(file_rows[held].tolist()))
    return rest, ([ds.texts[i] for i in held], [ds.labels[i] for i in held], f"20% of {ds.path} (seed {seed})")


def eval_cmd(
    model_dir: Path = typer.Argument(..., help="Model directory written by 'offramp train'."),
    data: Path = typer.Argument(..., help="Labelled test file."),
    text_col: str = TEXT_COL,
    label_col: str = LABEL_COL,
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    max_chars: int = MAX_CHARS,
    quiet: bool = QUIET,
) -> None:
    """Evaluate a model on a labelled file: quality, calibration, latency, throughput, size, cost."""
    from offramp.data.io import read_dataset
    from offramp.evaluation.evaluate import evaluate
    from offramp.registry.records import load

    model = load(model_dir)
    if getattr(model, "multi_label", False):
        _eval_multilabel(model, data, text_col, label_col, max_chars, as_json, quiet)
        return
    ds = read_dataset(data, text_col=text_col, label_col=label_col, max_chars=max_chars)
    with status("evaluating", quiet):
        res = evaluate(model, ds)
    warn(res.warnings)
    if as_json:
        print(json.dumps(res.to_dict()))
        return
    print_side_by_side(res, None)


def _eval_multilabel(
    model: Any, data: Path, text_col: str, label_col: str, max_chars: int, as_json: bool, quiet: bool
) -> None:
    res = _multilabel_results(model, data, text_col, label_col, max_chars, quiet)
    if as_json:
        print(json.dumps(res))
        return
    out.print(
        f"{res['n']} messages: micro-F1 {res['micro_f1']:.4f}, macro-F1 {res['macro_f1']:.4f}, samples-F1 "
        f"{res['samples_f1']:.4f}, subset accuracy {res['subset_accuracy']:.4f}, Hamming loss {res['hamming_loss']:.4f}; "
        f"p99 {res['latency_ms']['p99']:.2f} ms per message"
    )
    for lab, m in res["per_label"].items():
        out.print(
            f"  {lab}: precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f} ({m['support']})",
            markup=False,
        )


def predict(
    model_dir: Path = typer.Argument(..., help="Model directory written by 'offramp train' (or a registry)."),
    texts: Optional[List[str]] = typer.Argument(
        None, help="Texts to classify (or use --input, or pipe lines on stdin)."
    ),
    input_file: Optional[str] = typer.Option(
        None,
        "--input",
        "-i",
        help="A file (CSV, TSV, JSONL, Parquet), a directory of Parquet/JSONL shards, or a glob of them.",
    ),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Where to write: .jsonl, .csv or .tsv (records in the input's order), .parquet, or a directory "
        "(one Parquet part per input shard). Default: JSON lines on stdout.",
    ),
    text_col: str = TEXT_COL,
    top: int = typer.Option(3, "--top", min=1, help="How many class scores to include per text."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1, help="Processes predicting in parallel with --input/--output (default: every core)."
    ),
    keep_columns: Optional[str] = typer.Option(
        None, "--keep-columns", help="Comma-separated input columns copied to the output (e.g. an id)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue a killed run into the same directory output, keeping the parts it finished."
    ),
    batch_size: int = typer.Option(8192, "--batch-size", min=1, help="Rows read and predicted at a time."),
    engine: str = typer.Option(
        "local", "--engine", help="Where --input/--output predictions run: 'local' (processes here) or 'ray'."
    ),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="With --engine ray: the cluster ('auto', HOST:PORT, ray://HOST:PORT); default a Ray started here.",
    ),
    max_chars: int = MAX_CHARS,
    raw_csv: bool = RAW_CSV,
    quiet: bool = QUIET,
) -> None:
    """Classify texts; one record each with label, confidence and the top scores.

    With --input and --output the input is streamed in batches on every core, in bounded memory,
    and the output appears under its name only once complete.
    """
    from offramp.data.io import read_dataset
    from offramp.data.text import clean_text
    from offramp.estimators.predict import prediction_records
    from offramp.registry.records import load

    if texts and input_file:
        raise UsageError("give texts as arguments or --input FILE, not both")
    if input_file and output is not None:
        _predict_stream(
            model_dir,
            input_file,
            output,
            text_col,
            top,
            workers,
            keep_columns,
            resume,
            batch_size,
            max_chars,
            raw_csv,
            quiet,
            engine,
            address,
        )
        return
    if output is not None and output.suffix.lower() not in (".jsonl", ".csv", ".tsv"):
        raise UsageError(f"--output {output} must end in .jsonl, .csv or .tsv")
    if workers or keep_columns or resume or engine != "local" or address:
        raise UsageError("--workers, --keep-columns, --resume, --engine and --address go with --input and --output")
    model = load(model_dir)
    warnings: list[str] = []
    if input_file:
        ds = read_dataset(input_file, text_col=text_col, label_col=None, need_labels=False, max_chars=max_chars)
        items, warnings = ds.texts, ds.warnings
    elif texts:
        items = list(texts)
    elif not sys.stdin.isatty():
        items = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    else:
        raise UsageError("nothing to classify", "pass texts as arguments, --input FILE, or lines on stdin")
    if not items:
        raise UsageError("nothing to classify: the input has no non-empty text")
    items = [clean_text(t) for t in items]
    cut = sum(1 for t in items if len(t) > max_chars)
    if cut and not input_file:
        items = [t[:max_chars] for t in items]
        warnings.append(f"{cut} texts longer than {max_chars} characters were cut to {max_chars}")
    warn(warnings)
    from offramp.data.io import RecordWriter

    sink = RecordWriter(output, "output", raw_csv) if output else None
    try:
        for rec in prediction_records(model, items, top):
            if sink is None:
                sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
            else:
                sink.write(rec)
    finally:
        if sink is not None:
            sink.close()
    if output:
        info(f"wrote {len(items)} predictions to {output}", quiet)


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
    raw_csv: bool,
    quiet: bool,
    engine: str = "local",
    address: str | None = None,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from offramp.cli.common import err
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
            raw_csv=raw_csv,
            on_progress=on_progress,
            engine=engine,
            address=address,
        )
    finally:
        if progress is not None:
            progress.stop()
    warn(rep.warnings())
    resumed = f", {rep.shards_resumed} resumed" if rep.shards_resumed else ""
    info(
        f"wrote {rep.predicted:,} predictions to {output} from {rep.rows_read:,} rows in {rep.shards} shard(s)"
        f"{resumed} in {rep.seconds:.1f} s ({rep.rows_per_s:,.0f} rows/s)",
        quiet,
    )
    if rep.rows_by_node:
        nodes = ", ".join(f"{node[:8]} {rows:,}" for node, rows in sorted(rep.rows_by_node.items()))
        info(f"rows predicted per Ray node: {nodes}", quiet)


def report(
    model_dir: Path = typer.Argument(..., help="Model directory written by 'offramp train'."),
    data: Path = typer.Argument(..., help="Labelled test file."),
    llm_predictions: Optional[Path] = typer.Option(
        None, "--llm-predictions", help="The LLM's predictions on the same texts (columns text, prediction)."
    ),
    out_file: Path = typer.Option(
        Path("report.html"), "--out", "-o", help="HTML file to write (Markdown is written beside it)."
    ),
    text_col: str = TEXT_COL,
    label_col: str = LABEL_COL,
    messages_per_day: float = typer.Option(100_000, "--messages-per-day", help="Traffic used for the cost section."),
    route_threshold: Optional[float] = typer.Option(
        None,
        "--route-threshold",
        min=0.0,
        max=1.0,
        help="Cascade view: answer locally at this confidence or above, ask the LLM below it.",
    ),
    llm_share: float = typer.Option(
        0.1,
        "--llm-share",
        min=0.0,
        max=1.0,
        help="Cascade view without --route-threshold: the threshold that sends at most this share to the LLM.",
    ),
    quiet: bool = QUIET,
) -> None:
    """Write the side-by-side report (HTML + Markdown): small model vs LLM, the cascade of both, charts, cost."""
    from offramp.registry.records import load

    model = load(model_dir)
    if getattr(model, "multi_label", False):
        _report_multilabel(model, model_dir, data, out_file, text_col, label_col, quiet, llm_predictions)
        return
    html_path, md_path, small = write_report_files(
        model_dir,
        data,
        llm_predictions,
        out_file,
        text_col,
        label_col,
        messages_per_day,
        quiet,
        route_threshold=route_threshold,
        llm_share=llm_share,
    )
    print_side_by_side(small, small.llm)
    if small.cascade:
        print_cascade(small.cascade)
    out.print(f"report written to {html_path} and {md_path}")


def _report_multilabel(
    model: Any,
    model_dir: Path,
    data: Path,
    out_file: Path,
    text_col: str,
    label_col: str,
    quiet: bool,
    llm_predictions: Path | None = None,
) -> None:
    from offramp.data.io import DEFAULT_MAX_CHARS
    from offramp.evaluation.multilabel import compare_with_llm
    from offramp.evaluation.report import write_multilabel_report

    if out_file.is_dir():
        raise UsageError(f"{out_file} is a directory", "give a file name such as report.html")
    res = _multilabel_results(model, data, text_col, label_col, DEFAULT_MAX_CHARS, quiet)
    llm = None
    if llm_predictions is not None:
        ds, sets, _ = read_label_sets(data, text_col, label_col, model.label_sep_, DEFAULT_MAX_CHARS)
        llm = compare_with_llm(model, llm_predictions, ds.texts, sets)
        if llm["llm_labels_outside"]:
            warn([f"the LLM named labels the model does not have (not scored): {', '.join(llm['llm_labels_outside'])}"])
    co = ((model.training_record_ or {}).get("info") or {}).get("cooccurrence", [])
    html_path, md_path = write_multilabel_report(out_file, res, str(model_dir), str(data), co, llm=llm)
    out.print(
        f"micro-F1 {res['micro_f1']:.4f}, macro-F1 {res['macro_f1']:.4f} on {res['n']} messages; "
        f"report written to {html_path} and {md_path}"
    )
    if llm is not None:
        out.print(
            f"on the {llm['n']} messages the LLM answered: micro-F1 small model {llm['small']['micro_f1']:.4f}, "
            f"LLM {llm['llm']['micro_f1']:.4f}"
        )


def print_cascade(cascade: dict) -> None:
    from offramp.evaluation.report import cascade_caption, cascade_rows

    t = Table(title="the whole system: cascade")
    for c in ("", "macro-F1", "handled locally", "$ per month"):
        t.add_column(c, justify="left" if not c else "right")
    for r in cascade_rows(cascade):
        t.add_row(*r)
    out.print(t)
    out.print(cascade_caption(cascade))


def write_report_files(
    model_dir: Path,
    data: Path,
    llm_predictions: Path | None,
    out_file: Path,
    text_col: str,
    label_col: str,
    messages_per_day: float,
    quiet: bool,
    route_threshold: float | None = None,
    llm_share: float = 0.1,
    sections: Any = None,
) -> tuple[Path, Path, Any]:
    from offramp.data.io import read_dataset
    from offramp.evaluation.report import build_report
    from offramp.registry.records import load

    model = load(model_dir)
    ds = read_dataset(data, text_col=text_col, label_col=label_col)
    with status("evaluating", quiet):
        html_path, md_path, small = build_report(
            model,
            ds,
            out_file,
            llm_predictions=llm_predictions,
            messages_per_day=messages_per_day,
            route_threshold=route_threshold,
            llm_share=llm_share,
            sections=sections,
        )
    warn(small.warnings + [f"LLM: {w}" for w in (small.llm.warnings if small.llm else [])])
    return html_path, md_path, small
