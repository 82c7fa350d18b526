"""``cost``: price the move before building anything."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from offramp.cli import options as o
from offramp.cli.render import emit, out


def register(app: typer.Typer) -> None:
    app.command()(cost)


def cost(
    data: Optional[Path] = typer.Argument(
        None, help="Texts to estimate the tokens per message from (CSV, TSV, JSONL, Parquet); optional."
    ),
    messages_per_day: Optional[float] = o.MESSAGES_PER_DAY,
    messages_per_month: Optional[float] = typer.Option(None, "--messages-per-month", help="Traffic per month."),
    messages_total: Optional[float] = typer.Option(
        None, "--messages-total", help="A one-off batch of this many messages."
    ),
    tokens_in: Optional[float] = typer.Option(None, "--tokens-in", help="Input tokens per message, prompt included."),
    tokens_out: float = typer.Option(5.0, "--tokens-out", help="Output tokens per message."),
    text_col: str = o.TEXT_COL,
    prompt_tokens: int = typer.Option(
        150, "--prompt-tokens", min=0, help="Prompt tokens added to each message when estimating."
    ),
    llms: Optional[List[str]] = typer.Option(
        None, "--llm", help=o.LLM.help + " Repeat it to price several (default: every row of the price table)."
    ),
    prices_file: Optional[Path] = typer.Option(
        None, "--prices", help="Your own price table (JSON, same shape as the bundled one)."
    ),
    gpu_usd_per_hour: Optional[float] = typer.Option(
        None, "--gpu-usd-per-hour", help="Self-hosted LLM: GPU price per hour."
    ),
    gpu_tokens_per_s: Optional[float] = typer.Option(
        None, "--gpu-tokens-per-s", help="Self-hosted LLM: tokens per second it serves."
    ),
    cpu_usd_per_hour: Optional[float] = typer.Option(
        None, "--cpu-usd-per-hour", help="Small model: CPU instance price per hour."
    ),
    throughput: Optional[float] = typer.Option(
        None, "--throughput", help="Small model: messages per second (default: measured in --model, else 10,000)."
    ),
    model: Optional[Path] = typer.Option(
        None, "--model", help=o.MODEL.help + " Its measured throughput prices the small model."
    ),
    model_dir: Optional[Path] = o.hidden("--model-dir"),
    data_opt: Optional[Path] = o.hidden("--data"),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Price the move: paid LLM API vs self-hosted LLM vs the small model, at your volume."""
    from offramp.costs.calculator import price_the_move
    from offramp.evaluation.report import breakeven_text

    data = o.pick(data, data_opt, "cost --data FILE", "the positional DATA")
    llms = list(llms or [])
    if model is not None and not model.exists() and "/" not in str(model):
        # before, --model named a price-table row: a bare name that is no directory is read so
        o.deprecated("cost --model NAME (a price-table row)", "--llm NAME")
        llms.append(str(model))
        model = None
    model = o.pick(model, model_dir, "cost --model-dir", "--model")
    rep, one_off = price_the_move(
        messages_per_day=messages_per_day,
        messages_per_month=messages_per_month,
        messages_total=messages_total,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        data=data,
        text_col=text_col,
        prompt_tokens=prompt_tokens,
        llms=llms or None,
        prices=prices_file,
        gpu_usd_per_hour=gpu_usd_per_hour,
        gpu_tokens_per_s=gpu_tokens_per_s,
        cpu_usd_per_hour=cpu_usd_per_hour,
        throughput=throughput,
        model=model,
    )
    if as_json:
        emit(rep.as_dict())
        return
    v = rep.inputs.messages_per_month
    period = "for the batch" if one_off else "per month"
    t = Table(
        title=f"{v:,.0f} messages {'in total' if one_off else 'a month'}, "
        f"{rep.inputs.tokens_in:.0f} tokens in / {rep.inputs.tokens_out:.0f} out per message"
    )
    for c in ("option", "$ per 1M messages", f"$ {period}", "Wh per 1M messages", "small model cheaper above"):
        t.add_column(c, justify="left" if c == "option" else "right")
    for r in rep.rows:
        usd_period = r.usd_per_message * v if one_off else r.usd_per_month
        t.add_row(
            r.name,
            f"${r.usd_per_million:,.4f}" if r.usd_per_million < 1 else f"${r.usd_per_million:,.2f}",
            f"${usd_period:,.2f}",
            f"{r.wh_per_million:,.1f}",
            breakeven_text(r),
        )
    out.print(t)
    for a in rep.assumptions:
        out.print(f"· {a}", style="dim", markup=False)
