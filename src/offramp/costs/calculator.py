"""Price the move before anyone builds it: a paid LLM API vs a self-hosted LLM vs the small model.

All figures are simple, stated arithmetic over a bundled price table (``prices.json``, each row
with its source and the date it was checked) that a user can replace:

* API:          tokens_in * price_in + tokens_out * price_out, per message.
* Self-hosted:  GPU $/hour spread over its token throughput (tokens_in + tokens_out per message);
                an always-on GPU costs at least its hourly price around the clock.
* Small model:  CPU $/hour spread over the model's measured messages/second; at least one
                always-on instance.
* Energy:       device watts x the time the device spends per message.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

from offramp.errors import DataError, UsageError
from offramp.types import JSONDict

HOURS_PER_MONTH = 730.0
CHARS_PER_TOKEN = 4.0  # a common rule of thumb for English text with GPT-style tokenizers
DEFAULT_PROMPT_TOKENS = 150  # instructions + label descriptions sent with every message
DEFAULT_OUTPUT_TOKENS = 5  # a label name and end-of-message
DEFAULT_THROUGHPUT = 10_000.0  # messages/s assumed for the small model when none is measured


def load_prices(path: str | Path | None = None) -> dict:
    """The bundled price table, or a user's JSON file of the same shape."""
    try:
        if path is None:
            text = resources.files("offramp.costs").joinpath("prices.json").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        table = json.loads(text)
    except FileNotFoundError:
        raise DataError(f"price table {path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"price table {path} is not valid JSON: {e}") from None
    models = table.get("models") if isinstance(table, dict) else None
    if not isinstance(models, dict) or not models:
        raise DataError(
            f"price table {path} has no 'models' object", 'expected {"models": {"name": {"input": .., "output": ..}}}'
        )
    for name, row in models.items():
        for k in ("input", "output"):
            v = row.get(k) if isinstance(row, dict) else None
            if not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v):
                raise DataError(f"price table {path}: model {name!r} needs a non-negative number for {k!r}")
    if path is not None:  # a user's table may list only API models: fill the rest from the bundled one
        bundled = load_prices(None)
        for k in ("self_hosted_llm", "local_model"):
            table.setdefault(k, bundled[k])
    return table


DEFAULT_MESSAGES_PER_DAY = 100_000  # the volume priced when none is given (cost, report)


def monthly_volume(
    per_day: float | None = None, per_month: float | None = None, total: float | None = None
) -> tuple[float, bool]:
    """(messages to price, whether it is a one-off batch) from at most one of the three ways to say it."""
    given = [x for x in (per_day, per_month, total) if x is not None]
    if len(given) > 1:
        raise UsageError("give one of: messages per day, per month, or a one-off total", param="volume")
    for v in given:
        if not math.isfinite(v) or v < 0:
            raise UsageError(f"a message volume must be a non-negative number, got {v}", param="volume")
    if per_day is not None:
        return per_day * 365 / 12, False
    if per_month is not None:
        return per_month, False
    if total is not None:
        return total, True
    return DEFAULT_MESSAGES_PER_DAY * 365 / 12, False


