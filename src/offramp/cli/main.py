"""``offramp``: the command line. One module per command group, mirroring the library, each thin:
parse, call the library, render. The grammar every command follows is in :mod:`offramp.cli.options`.

Exit codes: 0 ok, 2 bad usage or data (one-line message naming the problem and the fix), 3 a
verification that failed (``audit verify``), 4 a candidate refused by the gate (``registry
retrain``), 1 internal error, 130 interrupted.
"""

from __future__ import annotations

import os
import sys

import typer

from offramp.cli import (
    audit,
    capture,
    costs,
    demo,
    encoders,
    evaluation,
    export,
    llm,
    monitoring,
    privacy,
    registry,
    scale,
    serving,
    training,
)
from offramp.cli.options import new_invocation
from offramp.cli.render import err
from offramp.errors import OfframpError

app = typer.Typer(
    name="offramp",
    help="Move a narrow text task off a paid LLM onto a small local model, and prove the move.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# in the order a migration uses them
GROUPS = (
    costs,
    llm,
    training,
    encoders,
    evaluation,
    export,
    scale,
    demo,
    serving,
    registry,
    capture,
    monitoring,
    privacy,
    audit,
)
for group in GROUPS:
    group.register(app)

# the library names the parameter an error is about; the CLI names its option
PARAM_FLAGS = {
    "text_col": "--text-col",
    "label_col": "--label-col",
    "out": "--out",
    "quality": "--quality",
    "time_limit": "--time-limit",
    "reject_target": "--reject-target",
    "oos_label": "--oos-label",
    "val": "--val",
    "latency_budget_ms": "--latency-budget-ms",
    "search_rows": "--search-rows",
    "label_precision": "--label-precision",
    "max_memory": "--max-memory",
    "registry": "--registry",
    "gate": "--gate",
    "prices": "--prices",
    "predictions": "--out",
    "price_model": "--price-model",
    "examples_from": "--examples-from",
    "budget": "--budget",
    "engine": "--engine",
    "rate": "--rate",
    "max_cost": "--max-cost",
    "max_class_drop": "--max-class-drop",
    "vault": "--vault",
    "volume": "--messages-per-day / --messages-per-month / --messages-total",
    "messages_per_day": "--messages-per-day",
    "messages_per_month": "--messages-per-month",
    "messages_total": "--messages-total",
    "tokens_in": "--tokens-in",
    "tokens_out": "--tokens-out",
    "gpu_usd_per_hour": "--gpu-usd-per-hour",
    "gpu_tokens_per_s": "--gpu-tokens-per-s",
    "cpu_usd_per_hour": "--cpu-usd-per-hour",
    "throughput": "--throughput",
    "format": "--format",
}


def error_line(e: OfframpError) -> str:
    """The one line a library error becomes: message, fix, and the option it is about."""
    flag = PARAM_FLAGS.get(e.param or "")
    line = f"error: {e.message}"
    if e.hint:
        line += f" (fix: {e.hint}" + (f"; option {flag})" if flag else ")")
    elif flag:
        line += f" (option {flag})"
    return line


def run(argv: list[str] | None = None) -> None:
    """Console entry point: maps every failure to a one-line message and an exit code."""
    new_invocation()
    try:
        app(args=argv)  # usage errors are the CLI framework's: it prints them and exits with 2
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except OfframpError as e:
        # plain text: a message may contain brackets that markup would eat
        err.print(error_line(e), markup=False)
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
