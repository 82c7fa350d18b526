"""``offramp``: the command line. One module per command group, each thin: parse, call the library, render.

Exit codes: 0 ok, 2 bad usage or data (one-line message naming the problem and the fix), 3 a
verification that failed (``audit verify``), 4 a candidate refused by the gate (``retrain``),
1 internal error, 130 interrupted.
"""

from __future__ import annotations

import os
import sys

import typer

from offramp.cli import capture, cost, demo, labels, lifecycle, llm, models, privacy, serve
from offramp.cli.common import PARAM_FLAGS, err
from offramp.errors import OfframpError

app = typer.Typer(
    name="offramp",
    help="Move a narrow text task off a paid LLM onto a small local model, and prove the move.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for group in (models, labels, cost, demo, llm, privacy, serve, lifecycle, capture):
    group.register(app)


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