def estimate_tokens(texts: Sequence[str], prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> float:
    """Mean input tokens per message: characters / 4, plus the prompt sent with each message."""
    if not texts:
        raise DataError("cannot estimate tokens from an empty data file")
    return prompt_tokens + sum(len(t) for t in texts) / len(texts) / CHARS_PER_TOKEN


@dataclass
class CostInputs:
    messages_per_month: float
    tokens_in: float
    tokens_out: float = DEFAULT_OUTPUT_TOKENS
    gpu_usd_per_hour: float = 1.006
    gpu_tokens_per_s: float = 2500.0
    gpu_watts: float = 300.0
    cpu_usd_per_hour: float = 0.085
    cpu_watts: float = 20.0
    throughput_per_s: float = DEFAULT_THROUGHPUT
    throughput_measured: bool = False

    @classmethod
    def from_prices(
        cls,
        prices: dict,
        *,
        messages_per_month: float,
        tokens_in: float,
        tokens_out: float = DEFAULT_OUTPUT_TOKENS,
        throughput_per_s: float | None = None,
        throughput_measured: bool = False,
        gpu_usd_per_hour: float | None = None,
        gpu_tokens_per_s: float | None = None,
        cpu_usd_per_hour: float | None = None,
    ) -> CostInputs:
        """The inputs for a volume and token count, the rest from the price table unless given."""
        sh, lm = prices["self_hosted_llm"], prices["local_model"]
        return cls(
            messages_per_month=float(messages_per_month),
            tokens_in=float(tokens_in),
            tokens_out=float(tokens_out),
            gpu_usd_per_hour=float(gpu_usd_per_hour if gpu_usd_per_hour is not None else sh["gpu_usd_per_hour"]),
            gpu_tokens_per_s=float(gpu_tokens_per_s if gpu_tokens_per_s is not None else sh["tokens_per_second"]),
            gpu_watts=float(sh.get("gpu_watts", 300)),
            cpu_usd_per_hour=float(cpu_usd_per_hour if cpu_usd_per_hour is not None else lm["cpu_usd_per_hour"]),
            cpu_watts=float(lm.get("cpu_watts", 20)),
            throughput_per_s=float(throughput_per_s) if throughput_per_s is not None else DEFAULT_THROUGHPUT,
            throughput_measured=throughput_measured,
        )

    def validate(self) -> None:
        for name in (
            "messages_per_month",
            "tokens_in",
            "tokens_out",
            "gpu_usd_per_hour",
            "gpu_tokens_per_s",
            "cpu_usd_per_hour",
            "throughput_per_s",
            "gpu_watts",
            "cpu_watts",
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise UsageError(f"{name.replace('_', '-')} must be a non-negative number, got {v!r}")
        for name in ("gpu_tokens_per_s", "throughput_per_s"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name.replace('_', '-')} must be greater than zero")


@dataclass
class CostRow:
    name: str
    kind: str  # "api", "self-hosted", "local"
    usd_per_message: float
    usd_per_month: float
    wh_per_million: float
    source: str = ""
    breakeven_messages_per_month: float | None = None  # where the local model becomes cheaper

    @property
    def usd_per_million(self) -> float:
        return self.usd_per_message * 1e6

    def as_dict(self) -> JSONDict:
        return {
            "name": self.name,
            "kind": self.kind,
            "usd_per_million_messages": self.usd_per_million,
            "usd_per_month": self.usd_per_month,
            "wh_per_million_messages": self.wh_per_million,
            "breakeven_messages_per_month": self.breakeven_messages_per_month,
            "source": self.source,
        }


@dataclass
class CostReport:
    inputs: CostInputs
    rows: list[CostRow]
    assumptions: list[str] = field(default_factory=list)

    def row(self, name: str) -> CostRow:
        return next(r for r in self.rows if r.name == name)

    def as_dict(self) -> JSONDict:
        return {
            "inputs": self.inputs.__dict__,
            "rows": [r.as_dict() for r in self.rows],
            "assumptions": self.assumptions,
        }


def api_usd_per_message(price: dict, tokens_in: float, tokens_out: float) -> float:
    """Dollars an API call costs: tokens times the price per million tokens, in and out."""
    return (tokens_in * price["input"] + tokens_out * price["output"]) / 1e6


def local_usd_per_message(cpu_usd_per_hour: float, throughput_per_s: float) -> float:
    """Dollars a message costs on a CPU billed by the hour that classifies ``throughput_per_s`` a second."""
    return cpu_usd_per_hour / 3600 / throughput_per_s


def compute_costs(inputs: CostInputs, prices: dict, models: Sequence[str] | None = None) -> CostReport:
    """Cost rows for each API model, a self-hosted LLM and the local small model."""
    inputs.validate()
    table = prices["models"]
    names = list(models) if models else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise UsageError(
            f"unknown model(s) {', '.join(unknown)}; the price table has: {', '.join(table)}",
            "add a row to your own price table",
            param="prices",
        )
    v = inputs.messages_per_month
    tokens = inputs.tokens_in + inputs.tokens_out

    gpu_seconds_per_msg = tokens / inputs.gpu_tokens_per_s
    gpu_wh_per_million = inputs.gpu_watts * gpu_seconds_per_msg * 1e6 / 3600
    cpu_seconds_per_msg = 1.0 / inputs.throughput_per_s
    local_per_msg = local_usd_per_message(inputs.cpu_usd_per_hour, inputs.throughput_per_s)
    local_fixed = inputs.cpu_usd_per_hour * HOURS_PER_MONTH
    local = CostRow(
        "small model (local CPU)",
        "local",
        local_per_msg,
        max(local_fixed, v * local_per_msg),
        inputs.cpu_watts * cpu_seconds_per_msg * 1e6 / 3600,
        "measured throughput" if inputs.throughput_measured else "assumed throughput",
    )

    def breakeven(per_msg: float) -> float | None:
        # below this monthly volume the always-on CPU instance costs more than paying per message
        return local_fixed / (per_msg - local_per_msg) if per_msg > local_per_msg else None

    rows = []
    for n in names:
        per = api_usd_per_message(table[n], inputs.tokens_in, inputs.tokens_out)
        rows.append(CostRow(n, "api", per, v * per, gpu_wh_per_million, table[n].get("source", ""), breakeven(per)))
    sh_per = inputs.gpu_usd_per_hour / 3600 * gpu_seconds_per_msg
    gpu_fixed = inputs.gpu_usd_per_hour * HOURS_PER_MONTH
    # both are billed always-on: if the CPU instance costs less than the GPU, it is cheaper at any volume
    sh_breakeven = 0.0 if local_fixed <= gpu_fixed and local_per_msg <= sh_per else breakeven(sh_per)
    rows.append(
        CostRow(
            "self-hosted LLM (GPU)",
            "self-hosted",
            sh_per,
            max(gpu_fixed, v * sh_per),
            gpu_wh_per_million,
            "price table assumptions",
            sh_breakeven,
        )
    )
    rows.append(local)
    assumptions = [
        f"{inputs.tokens_in:.0f} input and {inputs.tokens_out:.0f} output tokens per message",
        f"self-hosted LLM: ${inputs.gpu_usd_per_hour}/h GPU at {inputs.gpu_tokens_per_s:.0f} tokens/s, "
        f"{inputs.gpu_watts:.0f} W; billed for at least {HOURS_PER_MONTH:.0f} h a month",
        f"small model: ${inputs.cpu_usd_per_hour}/h CPU at {inputs.throughput_per_s:,.0f} messages/s "
        f"({'measured' if inputs.throughput_measured else 'assumed'}), {inputs.cpu_watts:.0f} W; "
        f"billed for at least {HOURS_PER_MONTH:.0f} h a month",
        "API energy is not published; it is shown as the self-hosted GPU's energy for the same tokens",
        "break-even: the monthly volume above which one always-on CPU instance is cheaper than the row",
    ]
    return CostReport(inputs, rows, assumptions)


def price_the_move(
    *,
    messages_per_day: float | None = None,
    messages_per_month: float | None = None,
    messages_total: float | None = None,
    tokens_in: float | None = None,
    tokens_out: float = float(DEFAULT_OUTPUT_TOKENS),
    data: str | os.PathLike[str] | None = None,
    text_col: str = "text",
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    llms: Sequence[str] | None = None,
    prices: str | os.PathLike[str] | None = None,
    gpu_usd_per_hour: float | None = None,
    gpu_tokens_per_s: float | None = None,
    cpu_usd_per_hour: float | None = None,
    throughput: float | None = None,
    model: str | os.PathLike[str] | None = None,
) -> tuple[CostReport, bool]:
    """Price the move at a volume (per day, per month, or a one-off total): each paid LLM API
    (``llms``, default every row of the price table, or of ``prices``), a self-hosted LLM and the
    small model. Tokens per message come from ``tokens_in``, else from the texts of ``data`` plus
    ``prompt_tokens``; the small model's throughput from ``throughput``, else the one measured in
    the model directory ``model``. Returns (report, whether the volume is a one-off total)."""
    from offramp.data.io import read_dataset
    from offramp.modeldir.store import read_metrics, verify_model_dir

    for name, v in (
        ("messages_per_day", messages_per_day),
        ("messages_per_month", messages_per_month),
        ("messages_total", messages_total),
        ("tokens_in", tokens_in),
        ("tokens_out", tokens_out),
        ("gpu_usd_per_hour", gpu_usd_per_hour),
        ("gpu_tokens_per_s", gpu_tokens_per_s),
        ("cpu_usd_per_hour", cpu_usd_per_hour),
        ("throughput", throughput),
    ):
        if v is not None and (v != v or v < 0 or v == float("inf")):
            raise UsageError(f"{name.replace('_', ' ')} must be a non-negative number, got {v}", param=name)
    volume, one_off = monthly_volume(messages_per_day, messages_per_month, messages_total)
    table = load_prices(Path(prices) if prices is not None else None)
    if tokens_in is None:
        if data is not None:
            ds = read_dataset(data, text_col=text_col, label_col=None, need_labels=False)
            tokens_in = estimate_tokens(ds.texts, prompt_tokens)
        else:
            tokens_in = prompt_tokens + 25.0
    measured = throughput is not None
    if throughput is None and model is not None:
        verify_model_dir(model)
        throughput = read_metrics(model).get("throughput_per_s") or None  # 0: not measured
        measured = throughput is not None
    inputs = CostInputs.from_prices(
        table,
        messages_per_month=volume,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        throughput_per_s=throughput,
        throughput_measured=measured,
        gpu_usd_per_hour=gpu_usd_per_hour,
        gpu_tokens_per_s=gpu_tokens_per_s,
        cpu_usd_per_hour=cpu_usd_per_hour,
    )
    return compute_costs(inputs, table, list(llms) if llms else None), one_off
