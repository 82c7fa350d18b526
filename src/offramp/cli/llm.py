"""``label``, ``import-logs`` and ``llm-server``: the LLM side of the move."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from offramp.cli import options as o
from offramp.cli.render import counter, emit, err, info, say, status, warn


def register(app: typer.Typer) -> None:
    app.command()(label)
    app.command("import-logs")(import_logs_cmd)
    app.command("llm-server")(llm_server)


def label(
    data: Path = typer.Argument(..., help="Texts to label (CSV, TSV, JSONL, Parquet)."),
    llm: str = typer.Option(..., "--llm", help=o.LLM.help),
    base_url: str = typer.Option(..., "--base-url", help=o.BASE_URL.help),
    out_file: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Labelled file to write (.csv, .tsv, .jsonl or .parquet); not needed with --dry-run."
    ),
    task: Path = typer.Option(..., "--task", help=o.TASK.help),
    text_col: str = o.TEXT_COL,
    api_key_env: str = o.API_KEY_ENV,
    concurrency: int = o.CONCURRENCY,
    timeout_s: float = o.TIMEOUT,
    price_model: Optional[str] = o.PRICE_MODEL,
    cache: Optional[Path] = o.ANSWER_CACHE,
    no_schema: bool = typer.Option(
        False, "--no-schema", help="Do not send a JSON schema (for servers that reject one)."
    ),
    logprobs: bool = o.LOGPROBS,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the token and dollar estimate; send nothing."),
    rate: Optional[float] = typer.Option(
        None, "--rate", help="At most this many requests a second, whatever sends them (all workers)."
    ),
    max_cost: Optional[float] = typer.Option(
        None,
        "--max-cost",
        help="Dollars this run may spend (priced by --price-model); texts past it are written as over_budget.",
    ),
    engine: str = o.ENGINE,
    address: Optional[str] = o.ADDRESS,
    workers: Optional[int] = o.WORKERS,
    max_chars: int = o.MAX_CHARS,
    examples_from: Optional[Path] = o.EXAMPLES_FROM,
    examples_per_label: int = o.EXAMPLES_PER_LABEL,
    budget: Optional[int] = typer.Option(
        None,
        "--budget",
        help="Label only N distinct texts, chosen where they help: a random warm start, then rounds of "
        "uncertainty sampling with a small model (re-asks are not counted).",
    ),
    seed: int = o.SEED,
    spreadsheet_safe: bool = o.SPREADSHEET_SAFE,
    raw_csv: bool = o.hidden("--raw-csv", default=False),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Label texts with an LLM teacher: constrained answers, cached (re-runs send nothing twice), costed."""
    from offramp.errors import UsageError
    from offramp.llm.label import label as run_label

    o.cells_as_they_are(raw_csv)

    if not dry_run and out_file is None:
        raise UsageError("--out is needed (or use --dry-run)")
    what = f"labelling {budget} texts chosen by uncertainty" if budget is not None else "labelling"
    with status(what, quiet) as progress:
        res = run_label(
            data,
            task=task,
            llm=llm,
            base_url=base_url,
            out=out_file,
            text_col=text_col,
            max_chars=max_chars,
            api_key_env=api_key_env,
            concurrency=concurrency,
            timeout_s=timeout_s,
            price_model=price_model,
            cache=cache,
            schema=not no_schema,
            logprobs=logprobs,
            rate=rate,
            max_cost=max_cost,
            engine=engine,
            address=address,
            workers=workers,
            examples_from=examples_from,
            examples_per_label=examples_per_label,
            budget=budget,
            seed=seed,
            dry_run=dry_run,
            spreadsheet_safe=spreadsheet_safe,
            on_progress=counter(progress, "labelled"),
        )
    warn(res.warnings)
    est = res.estimate
    cost = "unknown (no price-table row; pass --price-model)" if est["cost_usd"] is None else f"${est['cost_usd']:.4f}"
    if as_json:
        emit(res.to_dict())
        return
    if dry_run:
        say(
            f"{est['texts']} texts, about {est['prompt_tokens']:,} prompt + {est['completion_tokens']:,} "
            f"completion tokens, estimated cost {cost}; nothing was sent",
            as_json,
        )
        return
    run = res.run
    assert run is not None
    if res.rounds is not None:
        info(
            f"{len(res.rounds)} rounds: a random warm start of {res.rounds[0]}, then "
            f"{', '.join(map(str, res.rounds[1:])) or 'none'} texts by uncertainty",
            quiet,
        )
    over, unlabelled = res.count("over_budget"), res.count("unlabelled")
    real = "unknown (no price-table row)" if run.cost_usd is None else f"${run.cost_usd:.4f}"
    say(
        f"wrote {len(res.rows)} rows to {out_file}: {res.count('labelled')} labelled, {unlabelled} unlabelled "
        f"(raw answers kept); {run.calls} calls sent, {run.cache_hits} answered from the cache; "
        f"{run.prompt_tokens:,} + {run.completion_tokens:,} tokens reported, cost {real} (estimate was {cost})",
        as_json,
    )
    if over:
        say(
            f"{over} texts were not sent: the budget of ${res.budget_usd:g} was reached "
            f"(${res.spent_usd or 0:.4f} spent); run again with a larger --max-cost to label them "
            "(answers already received come from the cache)",
            as_json,
        )
    if res.requests_by_node:
        nodes = ", ".join(f"{n[:8]} {c:,}" for n, c in sorted(res.requests_by_node.items()))
        say(f"requests sent per Ray node: {nodes}", as_json)


