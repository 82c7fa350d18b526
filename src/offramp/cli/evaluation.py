"""``eval``, ``report`` and ``eval-llm``: what a model (or the LLM) is worth on labelled data."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import typer

if TYPE_CHECKING:
    from offramp.evaluation.chain import ChainEvaluation
    from offramp.evaluation.results import MultiLabelEvaluation

from offramp.cli import options as o
from offramp.cli.render import (
    counter,
    emit,
    out,
    print_cascade,
    print_side_by_side,
    say,
    status,
    warn,
)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
    app.command()(report)
    app.command("eval-llm")(eval_llm)


def eval_cmd(
    model_dir: Path = typer.Argument(
        ..., help="Model directory written by 'offramp train' (or a registry), or a chain's pipeline file."
    ),
    data: Path = typer.Argument(..., help="Labelled test file."),
    text_col: str = o.TEXT_COL,
    label_col: str = o.LABEL_COL,
    max_chars: int = o.MAX_CHARS,
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Evaluate a model on a labelled file: quality, calibration, latency, throughput, size, cost.
    A chain's pipeline file is scored end to end and per stage, beside its flat model when there is one."""
    from offramp.data.io import read_dataset
    from offramp.estimators.multilabel import TfidfMultiLabel
    from offramp.evaluation.evaluate import evaluate
    from offramp.registry.records import load
    from offramp.runtime.config import is_pipeline_file

    if is_pipeline_file(model_dir):
        _eval_chain(model_dir, data, text_col, label_col, max_chars, as_json, quiet)
        return
    model = load(model_dir)
    if isinstance(model, TfidfMultiLabel):
        from offramp.evaluation.multilabel import evaluate_multilabel_file

        with status("evaluating", quiet):
            res = evaluate_multilabel_file(model, data, text_col=text_col, label_col=label_col, max_chars=max_chars)
        warn(res["warnings"])
        if as_json:
            emit(res)
            return
        _print_multilabel(res)
        return
    ds = read_dataset(data, text_col=text_col, label_col=label_col, max_chars=max_chars)
    with status("evaluating", quiet):
        rep = evaluate(model, ds)
    warn(rep.warnings)
    if as_json:
        emit(rep.to_dict())
        return
    print_side_by_side(rep, None)


def _eval_chain(
    pipeline: Path, data: Path, text_col: str, label_col: str, max_chars: int, as_json: bool, quiet: bool
) -> None:
    from offramp.chain.run import Chain
    from offramp.data.io import read_dataset
    from offramp.evaluation.chain import evaluate_chain
    from offramp.registry.records import load

    with _one_model_hint(pipeline, "eval"):
        chain = Chain.from_pipeline(pipeline, llm=False)
    ds = read_dataset(data, text_col=text_col, label_col=label_col, max_chars=max_chars)
    flat_dir = pipeline.parent / "flat"
    flat = load(flat_dir) if flat_dir.is_dir() else None
    with status("evaluating the chain", quiet):
        ev = evaluate_chain(chain, ds, flat=flat, flat_name=str(flat_dir), pipeline=str(pipeline))
    chain.close()
    warn(ev.warnings)
    if as_json:
        emit(ev.to_dict())
        return
    _print_chain(ev, f"{pipeline} on {data} ({ev.n:,} messages)")


@contextmanager
def _one_model_hint(pipeline: Path, command: str) -> Iterator[None]:
    """A pipeline file without stages serves one model: point at its model directory."""
    from offramp.errors import UsageError

    try:
        yield
    except UsageError as e:
        if "has no stages" in str(e):
            raise UsageError(
                f"{pipeline} serves one model: give its model directory", f"offramp {command} MODEL_DIR TEST_FILE"
            ) from None
        raise


