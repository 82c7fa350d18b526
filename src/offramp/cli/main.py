"""``offramp``: train, evaluate, predict, price and report, from the command line.

Every command is a thin layer: parse, call the library, render. Exit codes: 0 ok, 2 bad usage or
data (one-line message naming the problem and the fix), 1 internal error, 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from offramp.errors import DataError, OfframpError, UsageError

app = typer.Typer(
    name="offramp",
    help="Move a narrow text task off a paid LLM onto a small local model, and prove the move.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# when piped, rich would assume 80 columns and squeeze the tables; give them room instead
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)

TEXT_COL = typer.Option("text", "--text-col", help="Name of the column holding the texts.")
LABEL_COL = typer.Option("label", "--label-col", help="Name of the column holding the labels.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress or information on stderr (warnings still show).")
API_KEY_ENV = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key (never printed).")
CONCURRENCY = typer.Option(4, "--concurrency", min=1, max=64, help="LLM requests in flight at once.")
PRICE_MODEL = typer.Option(None, "--price-model", help="Price-table row for the cost (default: --llm).")
ANSWER_CACHE = typer.Option(None, "--cache", help="Answer cache (SQLite; default ~/.cache/offramp/llm-answers.sqlite).")
LOGPROBS = typer.Option(True, "--logprobs/--no-logprobs", help="Ask for token logprobs and report the answer's probability as its confidence (skipped if the server refuses them).")
MAX_CHARS = typer.Option(20_000, "--max-chars", min=1, help="Texts longer than this are cut (with a warning).")


@contextmanager
def _status(message: str, quiet: bool):
    """A spinner whose text follows the work; silent with --quiet or when stderr is not a terminal."""
    if quiet or not err.is_terminal:
        yield (lambda msg: None if quiet else err.print(f"[dim]{msg}[/dim]"))
        return
    with err.status(message) as st:
        yield (lambda msg: st.update(msg))


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        err.print(f"warning: {w}", markup=False)


def _info(msg: str, quiet: bool) -> None:
    if not quiet:
        err.print(msg)


def _positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise UsageError(f"{name} must be greater than zero, got {value}")


# --------------------------------------------------------------------------- train
@app.command()
def train(
    data: Path = typer.Argument(..., help="Training file: CSV, TSV, JSONL or Parquet with a text and a label column."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory to write the model to."),
    text_col: str = TEXT_COL,
    label_col: str = LABEL_COL,
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Seconds the model search may take (the first candidate always runs); default 60 / 180 / 300 for fast / balanced / best."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same data and seed give the same model."),
    quality: str = typer.Option("auto", "--quality", help="fast (TF-IDF), balanced or best (add sentence embeddings); auto = balanced when the encoder is installed."),
    latency_budget_ms: Optional[float] = typer.Option(None, "--latency-budget-ms", help="Only candidates whose single-message p99 fits this budget can win."),
    reject_target: Optional[str] = typer.Option(None, "--reject-target", help="Fit a \"don't know\" threshold to this target: in_scope_precision>=0.98 or oos_recall>=0.8."),
    oos_label: Optional[str] = typer.Option(None, "--oos-label", help="The label of out-of-scope examples (trained as a class; also the answer when rejecting)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Held-out labelled file to fit the threshold on (default: out-of-fold predictions)."),
    max_chars: int = MAX_CHARS,
    as_json: bool = typer.Option(False, "--json", help="Print the training summary as JSON on stdout."),
    quiet: bool = QUIET,
):
    """Train a classifier: choose among candidates by cross-validated macro-F1, calibrate, save."""
    from offramp.data.io import read_dataset
    from offramp.models.training import train as train_model

    _positive("--time-limit", time_limit)
    _positive("--latency-budget-ms", latency_budget_ms)
    from offramp.models.rejection import RejectTarget

    target = RejectTarget.parse(reject_target) if reject_target is not None else None
    ds = read_dataset(data, text_col=text_col, label_col=label_col, max_chars=max_chars)
    val_ds = read_dataset(val, text_col=text_col, label_col=label_col, max_chars=max_chars) if val else None
    _info(f"read {len(ds)} texts from {data}", quiet)
    with _status("training", quiet) as say:
        res = train_model(ds, out_dir, time_limit=time_limit, seed=seed, quality=quality,
                          latency_budget_ms=latency_budget_ms, reject_target=target, oos_label=oos_label,
                          val=val_ds, on_progress=say)
    _warn(res.warnings)
    m = res.metrics
    if as_json:
        out.print_json(json.dumps({"model_dir": str(out_dir), "winner": res.selection.winner, **m,
                                   "candidates": [r.as_dict() for r in res.selection.results], "warnings": res.warnings}))
        return
    t = Table(title=f"candidates ({res.selection.n_folds}-fold CV)")
    for c in ("candidate", "CV macro-F1", "p99 ms", "seconds", "status"):
        t.add_column(c, justify="left" if c in ("candidate", "status") else "right")
    for r in res.selection.results:
        mark = " ✓" if r.name == res.selection.winner else ""
        t.add_row(r.name + mark, "—" if r.cv_macro_f1 is None else f"{r.cv_macro_f1:.4f}",
                  "—" if r.latency_p99_ms is None else f"{r.latency_p99_ms:.2f}", f"{r.seconds:.1f}", r.status)
    if not quiet:
        out.print(t)
    out.print(f"model written to {out_dir} ({m['model_bytes'] / 1e6:.2f} MB) in {m['train_seconds']:.1f} s; "
              f"CV macro-F1 {m['cv_macro_f1']:.4f}; calibration error {m['ece_uncalibrated']:.3f} → {m['ece_calibrated']:.3f}")
    rej = m.get("rejection")
    if rej:
        h = rej["held_out"]
        oos = "—" if h["oos_recall"] is None else f"{h['oos_recall']:.3f}"
        from offramp.models.rejection import score_name

        out.print(f"don't know: {score_name(rej)} < {rej['threshold']:.4f} → {rej['label']} (target {rej['target']}, "
                  f"{'met' if rej['met'] else 'NOT met'} on {rej['source']}: in-scope precision "
                  f"{h['in_scope_precision']:.3f}, in-scope accuracy {h['in_scope_accuracy']:.3f}, oos recall {oos}, "
                  f"answered {h['coverage']:.1%})")


# --------------------------------------------------------------------------- eval
def _print_side_by_side(small: dict, llm: dict | None, first: str = "small model") -> None:
    from offramp.evaluation.report import side_by_side_rows

    t = Table(title=f"{small['n']} test messages")
    t.add_column("metric")
    t.add_column(first, justify="right")
    if llm:
        t.add_column(f"LLM ({llm.get('model', 'LLM')})", justify="right")
    for name, a, b in side_by_side_rows(small, llm):
        t.add_row(name, a, *([b] if llm else []))
    out.print(t)
    pc = Table(title="per class")
    for c in ("label", "support", "precision", "recall", "F1") + (("LLM F1",) if llm else ()):
        pc.add_column(c, justify="left" if c == "label" else "right")
    for lab, m in small["per_class"].items():
        extra = [f"{llm['per_class'].get(lab, {}).get('f1', 0):.3f}"] if llm else []
        pc.add_row(lab, str(m["support"]), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", *extra)
    out.print(pc)


def _load(model_dir: Path):
    from offramp.models.store import load_model

    return load_model(model_dir)


@app.command("eval")
def eval_cmd(
    model_dir: Path = typer.Argument(..., help="Model directory written by 'offramp train'."),
    data: Path = typer.Argument(..., help="Labelled test file."),
    text_col: str = TEXT_COL,
    label_col: str = LABEL_COL,
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    max_chars: int = MAX_CHARS,
    quiet: bool = QUIET,
):
    """Evaluate a model on a labelled file: quality, calibration, latency, throughput, size, cost."""
    from offramp.data.io import read_dataset
    from offramp.evaluation.evaluate import evaluate_model

    model = _load(model_dir)
    ds = read_dataset(data, text_col=text_col, label_col=label_col, max_chars=max_chars)
    with _status("evaluating", quiet):
        res = evaluate_model(model, model_dir, ds)
    _warn(res["warnings"])
    if as_json:
        print(json.dumps(res))
        return
    _print_side_by_side(res, None)


# --------------------------------------------------------------------------- predict
@app.command()
def predict(
    model_dir: Path = typer.Argument(..., help="Model directory written by 'offramp train'."),
    texts: Optional[List[str]] = typer.Argument(None, help="Texts to classify (or use --input, or pipe lines on stdin)."),
    input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="File of texts (CSV, TSV, JSONL, Parquet)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write JSONL here instead of stdout."),
    text_col: str = TEXT_COL,
    top: int = typer.Option(3, "--top", min=1, help="How many class scores to include per text."),
    max_chars: int = MAX_CHARS,
    quiet: bool = QUIET,
):
    """Classify texts; one JSON line each with label, confidence and the top scores."""
    import numpy as np

    from offramp.data.io import read_dataset

    if texts and input_file:
        raise UsageError("give texts as arguments or --input FILE, not both")
    model = _load(model_dir)
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
    from offramp.data.io import clean_text

    items = [clean_text(t) for t in items]
    cut = sum(1 for t in items if len(t) > max_chars)
    if cut and not input_file:
        items = [t[:max_chars] for t in items]
        warnings.append(f"{cut} texts longer than {max_chars} characters were cut to {max_chars}")
    _warn(warnings)
    k = min(top, len(model.classes_))
    sink = open(output, "w", encoding="utf-8") if output else sys.stdout
    try:
        step = 4096
        with _status(f"classifying {len(items)} texts", quiet or len(items) < step) as say:
            for start in range(0, len(items), step):
                chunk = items[start : start + step]
                labels, proba = model.predict_and_proba(chunk)
                order = np.argsort(-proba, axis=1)[:, :k]
                for j, t in enumerate(chunk):
                    o = order[j]
                    rec = {
                        "text": t,
                        "label": str(labels[j]),
                        "confidence": round(float(proba[j, o[0]]), 6),
                        "rejected": bool(model.reject_threshold_ is not None and labels[j] != model.classes_[o[0]]),
                        "top": [{"label": str(model.classes_[c]), "score": round(float(proba[j, c]), 6)} for c in o],
                    }
                    sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
                say(f"classified {min(start + step, len(items))} of {len(items)}")
    finally:
        if output:
            sink.close()
    if output:
        _info(f"wrote {len(items)} predictions to {output}", quiet)


# --------------------------------------------------------------------------- cost
def _cost_report(messages_per_day, messages_per_month, messages_total, tokens_in, tokens_out, data, text_col,
                 prompt_tokens, models, prices_file, gpu_usd_per_hour, gpu_tokens_per_s, cpu_usd_per_hour,
                 throughput, model_dir):
    from offramp.costs.calculator import CostInputs, compute_costs, estimate_tokens, load_prices
    from offramp.data.io import read_dataset

    given = [x for x in (messages_per_day, messages_per_month, messages_total) if x is not None]
    if len(given) > 1:
        raise UsageError("give one of --messages-per-day, --messages-per-month, --messages-total")
    if messages_per_day is not None:
        volume = messages_per_day * 365 / 12
    elif messages_per_month is not None:
        volume = messages_per_month
    elif messages_total is not None:
        volume = messages_total
    else:
        volume = 1_000_000 * 30
    prices = load_prices(prices_file)
    if tokens_in is None:
        if data is not None:
            ds = read_dataset(data, text_col=text_col, label_col=None, need_labels=False)
            tokens_in = estimate_tokens(ds.texts, prompt_tokens)
        else:
            tokens_in = prompt_tokens + 25.0
    measured = False
    if throughput is None and model_dir is not None:
        from offramp.models.store import read_metrics, verify_model_dir

        verify_model_dir(model_dir)
        throughput = read_metrics(model_dir).get("throughput_per_s")
        measured = throughput is not None
    sh, lm = prices["self_hosted_llm"], prices["local_model"]
    inputs = CostInputs(
        messages_per_month=float(volume),
        tokens_in=float(tokens_in),
        tokens_out=float(tokens_out),
        gpu_usd_per_hour=float(gpu_usd_per_hour if gpu_usd_per_hour is not None else sh["gpu_usd_per_hour"]),
        gpu_tokens_per_s=float(gpu_tokens_per_s if gpu_tokens_per_s is not None else sh["tokens_per_second"]),
        gpu_watts=float(sh.get("gpu_watts", 300)),
        cpu_usd_per_hour=float(cpu_usd_per_hour if cpu_usd_per_hour is not None else lm["cpu_usd_per_hour"]),
        cpu_watts=float(lm.get("cpu_watts", 20)),
        throughput_per_s=float(throughput) if throughput is not None else 10_000.0,
        throughput_measured=measured or throughput is not None,
    )
    return compute_costs(inputs, prices, models or None), messages_total is not None


@app.command()
def cost(
    messages_per_day: Optional[float] = typer.Option(None, "--messages-per-day", help="Traffic per day."),
    messages_per_month: Optional[float] = typer.Option(None, "--messages-per-month", help="Traffic per month."),
    messages_total: Optional[float] = typer.Option(None, "--messages-total", help="A one-off batch of this many messages."),
    tokens_in: Optional[float] = typer.Option(None, "--tokens-in", help="Input tokens per message, prompt included."),
    tokens_out: float = typer.Option(5.0, "--tokens-out", help="Output tokens per message."),
    data: Optional[Path] = typer.Option(None, "--data", help="Estimate tokens per message from this file's texts."),
    text_col: str = TEXT_COL,
    prompt_tokens: int = typer.Option(150, "--prompt-tokens", min=0, help="Prompt tokens added to each message when estimating."),
    model: Optional[List[str]] = typer.Option(None, "--model", help="API model(s) to price (default: every row of the table)."),
    prices_file: Optional[Path] = typer.Option(None, "--prices", help="Your own price table (JSON, same shape as the bundled one)."),
    gpu_usd_per_hour: Optional[float] = typer.Option(None, "--gpu-usd-per-hour", help="Self-hosted LLM: GPU price per hour."),
    gpu_tokens_per_s: Optional[float] = typer.Option(None, "--gpu-tokens-per-s", help="Self-hosted LLM: tokens per second it serves."),
    cpu_usd_per_hour: Optional[float] = typer.Option(None, "--cpu-usd-per-hour", help="Small model: CPU instance price per hour."),
    throughput: Optional[float] = typer.Option(None, "--throughput", help="Small model: messages per second (default: measured in --model-dir, else 10,000)."),
    model_dir: Optional[Path] = typer.Option(None, "--model-dir", help="Read the small model's measured throughput from here."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
):
    """Price the move: paid LLM API vs self-hosted LLM vs the small model, at your volume."""
    from offramp.evaluation.report import breakeven_text
    for name, v in (("--messages-per-day", messages_per_day), ("--messages-per-month", messages_per_month),
                    ("--messages-total", messages_total), ("--tokens-in", tokens_in), ("--gpu-usd-per-hour", gpu_usd_per_hour),
                    ("--gpu-tokens-per-s", gpu_tokens_per_s), ("--cpu-usd-per-hour", cpu_usd_per_hour), ("--throughput", throughput)):
        if v is not None and (v != v or v < 0 or v == float("inf")):
            raise UsageError(f"{name} must be a non-negative number, got {v}")
    if tokens_out < 0:
        raise UsageError(f"--tokens-out must be a non-negative number, got {tokens_out}")
    report, one_off = _cost_report(messages_per_day, messages_per_month, messages_total, tokens_in, tokens_out, data,
                                   text_col, prompt_tokens, model, prices_file, gpu_usd_per_hour, gpu_tokens_per_s,
                                   cpu_usd_per_hour, throughput, model_dir)
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    v = report.inputs.messages_per_month
    period = "for the batch" if one_off else "per month"
    t = Table(title=f"{v:,.0f} messages {'in total' if one_off else 'a month'}, "
                    f"{report.inputs.tokens_in:.0f} tokens in / {report.inputs.tokens_out:.0f} out per message")
    for c in ("option", "$ per 1M messages", f"$ {period}", "Wh per 1M messages", "small model cheaper above"):
        t.add_column(c, justify="left" if c == "option" else "right")
    for r in report.rows:
        be = breakeven_text(r)
        usd_period = r.usd_per_message * v if one_off else r.usd_per_month
        t.add_row(r.name, f"${r.usd_per_million:,.4f}" if r.usd_per_million < 1 else f"${r.usd_per_million:,.2f}",
                  f"${usd_period:,.2f}", f"{r.wh_per_million:,.1f}", be)
    out.print(t)
    for a in report.assumptions:
        out.print(f"· {a}", style="dim", markup=False)


# --------------------------------------------------------------------------- report
@app.command()
def report(
    model_dir: Path = typer.Argument(..., help="Model directory written by 'offramp train'."),
    data: Path = typer.Argument(..., help="Labelled test file."),
    llm_predictions: Optional[Path] = typer.Option(None, "--llm-predictions", help="The LLM's predictions on the same texts (columns text, prediction)."),
    out_file: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write (Markdown is written beside it)."),
    text_col: str = TEXT_COL,
    label_col: str = LABEL_COL,
    messages_per_day: float = typer.Option(100_000, "--messages-per-day", help="Traffic used for the cost section."),
    quiet: bool = QUIET,
):
    """Write the side-by-side report (HTML + Markdown): small model vs LLM, charts, cost."""
    html_path, md_path, small, llm = build_report(model_dir, data, llm_predictions, out_file, text_col, label_col,
                                                  messages_per_day, quiet)
    _print_side_by_side(small, llm)
    out.print(f"report written to {html_path} and {md_path}")


def build_report(model_dir, data, llm_predictions, out_file, text_col, label_col, messages_per_day, quiet):
    from offramp.costs.calculator import CostInputs, compute_costs, estimate_tokens, load_prices
    from offramp.data.io import read_dataset
    from offramp.evaluation.evaluate import evaluate_model
    from offramp.evaluation.llm import score_llm_predictions
    from offramp.evaluation.report import write_report

    if out_file.exists() and out_file.is_dir():
        raise UsageError(f"--out {out_file} is a directory", "give a file name such as report.html")
    model = _load(model_dir)
    ds = read_dataset(data, text_col=text_col, label_col=label_col)
    with _status("evaluating", quiet):
        small = evaluate_model(model, model_dir, ds)
        llm = score_llm_predictions(llm_predictions, ds, small["confusion"]["labels"]) if llm_predictions else None
    _warn(small["warnings"] + [f"LLM: {w}" for w in (llm or {}).get("warnings", [])])
    prices = load_prices()
    lm, sh = prices["local_model"], prices["self_hosted_llm"]
    costs = compute_costs(CostInputs(
        messages_per_month=messages_per_day * 365 / 12, tokens_in=estimate_tokens(ds.texts),
        gpu_usd_per_hour=sh["gpu_usd_per_hour"], gpu_tokens_per_s=sh["tokens_per_second"], gpu_watts=sh["gpu_watts"],
        cpu_usd_per_hour=lm["cpu_usd_per_hour"], cpu_watts=lm["cpu_watts"],
        throughput_per_s=small["throughput_per_s"], throughput_measured=True), prices)
    html_path, md_path = write_report(out_file, small, llm, costs)
    return html_path, md_path, small, llm


# --------------------------------------------------------------------------- demo
@app.command()
def demo(
    out_dir: Path = typer.Option(Path("offramp-demo"), "--out", "-o", help="Where to write the model and the report."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Seconds the model search may take (default: 30 fast, 45 with the encoder)."),
    quality: str = typer.Option("auto", "--quality", help="fast, balanced, best, or auto (balanced when the encoder is installed)."),
    llm: Optional[str] = typer.Option(None, "--llm", help="Rerun the LLM column live with this model (else the recorded predictions are shown)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint for --llm."),
    api_key_env: str = API_KEY_ENV,
    concurrency: int = CONCURRENCY,
    send_chars: int = typer.Option(1500, "--max-chars", min=1, help="Characters of each test text sent to the LLM."),
    quiet: bool = QUIET,
):
    """The whole story on the bundled support-inbox data: train, evaluate, compare, report."""
    import time

    from offramp.data.demo import demo_paths
    from offramp.data.io import read_dataset
    from offramp.models.training import train as train_model

    _positive("--time-limit", time_limit)
    if (llm is None) != (base_url is None):
        raise UsageError("--llm and --base-url go together", "give both to rerun the LLM column live, or neither")
    t0 = time.perf_counter()
    train_path, test_path, llm_path = demo_paths()
    ds = read_dataset(train_path)
    _info(f"support inbox: {len(ds)} training messages, labels {', '.join(sorted(set(ds.labels)))}", quiet)
    model_dir = out_dir / "model"
    from offramp.models.training import resolve_quality

    q, _ = resolve_quality(quality)
    if time_limit is None:
        time_limit = 30.0 if q == "fast" else 45.0
    with _status("training", quiet) as say:
        res = train_model(ds, model_dir, time_limit=time_limit, quality=quality, on_progress=say)
    _warn(res.warnings)
    _info(f"trained {res.selection.winner} in {res.metrics['train_seconds']:.1f} s "
          f"(CV macro-F1 {res.metrics['cv_macro_f1']:.4f})", quiet)
    if llm is not None:
        from offramp.data.demo import demo_task
        from offramp.data.io import write_records
        from offramp.teacher.label import TaskSpec

        spec = TaskSpec.load(demo_task())
        labeller = _labeller(spec, llm, base_url, api_key_env, 120.0, concurrency, None)
        _, rows = _ask_llm(read_dataset(test_path), spec, labeller, llm, None, send_chars, concurrency, quiet)
        llm_path = out_dir / "llm_predictions.jsonl"
        write_records(llm_path, rows)
    elif llm_path is not None:
        _info(f"LLM column: recorded predictions ({llm_path.name}); rerun it live with --llm M --base-url URL", quiet)
    html_path, md_path, small, llm_res = build_report(model_dir, test_path, llm_path, out_dir / "report.html",
                                                      "text", "label", 100_000, quiet)
    _print_side_by_side(small, llm_res)
    pipeline = write_demo_pipeline(out_dir)
    out.print(f"model in {model_dir}; report in {html_path} (and {md_path.name}); "
              f"whole demo {time.perf_counter() - t0:.1f} s")
    out.print(f"serve it: offramp serve {pipeline}")


def write_demo_pipeline(out_dir: Path) -> Path:
    """The support bot's pipeline beside the demo model: docs answer SUPPORT, thanks get a thumbs-up."""
    import shutil

    from offramp.data.demo import demo_docs

    docs = out_dir / "docs"
    if docs.exists():
        shutil.rmtree(docs)
    shutil.copytree(demo_docs(), docs)
    path = out_dir / "pipeline.yaml"
    path.write_text(
        "# The support bot's inbox: what to do with each label.\n"
        "model: model\n"
        "actions:\n"
        "  SUPPORT: {type: answer_from_docs, docs: docs}\n"
        '  GRATITUDE: {type: reply, text: "👍"}\n'
        '  TRY_TO_HACK: {type: refuse, template: "I can only help with questions about your account and cards."}\n'
        "  OTHER: {type: none}\n"
        "# personal data is masked before anything leaves (here: nothing does without an llm: section)\n"
        "privacy: {operator: placeholder}\n"
        "# one hash-chained record per message: offramp audit verify audit.sqlite\n"
        "audit: audit.sqlite\n",
        encoding="utf-8",
    )
    return path


