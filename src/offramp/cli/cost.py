"""``cost``: price the move before building anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from offramp.cli.common import TEXT_COL, out
from offramp.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command()(cost)


def cost(
    messages_per_day: Optional[float] = typer.Option(None, "--messages-per-day", help="Traffic per day."),
    messages_per_month: Optional[float] = typer.Option(None, "--messages-per-month", help="Traffic per month."),
    messages_total: Optional[float] = typer.Option(
        None, "--messages-total", help="A one-off batch of this many messages."
    ),
    tokens_in: Optional[float] = typer.Option(None, "--tokens-in", help="Input tokens per message, prompt included."),
    tokens_out: float = typer.Option(5.0, "--tokens-out", help="Output tokens per message."),
    data: Optional[Path] = typer.Option(None, "--data", help="Estimate tokens per message from this file's texts."),
    text_col: str = TEXT_COL,
    prompt_tokens: int = typer.Option(
        150, "--prompt-tokens", min=0, help="Prompt tokens added to each message when estimating."
    ),
    model: Optional[List[str]] = typer.Option(
        None, "--model", help="API model(s) to price (default: every row of the table)."
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
        None, "--throughput", help="Small model: messages per second (default: measured in --model-dir, else 10,000)."
    ),
    model_dir: Optional[Path] = typer.Option(
        None, "--model-dir", help="Read the small model's measured throughput from here."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Price the move: paid LLM API vs self-hosted LLM vs the small model, at your volume."""
    from offramp.costs.calculator import CostInputs, compute_costs, estimate_tokens, load_prices, monthly_volume
    from offramp.data.io import read_dataset
    from offramp.evaluation.report import breakeven_text

    for name, v in (
        ("--messages-per-day", messages_per_day),
        ("--messages-per-month", messages_per_month),
        ("--messages-total", messages_total),
        ("--tokens-in", tokens_in),
        ("--gpu-usd-per-hour", gpu_usd_per_hour),
        ("--gpu-tokens-per-s", gpu_tokens_per_s),
        ("--cpu-usd-per-hour", cpu_usd_per_hour),
        ("--throughput", throughput),
    ):
        if v is not None and (v != v or v < 0 or v == float("inf")):
            raise UsageError(f"{name} must be a non-negative number, got {v}")
    if tokens_out < 0:
        raise UsageError(f"--tokens-out must be a non-negative number, got {tokens_out}")
    volume, one_off = monthly_volume(messages_per_day, messages_per_month, messages_total)
    prices = load_prices(prices_file)
    if tokens_in is None:
        if data is not None:
            ds = read_dataset(data, text_col=text_col, label_col=None, need_labels=False)
            tokens_in = estimate_tokens(ds.texts, prompt_tokens)
        else:
            tokens_in = prompt_tokens + 25.0
    measured = throughput is not None
    if throughput is None and model_dir is not None:
        from offramp.modeldir.store import read_metrics, verify_model_dir

        verify_model_dir(model_dir)
        throughput = read_metrics(model_dir).get("throughput_per_s")
        measured = throughput is not None
    inputs = CostInputs.from_prices(
        prices,
        messages_per_month=volume,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        throughput_per_s=throughput,
        throughput_measured=measured,
        gpu_usd_per_hour=gpu_usd_per_hour,
        gpu_tokens_per_s=gpu_tokens_per_s,
        cpu_usd_per_hour=cpu_usd_per_hour,
    )
    rep = compute_costs(inputs, prices, model or None)
    if as_json:
        print(json.dumps(rep.as_dict()))
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