def _print_chain(ev: ChainEvaluation, title: str) -> None:
    from rich.table import Table

    from offramp.evaluation.chain import overall_rows, per_stage_rows

    t = Table(title=title)
    for col in ("", "accuracy", "macro-F1", "p50 ms", "p99 ms", "msg/s (batch)"):
        t.add_column(col)
    for row in overall_rows(ev):
        t.add_row(*row)
    out.print(t)
    if ev.llm is not None:
        g = ev.llm
        out.print(
            f"on the {g.n:,} messages the LLM answered: macro-F1 chain {g.chain_macro_f1:.4f}, "
            f"LLM ({g.model}) {g.macro_f1:.4f}",
            markup=False,
        )
    s = Table(title="per stage (each judged on the messages that reached it by a right path)")
    for col in ("stage", "version", "reached", "judged", "accuracy", "macro-F1"):
        s.add_column(col)
    for row in per_stage_rows(ev):
        s.add_row(*row)
    out.print(s)


def _print_multilabel(res: MultiLabelEvaluation) -> None:
    out.print(
        f"{res['n']} messages: micro-F1 {res['micro_f1']:.4f}, macro-F1 {res['macro_f1']:.4f}, samples-F1 "
        f"{res['samples_f1']:.4f}, subset accuracy {res['subset_accuracy']:.4f}, Hamming loss {res['hamming_loss']:.4f}; "
        f"p99 {res['latency_ms']['p99']:.2f} ms per message",
        markup=False,
    )
    for lab, m in res["per_label"].items():
        out.print(
            f"  {lab}: precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f} ({m['support']})",
            markup=False,
        )