# --------------------------------------------------------------------------- label
def _labeller(spec, llm, base_url, api_key_env, timeout_s, concurrency, cache, constrain=True, logprobs=True):
    """The LLM teacher both `label` and `eval-llm` use: one client, the shared answer cache."""
    from offramp.teacher.client import ChatClient, LLMConfig
    from offramp.teacher.label import AnswerCache, Labeller, default_cache_path

    client = ChatClient(LLMConfig(base_url=base_url, model=llm, api_key_env=api_key_env, timeout_s=timeout_s,
                                  max_concurrency=concurrency))
    return Labeller(client, spec, AnswerCache(cache or default_cache_path()), constrain=constrain, logprobs=logprobs)


@app.command()
def label(
    data: Path = typer.Argument(..., help="Texts to label (CSV, TSV, JSONL, Parquet)."),
    llm: str = typer.Option(..., "--llm", help="Model name the endpoint serves (also looked up in the price table)."),
    base_url: str = typer.Option(..., "--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1"),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="Labelled file to write (.csv or .jsonl); not needed with --dry-run."),
    task: Path = typer.Option(..., "--task", help="Task spec YAML: labels with descriptions, optional instructions and examples."),
    text_col: str = TEXT_COL,
    api_key_env: str = API_KEY_ENV,
    concurrency: int = CONCURRENCY,
    timeout_s: float = typer.Option(30.0, "--timeout", help="Seconds to wait for one answer."),
    price_model: Optional[str] = PRICE_MODEL,
    cache: Optional[Path] = ANSWER_CACHE,
    no_schema: bool = typer.Option(False, "--no-schema", help="Do not send a JSON schema (for servers that reject one)."),
    logprobs: bool = LOGPROBS,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the token and dollar estimate; send nothing."),
    max_chars: int = MAX_CHARS,
    quiet: bool = QUIET,
):
    """Label texts with an LLM teacher: constrained answers, cached (re-runs send nothing twice), costed."""
    from offramp.data.io import read_dataset, write_records
    from offramp.teacher.label import TaskSpec, estimate, label_texts

    spec = TaskSpec.load(task)
    ds = read_dataset(data, text_col=text_col, label_col=None, need_labels=False, max_chars=max_chars)
    _warn(ds.warnings)
    est = estimate(spec, ds.texts, price_model or llm)
    cost = "unknown (no price-table row; pass --price-model)" if est["cost_usd"] is None else f"${est['cost_usd']:.4f}"
    if dry_run:
        out.print(f"{est['texts']} texts, about {est['prompt_tokens']:,} prompt + {est['completion_tokens']:,} "
                  f"completion tokens, estimated cost {cost}; nothing was sent")
        return
    if out_file is None:
        raise UsageError("--out is needed (or use --dry-run)")
    if out_file.suffix.lower() not in (".csv", ".jsonl"):
        raise UsageError(f"--out {out_file} must end in .csv or .jsonl")
    labeller = _labeller(spec, llm, base_url, api_key_env, timeout_s, concurrency, cache, constrain=not no_schema,
                         logprobs=logprobs)
    with _status(f"labelling {len(ds.texts)} texts", quiet) as say:
        run = label_texts(labeller, ds.texts, workers=concurrency, price_model=price_model or llm,
                          on_progress=lambda d, n: say(f"labelled {d} of {n}"))
    rows = [{"text": o.text, "label": o.label or "", "confidence": o.confidence,
             "status": "labelled" if o.label else "unlabelled", "raw": "" if o.label else o.raw} for o in run.outcomes]
    write_records(out_file, rows)
    unlabelled = sum(1 for r in rows if r["status"] == "unlabelled")
    real = "unknown (no price-table row)" if run.cost_usd is None else f"${run.cost_usd:.4f}"
    out.print(f"wrote {len(rows)} rows to {out_file}: {len(rows) - unlabelled} labelled, {unlabelled} unlabelled "
              f"(raw answers kept); {run.calls} calls sent, {run.cache_hits} answered from the cache; "
              f"{run.prompt_tokens:,} + {run.completion_tokens:,} tokens reported, cost {real} (estimate was {cost})")