def import_logs_cmd(
    log_file: Path = typer.Argument(
        ..., help="JSONL of logged chat completions (request/response, or stored completions)."
    ),
    out_file: Path = typer.Option(
        ..., "--out", "-o", help="Training file to write (.csv, .tsv, .jsonl or .parquet) with text,label."
    ),
    role: str = typer.Option("user", "--role", help="Role of the message that is the input."),
    index: int = typer.Option(-1, "--index", help="Which message of that role (-1: the last)."),
    label_field: Optional[str] = typer.Option(
        None, "--label-field", help="Read the label from this key of a JSON reply."
    ),
    labels: Optional[str] = typer.Option(
        None, "--labels", help="Comma-separated label set; replies naming none are skipped."
    ),
    multi_label: bool = o.MULTI_LABEL,
    label_sep: str = o.LABEL_SEP,
    task_out: Optional[Path] = typer.Option(
        None,
        "--task-out",
        help="Also learn the task from the logs and write its task file (.yaml) for proxy mode: the "
        "prompt's template (the message is what varies), the answer's shape and the labels; the "
        "training texts are then the messages, without the template.",
    ),
    min_requests: int = typer.Option(
        20, "--min-requests", min=2, help="With --task-out: the fewest requests a prompt needs to count as the task."
    ),
    spreadsheet_safe: bool = o.SPREADSHEET_SAFE,
    raw_csv: bool = o.hidden("--raw-csv", default=False),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Turn an LLM's production logs into a training file (text,label), counting what was skipped and why;
    with --task-out, also the task file that puts offramp in front of the app (proxy mode)."""
    from offramp.llm.logs import import_logs

    o.cells_as_they_are(raw_csv)

    label_set = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    if task_out is not None:
        if multi_label:
            from offramp.errors import UsageError

            raise UsageError("--task-out learns a single-label task; leave out --multi-label")
        _learn(log_file, out_file, task_out, label_set, label_field, min_requests, spreadsheet_safe, as_json)
        return
    res = import_logs(
        log_file,
        role=role,
        index=index,
        label_field=label_field,
        labels=label_set,
        multi_label=multi_label,
        sep=label_sep,
        out=out_file,
        spreadsheet_safe=spreadsheet_safe,
    )
    for reason, count in res.skipped.most_common():
        err.print(f"skipped {count} lines: {reason}", markup=False)
    if as_json:
        emit(res.to_dict())
        return
    say(
        f"wrote {len(res.rows)} rows to {out_file} from {res.lines} log lines ({sum(res.skipped.values())} skipped)",
        as_json,
    )


def _learn(
    log_file: Path,
    out_file: Path,
    task_out: Path,
    labels: list[str] | None,
    label_field: str | None,
    min_requests: int,
    spreadsheet_safe: bool,
    as_json: bool,
) -> None:
    from offramp.proxy.learn import learn_task

    res = learn_task(
        log_file,
        labels=labels,
        label_field=label_field,
        min_requests=min_requests,
        out=out_file,
        task_out=task_out,
        spreadsheet_safe=spreadsheet_safe,
    )
    for reason, count in res.skipped.most_common():
        err.print(f"skipped {count} lines: {reason}", markup=False)
    if as_json:
        emit(res.to_dict())
        return
    t = res.task
    shape = (
        "a bare label"
        if t.shape == "label"
        else f"JSON field '{t.key}'"
        if t.shape == "json_field"
        else f"tool call {t.tool}({t.key})"
    )
    say(
        f"learned task '{t.name}' from {len(res.rows)} requests: template {t.template!r}, answer {shape}, "
        f"{len(t.labels)} labels" + (f", {len(t.turns)} example turns" if t.turns else ""),
        as_json,
    )
    if res.unfilled:
        warn(
            [
                f"the schema also requires {', '.join(res.unfilled)}: such requests go to the LLM unless "
                f"{task_out} gives a value for them (fill: {{{res.unfilled[0]}: ...}})"
            ]
        )
    say(f"wrote {len(res.rows)} rows to {out_file} and the task file {task_out} from {res.lines} log lines", as_json)


def llm_server(
    llm: Optional[str] = typer.Option(
        None,
        "--llm",
        help=o.LLM.help
        + " Here the local LLM to serve: qwen2.5-coder-1.5b-instruct (default) or smollm2-135m-instruct.",
    ),
    old_model: Optional[str] = o.hidden("--model"),
    host: str = o.HOST,
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="Port to listen on."),
    n_ctx: int = typer.Option(4096, "--ctx", min=256, help="Context window in tokens."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: llama.cpp's)."),
    path_only: bool = typer.Option(False, "--path", help="Assemble the model if needed, print its file path, exit."),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Serve a pinned local LLM with llama.cpp's OpenAI-compatible server (base URL http://HOST:PORT/v1,
    model name = --llm); the model file is assembled from its packages and hash-checked first.
    With --json the server's log lines are written to stdout as JSON objects."""
    import os

    from offramp.llm.server import gguf_path, server_command

    name = o.pick(llm, old_model, "llm-server --model", "--llm") or "qwen2.5-coder-1.5b-instruct"
    if path_only:
        path = gguf_path(name)
        if as_json:
            emit({"llm": name, "path": str(path)})
        else:
            print(path)
        return
    cmd = server_command(name, host=host, port=port, n_ctx=n_ctx, threads=threads)
    url = f"http://{host}:{port}/v1"
    if not as_json:
        info(f"serving {name} on {url} (Ctrl-C stops it)", quiet)
        os.execv(cmd[0], cmd)
    _relay_as_json(cmd, name, url)


def _relay_as_json(cmd: list[str], name: str, url: str) -> None:
    """Run the server as a child, each line it writes becoming a JSON log line on stdout; a stop
    signal is passed on to it."""
    import json
    import signal
    import subprocess
    import sys
    import threading
    import time

    def line(level: str, message: str) -> None:
        doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "level": level, "logger": "llm-server", "message": message}
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    line("info", f"serving {name} on {url}")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: proc.terminate())

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            text = raw.rstrip("\n")
            if text:
                line("error" if "error" in text.lower() else "info", text)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    code = proc.wait()
    t.join(5)
    line("info", f"the server stopped (exit code {code})")
    raise SystemExit(0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code)