def report(
    model_dir: Path = typer.Argument(
        ..., help="Model directory written by 'offramp train' (or a registry), or a chain's pipeline file."
    ),
    data: Path = typer.Argument(..., help="Labelled test file."),
    llm_predictions: Optional[Path] = typer.Option(
        None, "--llm-predictions", help="The LLM's predictions on the same texts (columns text, prediction)."
    ),
    out_file: Path = typer.Option(
        Path("report.html"), "--out", "-o", help="HTML file to write (Markdown is written beside it)."
    ),
    text_col: str = o.TEXT_COL,
    label_col: str = o.LABEL_COL,
    messages_per_day: Optional[float] = o.MESSAGES_PER_DAY,
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
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Write the side-by-side report (HTML + Markdown): small model vs LLM, the cascade of both, charts, cost.
    A chain's pipeline file is reported end to end beside its flat model (and the LLM), per stage and per label."""
    from offramp.costs.calculator import DEFAULT_MESSAGES_PER_DAY
    from offramp.estimators.multilabel import TfidfMultiLabel
    from offramp.evaluation.report import build_report
    from offramp.registry.records import load
    from offramp.runtime.config import is_pipeline_file

    if is_pipeline_file(model_dir):
        from offramp.evaluation.chain import build_chain_report

        if route_threshold is not None:
            warn(["--route-threshold: a chain sends each stage's unsure band to the LLM itself; not used here"])
        with _one_model_hint(model_dir, "report"), status("evaluating the chain", quiet):
            html_path, md_path, ev = build_chain_report(
                model_dir, data, out_file, llm_predictions=llm_predictions, text_col=text_col, label_col=label_col
            )
        warn(ev.warnings)
        if as_json:
            emit({"report": str(html_path), "report_md": str(md_path), **ev.to_dict()})
            return
        _print_chain(ev, f"{model_dir} on {data} ({ev.n:,} messages)")
        say(f"report written to {html_path} and {md_path}", as_json)
        return
    model = load(model_dir)
    if isinstance(model, TfidfMultiLabel):
        from offramp.evaluation.multilabel import build_multilabel_report

        with status("evaluating", quiet):
            html_path, md_path, res, llm = build_multilabel_report(
                model,
                str(model_dir),
                data,
                out_file,
                llm_predictions=llm_predictions,
                text_col=text_col,
                label_col=label_col,
            )
        warn(res["warnings"])
        if as_json:
            emit({"report": str(html_path), "report_md": str(md_path), "evaluation": res, "llm": llm})
            return
        out.print(
            f"micro-F1 {res['micro_f1']:.4f}, macro-F1 {res['macro_f1']:.4f} on {res['n']} messages; "
            f"report written to {html_path} and {md_path}",
            markup=False,
        )
        if llm is not None:
            out.print(
                f"on the {llm['n']} messages the LLM answered: micro-F1 small model {llm['small']['micro_f1']:.4f}, "
                f"LLM {llm['llm']['micro_f1']:.4f}"
            )
        return
    with status("evaluating", quiet):
        html_path, md_path, small = build_report(
            model,
            data,
            out_file,
            llm_predictions=llm_predictions,
            messages_per_day=DEFAULT_MESSAGES_PER_DAY if messages_per_day is None else messages_per_day,
            route_threshold=route_threshold,
            llm_share=llm_share,
            text_col=text_col,
            label_col=label_col,
        )
    warn(small.warnings + [f"LLM: {w}" for w in (small.llm.warnings if small.llm else [])])
    if as_json:
        emit({"report": str(html_path), "report_md": str(md_path), **small.to_dict(), "cascade": small.cascade})
        return
    print_side_by_side(small, small.llm)
    if small.cascade:
        print_cascade(small.cascade)
    say(f"report written to {html_path} and {md_path}", as_json)


def eval_llm(
    data: Path = typer.Argument(..., help="Labelled test file."),
    llm: str = typer.Option(..., "--llm", help=o.LLM.help),
    base_url: str = typer.Option(..., "--base-url", help=o.BASE_URL.help),
    task: Path = typer.Option(..., "--task", help=o.TASK.help),
    out_file: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Write the LLM's predictions here (.jsonl, .csv or .tsv), for 'offramp report --llm-predictions'.",
    ),
    predictions: Optional[Path] = o.hidden("--predictions"),
    text_col: str = o.TEXT_COL,
    label_col: str = o.LABEL_COL,
    api_key_env: str = o.API_KEY_ENV,
    concurrency: int = o.CONCURRENCY,
    timeout_s: float = o.TIMEOUT,
    price_model: Optional[str] = o.PRICE_MODEL,
    cache: Optional[Path] = o.ANSWER_CACHE,
    logprobs: bool = o.LOGPROBS,
    send_chars: int = o.SEND_CHARS,
    old_send_chars: Optional[int] = o.hidden("--max-chars", min=1),
    examples_from: Optional[Path] = o.EXAMPLES_FROM,
    examples_per_label: int = o.EXAMPLES_PER_LABEL,
    raw_csv: bool = o.RAW_CSV,
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Measure the LLM on a labelled test set: the same metrics as 'offramp eval', cost from real usage."""
    from offramp.evaluation.llm import evaluate_llm

    out_file = o.pick(out_file, predictions, "eval-llm --predictions", "--out")
    send_chars = o.pick(send_chars, old_send_chars, "eval-llm --max-chars", "--send-chars", default=20_000)
    with status(f"asking {llm}", quiet) as progress:
        res = evaluate_llm(
            data,
            task=task,
            llm=llm,
            base_url=base_url,
            out=out_file,
            text_col=text_col,
            label_col=label_col,
            api_key_env=api_key_env,
            concurrency=concurrency,
            timeout_s=timeout_s,
            price_model=price_model,
            cache=cache,
            logprobs=logprobs,
            send_chars=send_chars,
            examples_from=examples_from,
            examples_per_label=examples_per_label,
            raw=raw_csv,
            on_progress=counter(progress, "answered"),
        )
    warn(res.warnings)
    if as_json:
        emit(res.to_dict())
        return
    print_side_by_side(res, None, first=f"LLM ({llm})")
    if out_file:
        say(f"predictions written to {out_file} (use: offramp report MODEL DATA --llm-predictions {out_file})", as_json)