@app.command("eval-llm")
def eval_llm(
    data: Path = typer.Argument(..., help="Labelled test file."),
    llm: str = typer.Option(..., "--llm", help="Model name the endpoint serves (also looked up in the price table)."),
    base_url: str = typer.Option(..., "--base-url", help="OpenAI-compatible endpoint."),
    task: Path = typer.Option(..., "--task", help="Task spec YAML (the same labels as the data)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write the LLM's predictions here (.jsonl) for 'offramp report --llm-predictions'."),
    text_col: str = TEXT_COL,
    label_col: str = LABEL_COL,
    api_key_env: str = API_KEY_ENV,
    concurrency: int = CONCURRENCY,
    timeout_s: float = typer.Option(60.0, "--timeout", help="Seconds to wait for one answer."),
    price_model: Optional[str] = PRICE_MODEL,
    cache: Optional[Path] = ANSWER_CACHE,
    logprobs: bool = LOGPROBS,
    send_chars: int = typer.Option(20_000, "--max-chars", min=1, help="Characters of each text sent to the LLM (longer texts are cut for the LLM only; they are scored whole)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    quiet: bool = QUIET,
):
    """Measure the LLM on a labelled test set: the same metrics as 'offramp eval', cost from real usage."""
    from offramp.data.io import read_dataset, write_records
    from offramp.teacher.label import TaskSpec

    spec = TaskSpec.load(task)
    ds = read_dataset(data, text_col=text_col, label_col=label_col)
    _warn(ds.warnings)
    if predictions is not None and predictions.suffix.lower() not in (".jsonl", ".csv", ".tsv"):
        raise UsageError(f"--predictions {predictions} must end in .jsonl, .csv or .tsv")
    labeller = _labeller(spec, llm, base_url, api_key_env, timeout_s, concurrency, cache, logprobs=logprobs)
    res, rows = _ask_llm(ds, spec, labeller, llm, price_model, send_chars, concurrency, quiet)
    if predictions:
        write_records(predictions, rows, option="--predictions")
    if as_json:
        print(json.dumps(res))
        return
    _print_side_by_side({**res, "model_bytes": None, "train_seconds": None}, None, first=f"LLM ({llm})")
    if predictions:
        out.print(f"predictions written to {predictions} (use: offramp report MODEL DATA --llm-predictions {predictions})")


def _ask_llm(ds, spec, labeller, llm, price_model, send_chars, concurrency, quiet):
    from offramp.evaluation.llm import run_llm_eval

    cut = sum(1 for t in ds.texts if len(t) > send_chars)
    if cut:
        _warn([f"{cut} texts are longer than {send_chars} characters: the LLM sees their first {send_chars}"])
    with _status(f"asking {llm} about {len(ds.texts)} texts", quiet) as say:
        return run_llm_eval(ds, spec, labeller, llm=llm, price_model=price_model, send_chars=send_chars,
                            workers=concurrency, on_progress=lambda d, n: say(f"{d} of {n}"))


@app.command("import-logs")
def import_logs_cmd(
    log_file: Path = typer.Argument(..., help="JSONL of logged chat completions (request/response, or stored completions)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Training file to write (.csv or .jsonl) with text,label."),
    role: str = typer.Option("user", "--role", help="Role of the message that is the input."),
    index: int = typer.Option(-1, "--index", help="Which message of that role (-1: the last)."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="Read the label from this key of a JSON reply."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated label set; replies naming none are skipped."),
):
    """Turn an LLM's production logs into a training file (text,label), counting what was skipped and why."""
    from offramp.data.io import write_records
    from offramp.teacher.logs import import_logs

    if out_file.suffix.lower() not in (".csv", ".jsonl"):
        raise UsageError(f"--out {out_file} must end in .csv or .jsonl")
    label_set = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    res = import_logs(log_file, role=role, index=index, label_field=label_field, labels=label_set)
    for reason, count in res.skipped.most_common():
        err.print(f"skipped {count} lines: {reason}", markup=False)
    if not res.rows:
        raise UsageError(f"no usable rows in {log_file} ({res.lines} lines read)", "check --role, --index and --label-field")
    write_records(out_file, [{"text": t, "label": lab} for t, lab in res.rows])
    out.print(f"wrote {len(res.rows)} rows to {out_file} from {res.lines} log lines "
              f"({sum(res.skipped.values())} skipped)")


# --------------------------------------------------------------------------- privacy and audit
@app.command()
def mask(
    data: Path = typer.Argument(..., help="Data file to mask (CSV, TSV, JSONL, Parquet)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Masked file to write (.csv, .tsv or .jsonl)."),
    columns: str = typer.Option("text", "--columns", help="Comma-separated columns to mask; the others are copied."),
    operator: str = typer.Option("placeholder", "--operator", help="redact, mask, placeholder or pseudonym."),
    entities: Optional[str] = typer.Option(None, "--entities", help="Comma-separated entity types (default: all)."),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="Minimum detection score."),
    ner: bool = typer.Option(False, "--ner/--no-ner", help="Also find names and places with Presidio + spaCy."),
    vault: Optional[Path] = typer.Option(None, "--vault", help="Pseudonym vault (SQLite) for --operator pseudonym."),
    conversation_col: Optional[str] = typer.Option(None, "--conversation-col", help="Column naming the conversation: the same value gets the same pseudonym within it."),
    quiet: bool = QUIET,
):
    """Mask personal data in a dataset before it is shared: e-mails, phones, cards, IBANs, IPs, IDs, names."""
    from collections import Counter

    from offramp.data.io import WRITABLE, read_records, write_records
    from offramp.privacy.guard import PrivacyGuard
    from offramp.privacy.vault import PseudonymVault

    if out_file.suffix.lower() not in WRITABLE:
        raise UsageError(f"--out {out_file} must end in {', '.join(WRITABLE)}")
    if out_file.resolve() == data.resolve():
        raise UsageError("--out must not be the input file", "write the masked copy to a new file")
    cols = [c.strip() for c in columns.split(",") if c.strip()]
    names, rows = read_records(data)
    if not rows:
        raise DataError(f"{data} has no data rows", "add at least one row below the header")
    missing = [c for c in cols + ([conversation_col] if conversation_col else []) if c not in names]
    if missing:
        raise UsageError(f"{data} has no column(s) {', '.join(missing)}", f"its columns are: {', '.join(names)}")
    if operator == "pseudonym" and vault is None:
        raise UsageError("--operator pseudonym needs --vault FILE", "the vault keeps the mapping to turn pseudonyms back")
    guard = PrivacyGuard(entities=[e.strip() for e in entities.split(",")] if entities else None,
                         threshold=threshold, ner=ner, operator=operator,
                         vault=PseudonymVault(vault) if vault else None)
    counts: Counter = Counter()
    masked_rows = []
    with _status(f"masking {len(rows)} rows", quiet) as say:
        for i, row in enumerate(rows):
            row = dict(row)  # empty cells stay empty (null in JSONL): nothing is invented or dropped
            conv = str(row.get(conversation_col) or "") if conversation_col else f"row-{i}"
            for c in cols:
                value = row[c]
                if value is None or isinstance(value, bool):
                    continue
                # numbers are checked too: a phone or card number stored as a number is still personal data
                m = guard.mask(value if isinstance(value, str) else str(value), conv)
                if m.counts:
                    row[c] = m.text
                    counts.update(m.counts)
            masked_rows.append(row)
            if i % 500 == 0:
                say(f"masked {i} of {len(rows)} rows")
    write_records(out_file, masked_rows)
    found = ", ".join(f"{k} {v}" for k, v in counts.most_common()) or "none"
    out.print(f"wrote {len(masked_rows)} rows to {out_file}; personal data replaced ({operator}): {found}")


audit_app = typer.Typer(help="Check and export the audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(log_file: Path = typer.Argument(..., help="Audit log (SQLite) written by offramp serve.")):
    """Check the hash chain: names the first record that was edited, deleted, inserted or moved."""
    from offramp.audit.log import AuditLog

    verdict = AuditLog(log_file, create=False).verify()
    if not verdict.ok:
        err.print(f"TAMPERED: {verdict.message}", markup=False)
        raise typer.Exit(3)
    out.print(f"OK: {verdict.message}")


@audit_app.command("export")
def audit_export(
    log_file: Path = typer.Argument(..., help="Audit log (SQLite) written by offramp serve."),
    out_file: Path = typer.Option(..., "--out", "-o", help="File to write (.jsonl or .csv)."),
):
    """Write the records for an auditor, with a summary (requests, routes, what left the machine)."""
    from offramp.audit.log import AuditLog, export

    log = AuditLog(log_file, create=False)
    verdict = log.verify()
    summary = export(log, out_file)
    where = ", ".join(f"{k} {v}" for k, v in summary["endpoints"].items())
    routes = ", ".join(f"{k} {v}" for k, v in sorted(summary["routes"].items()))
    out.print(f"{summary['requests']} requests, {summary['left_machine']} left the machine"
              f"{' (' + where + ')' if where else ''}; routes: {routes or 'none'}; "
              f"{summary['pii_found']} personal-data values found; wrote {out_file}")
    if not verdict.ok:
        err.print(f"warning: the chain does not verify: {verdict.message}", markup=False)
        raise typer.Exit(3)


# --------------------------------------------------------------------------- serve
@app.command()
def serve(
    model_dir: Path = typer.Argument(..., help="Model directory to serve, or a pipeline YAML (model, routing, actions, limits)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    api_keys: Optional[Path] = typer.Option(None, "--api-keys", help="File of SHA-256 hashes of accepted API keys (see 'offramp hash-key')."),
    rate_limit: float = typer.Option(600.0, "--rate-limit", help="Requests a minute per API key (or per client address without keys)."),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", min=1, help="Larger request bodies get 413."),
    max_text_chars: int = typer.Option(20_000, "--max-text-chars", min=1, help="Longer texts get 422."),
    max_batch: int = typer.Option(256, "--max-batch", min=1, help="Larger batches get 422."),
    llm_price_model: str = typer.Option("gpt-4o-mini", "--llm-price-model", help="Price-table row used for the dollars-saved metric."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="Hash-chained audit log (SQLite), one record per message (overrides the pipeline's 'audit:')."),
):
    """Serve a model over HTTP: /v1/classify, /v1/chat/completions, /healthz, /readyz, /metrics."""
    import uvicorn

    from offramp.serving.app import ServeSettings, create_app
    from offramp.serving.security import load_key_hashes

    _positive("--rate-limit", rate_limit)
    pipeline = None
    if model_dir.suffix.lower() in (".yaml", ".yml"):
        from offramp.pipeline.config import read_pipeline

        pipeline = model_dir
        limits = read_pipeline(pipeline).limits  # the pipeline's limits replace the flags' defaults
        max_body_bytes, max_text_chars, max_batch = limits.max_body_bytes, limits.max_text_chars, limits.max_batch
    settings = ServeSettings(model_dir=model_dir, max_body_bytes=max_body_bytes, max_text_chars=max_text_chars,
                             max_batch=max_batch, api_key_hashes=load_key_hashes(api_keys) if api_keys else None,
                             rate_limit_per_minute=rate_limit, llm_price_model=llm_price_model, pipeline_path=pipeline,
                             audit_path=audit)
    application = create_app(settings)
    err.print(f"serving {model_dir} on http://{host}:{port} (docs at /docs)", markup=False)
    # everything loaded so far lives as long as the server: keep it out of the garbage collector's
    # full passes, which otherwise walk it every few thousand requests (a 20-40 ms pause measured
    # as the p99 latency with benchmarks/serving.py)
    import gc

    gc.collect()
    gc.freeze()
    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)


@app.command("hash-key")
def hash_key_cmd(key: str = typer.Argument(..., help="An API key to accept.")):
    """Print the SHA-256 of an API key, for the file 'offramp serve --api-keys' reads."""
    from offramp.serving.security import hash_key

    if len(key) < 16:
        raise UsageError("an API key should have at least 16 characters")
    print(hash_key(key))


# --------------------------------------------------------------------------- entry point
def run(argv: list[str] | None = None) -> None:
    """Console entry point: maps every failure to a one-line message and an exit code."""
    try:
        app(args=argv)  # usage errors are the CLI framework's: it prints them and exits with 2
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except OfframpError as e:
        # plain text: a message may contain brackets that markup would eat
        err.print(f"error: {e.message}" + (f" (fix: {e.hint})" if e.hint else ""), markup=False)
        sys.exit(e.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # an internal failure: say what, not a traceback (OFFRAMP_DEBUG=1 shows it)
        if os.environ.get("OFFRAMP_DEBUG"):
            raise
        err.print(f"internal error: {type(e).__name__}: {e} (set OFFRAMP_DEBUG=1 for the traceback)", markup=False)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    run()
