"""The CLI's grammar in one place: every option that more than one command takes is defined here
once, so a flag name has one meaning, one help text and one default everywhere.

The rules (checked for every command by ``tests/test_cli_grammar.py``):

* the input data is positional; every path a command writes is ``-o/--out``;
* every command takes ``--json`` (one JSON object on stdout and nothing else there; ``serve`` and
  ``llm-server`` write JSON log lines) and ``-q/--quiet`` (no progress or information on stderr);
* ``--model`` is a model directory or a registry, and nothing else;
* a spelling that was renamed keeps working as a hidden alias that prints one line on stderr
  (:func:`deprecated`), so scripts written against an older offramp run unchanged.
"""

from __future__ import annotations

from typing import Any

import typer

from offramp.cli.render import err


def option(*names: str, help: str, default: Any = None, **kw: Any) -> Any:
    """A typer option (a small helper so the definitions below read as a table)."""
    return typer.Option(default, *names, help=help, **kw)


def hidden(*names: str, default: Any = None, **kw: Any) -> Any:
    """A hidden option: an older spelling kept working (see :func:`deprecated`)."""
    return typer.Option(default, *names, hidden=True, **kw)


_said: set[str] = set()  # the deprecated spellings already named in this invocation


def new_invocation() -> None:
    """Start one command's run: every deprecated spelling it uses is named again."""
    _said.clear()


def deprecated(old: str, new: str) -> None:
    """One line on stderr (once per spelling and run): ``old`` still works, ``new`` is the spelling."""
    if old in _said:
        return
    _said.add(old)
    err.print(f"offramp: {old} is deprecated; use {new} (it works the same)", markup=False)


def pick(new: Any, old: Any, old_name: str, new_name: str, default: Any = None) -> Any:
    """The value of a renamed option: the new spelling's, else the old one's (said deprecated)."""
    if old is not None and old is not False:
        deprecated(old_name, new_name)
        if new is None or new == default:
            return old
    return new


# -- every command -------------------------------------------------------------------------
JSON = option("--json", help="Print one JSON object on stdout (and nothing else there).", default=False)
QUIET = option("--quiet", "-q", help="No progress or information on stderr (warnings still show).", default=False)

# -- data --------------------------------------------------------------------------------------
TEXT_COL = option("--text-col", help="Name of the column holding the texts.", default="text")
LABEL_COL = option("--label-col", help="Name of the column holding the labels.", default="label")
MAX_CHARS = option(
    "--max-chars",
    help="The longest text taken, in characters: longer texts in a file are cut (with a warning); "
    "the service answers 422 for them.",
    default=20_000,
    min=1,
)
MULTI_LABEL = option(
    "--multi-label",
    help="A message may carry several labels (or none), joined by --label-sep in a cell "
    "(or a JSON list in JSONL/Parquet).",
    default=False,
)
LABEL_SEP = option("--label-sep", help="With --multi-label: what joins the labels in a cell.", default="|")
RAW_CSV = option(
    "--raw-csv",
    help="Write CSV/TSV cells as they are (by default text starting with = + - @ gets a leading ' so "
    "spreadsheets do not run it).",
    default=False,
)
SPREADSHEET_SAFE = option(
    "--spreadsheet-safe",
    help="Put a ' before CSV/TSV cells starting with = + - @ (tab, CR) so spreadsheets do not run them as "
    "formulas; this changes the data (by default cells are written exactly as they are).",
    default=False,
)


def cells_as_they_are(raw_csv: bool) -> None:
    """``--raw-csv`` on a data command: what it asked for is the default now (one stderr line)."""
    if raw_csv and "--raw-csv" not in _said:
        _said.add("--raw-csv")
        err.print(
            "offramp: --raw-csv is no longer needed: data files are written exactly as they are "
            "(--spreadsheet-safe neutralises formulas)",
            markup=False,
        )


SEED = option("--seed", help="Random seed: the same data and seed give the same result.", default=0)
QUALITY = option(
    "--quality",
    help="The model search: fast (TF-IDF), balanced or best (add static and sentence embeddings; the "
    "most accurate wins), or auto (balanced's candidates when the encoder is installed, and the "
    "cheapest within one standard error of the best wins; fast for checking labels and for several "
    "labels per message).",
    default="auto",
)
TIME_LIMIT_HELP = (
    "Seconds the model search may take, or 'none' to try every candidate (the same data and seed then give "
    "the same model on any machine). The first candidate always runs; candidates that would not fit are "
    "skipped and listed."
)
TIME_LIMIT = option("--time-limit", help=TIME_LIMIT_HELP + " Default 60 / 180 / 1800 s for fast / balanced / best.")
GATE = "A labelled gate set: the messages a retrain is judged on."

# -- models --------------------------------------------------------------------------------------
MODEL = option("--model", help="A model directory or a registry (its current version).")

# -- the LLM side ----------------------------------------------------------------------------------
LLM = option("--llm", help="The LLM's model name, as its endpoint serves it (also its price-table row).")
BASE_URL = option("--base-url", help="The LLM's OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1.")
TASK = option("--task", help="Task spec YAML: labels with descriptions, optional instructions and examples.")
API_KEY_ENV = option(
    "--api-key-env", help="Environment variable holding the API key (never printed).", default="OPENAI_API_KEY"
)
CONCURRENCY = option("--concurrency", help="LLM requests in flight at once.", default=4, min=1, max=64)
TIMEOUT = option("--timeout", help="Seconds to wait for one LLM answer.", default=60.0)
PRICE_MODEL = option(
    "--price-model", help="Price-table row the LLM's cost is priced by (default: the --llm row, or gpt-4o-mini)."
)
ANSWER_CACHE = option("--cache", help="LLM answer cache (SQLite; default ~/.cache/offramp/llm-answers.sqlite).")
LOGPROBS = typer.Option(
    True,
    "--logprobs/--no-logprobs",
    help="Ask for token logprobs and report the answer's probability as its confidence (skipped if the "
    "server refuses them).",
)
SEND_CHARS = option(
    "--send-chars",
    help="Characters of each text sent to the LLM (longer texts are cut for the LLM only; they are scored whole).",
    default=20_000,
    min=1,
)
EXAMPLES_FROM = option(
    "--examples-from",
    help="Labelled training file (text,label) to draw few-shot examples from; never the data being scored.",
)
EXAMPLES_PER_LABEL = option(
    "--examples-per-label", help="Few-shot examples per label (--examples-from).", default=4, min=0
)

# -- where work runs -------------------------------------------------------------------------------
ENGINE = option(
    "--engine", help="Where the work runs: 'local' (this machine) or 'ray' (a Ray cluster).", default="local"
)
ADDRESS = option(
    "--address",
    help="With --engine ray: the cluster ('auto', HOST:PORT, ray://HOST:PORT); default a Ray started here.",
)
WORKERS = option(
    "--workers",
    help="Parallel workers doing the command's work: processes here (Ray actors with --engine ray). "
    "Default: the command's own (every core; one server process).",
    min=1,
    max=256,
)

# -- volumes and money -------------------------------------------------------------------------------
MESSAGES_PER_DAY = option(
    "--messages-per-day", help="Traffic per day the costs are priced at (default 100,000 when no volume is given)."
)
HOST = option("--host", help="Interface to listen on.", default="127.0.0.1")
SINCE = option("--since", help="Only rows since: an ISO date/time or an age (24h, 7d).")
