"""``label``, ``eval-llm`` and ``import-logs``: the LLM side of the move."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from offramp.cli.common import (
    ANSWER_CACHE,
    API_KEY_ENV,
    CONCURRENCY,
    LABEL_COL,
    LOGPROBS,
    MAX_CHARS,
    PRICE_MODEL,
    QUIET,
    RAW_CSV,
    TEXT_COL,
    err,
    info,
    out,
    positive,
    print_side_by_side,
    status,
    warn,
)
from offramp.errors import UsageError

LLM = typer.Option(..., "--llm", help="Model name the endpoint serves (also looked up in the price table).")
EXAMPLES_FROM = typer.Option(
    None,
    "--examples-from",
    help="Labelled training file (text,label) to draw few-shot examples from; never the data being scored.",
)
EXAMPLES_PER_LABEL = typer.Option(
    4, "--examples-per-label", min=0, help="Few-shot examples per label (--examples-from)."
)


def with_examples(spec: Any, examples_from: Path | None, per_label: int, scored: list[str], seed: int = 0) -> Any:
    """``spec`` plus few-shot examples drawn from ``examples_from``; refuses examples that are also
    among the texts being labelled or scored (the LLM would be shown the answer)."""
    if examples_from is None or per_label == 0:
        return spec
    from offramp.data.io import read_dataset
    from offramp.data.text import normalize

    ex = read_dataset(examples_from)
    assert ex.labels is not None
    out_spec = spec.with_examples(ex.texts, ex.labels, per_label, seed=seed)
    seen = {normalize(t) for t in scored}
    leaked = [e for e in out_spec.examples[len(spec.examples) :] if normalize(str(e["text"])) in seen]
    if leaked:
        raise UsageError(
            f"{len(leaked)} few-shot examples drawn from {examples_from} are also in the data given to the LLM",
            "draw examples from the training split, never from the texts being labelled or scored",
        )
    missing = [k for k in spec.labels if not any(e["label"] == k for e in out_spec.examples)]
    if missing:
        warn([f"{examples_from} has no short example of {', '.join(missing)}: the prompt describes it only"])
    return out_spec


def register(app: typer.Typer) -> None:
    app.command()(label)
    app.command("eval-llm")(eval_llm)
    app.command("import-logs")(import_logs_cmd)
    app.command("llm-server")(llm_server)


def llm_server(
    model: str = typer.Option(
        "qwen2.5-coder-1.5b-instruct",
        "--model",
        help="Local LLM: qwen2.5-coder-1.5b-instruct or smollm2-135m-instruct.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="Port to listen on."),
    n_ctx: int = typer.Option(4096, "--ctx", min=256, help="Context window in tokens."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: llama.cpp's)."),
    path_only: bool = typer.Option(False, "--path", help="Assemble the model if needed, print its file path, exit."),
) -> None:
    """Serve a pinned local LLM with llama.cpp's OpenAI-compatible server (base URL http://HOST:PORT/v1,
    model name = --model); the model file is assembled from its packages and hash-checked first."""
    import os

    from offramp.llm.server import gguf_path, server_command

    if path_only:
        print(gguf_path(model))
        return
    cmd = server_command(model, host=host, port=port, n_ctx=n_ctx, threads=threads)
    err.print(f"serving {model} on http://{host}:{port}/v1 (Ctrl-C stops it)", markup=False)
    os.execv(cmd[0], cmd)


def ask_llm(
    ds: Any, spec: Any, labeller: Any, llm: str, price_model: str | None, send_chars: int, concurrency: int, quiet: bool
) -> tuple[Any, list[dict[str, Any]]]:
    """The LLM's answers on ``ds`` scored like the small model: (EvalReport, prediction rows)."""
    from offramp.evaluation.llm import run_llm_eval

    cut = sum(1 for t in ds.texts if len(t) > send_chars)
    if cut:
        warn([f"{cut} texts are longer than {send_chars} characters: the LLM sees their first {send_chars}"])
    with status(f"asking {llm} about {len(ds.texts)} texts", quiet) as say:
        return run_llm_eval(
            ds,
            spec,
            labeller,
            llm=llm,
            price_model=price_model,
            send_chars=send_chars,
            workers=concurrency,
            on_progress=lambda d, n: say(f"{d} of {n}"),
        )


def label(
    data: Path = typer.Argument(..., help="Texts to label (CSV, TSV, JSONL, Parquet)."),
    llm: str = LLM,
    base_url: str = typer.Option(..., "--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1"),
    out_file: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Labelled file to write (.csv or .jsonl); not needed with --dry-run."
    ),
    task: Path = typer.Option(
        ..., "--task", help="Task spec YAML: labels with descriptions, optional instructions and examples."
    ),
    text_col: str = TEXT_COL,
    api_key_env: str = API_KEY_ENV,
    concurrency: int = CONCURRENCY,
    timeout_s: float = typer.Option(30.0, "--timeout", help="Seconds to wait for one answer."),
    price_model: Optional[str] = PRICE_MODEL,
    cache: Optional[Path] = ANSWER_CACHE,
    no_schema: bool = typer.Option(
        False, "--no-schema", help="Do not send a JSON schema (for servers that reject one)."
    ),
    logprobs: bool = LOGPROBS,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the token and dollar estimate; send nothing."),
    rate: Optional[float] = typer.Option(
        None, "--rate", help="At most this many requests a second, whatever sends them (all workers)."
    ),
    max_cost: Optional[float] = typer.Option(
        None,
        "--max-cost",
        help="Dollars this run may spend (priced by --price-model); texts past it are written as over_budget.",
    ),
    engine: str = typer.Option("local", "--engine", help="Who sends the requests: 'local' (threads here) or 'ray'."),
    address: Optional[str] = typer.Option(
        None, "--address", help="With --engine ray: the cluster ('auto', HOST:PORT, ray://HOST:PORT); default local."
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1, help="With --engine ray: sending actors (default one per CPU of the cluster)."
    ),
    max_chars: int = MAX_CHARS,
    examples_from: Optional[Path] = EXAMPLES_FROM,
    examples_per_label: int = EXAMPLES_PER_LABEL,
    budget: Optional[int] = typer.Option(
        None,
        "--budget",
        help="Label only N distinct texts, chosen where they help: a random warm start, then rounds of "
        "uncertainty sampling with a small model (re-asks are not counted).",
    ),
    seed: int = typer.Option(0, "--seed", help="With --budget: fixes the warm start (and so every round)."),
    raw_csv: bool = RAW_CSV,
    quiet: bool = QUIET,
) -> None:
    """Label texts with an LLM teacher: constrained answers, cached (re-runs send nothing twice), costed."""
    from offramp.data.io import read_dataset, write_records
    from offramp.llm.label import TaskSpec, estimate, label_run, label_texts, make_labeller

    positive("--rate", rate)
    positive("--max-cost", max_cost)
    spec = TaskSpec.load(task)
    ds = read_dataset(data, text_col=text_col, label_col=None, need_labels=False, max_chars=max_chars)
    warn(ds.warnings)
    if budget is not None:
        distinct = len(set(ds.texts))
        if not 1 <= budget <= distinct:
            raise UsageError(
                f"--budget {budget} must be between 1 and the number of distinct texts in {data} ({distinct})",
                f"use --budget {distinct} or less, or leave it out to label every text",
            )
    spec = with_examples(spec, examples_from, examples_per_label, ds.texts)
    est = estimate(spec, ds.texts, price_model or llm)
    cost = "unknown (no price-table row; pass --price-model)" if est["cost_usd"] is None else f"${est['cost_usd']:.4f}"
    if dry_run:
        out.print(
            f"{est['texts']} texts, about {est['prompt_tokens']:,} prompt + {est['completion_tokens']:,} "
            f"completion tokens, estimated cost {cost}; nothing was sent"
        )
        return
    if out_file is None:
        raise UsageError("--out is needed (or use --dry-run)")
    if out_file.suffix.lower() not in (".csv", ".jsonl"):
        raise UsageError(f"--out {out_file} must end in .csv or .jsonl")
    if engine not in ("local", "ray"):
        raise UsageError(f"--engine {engine!r} is not known", "use --engine local or --engine ray")
    if engine == "local" and (address or workers):
        raise UsageError("--address and --workers go with --engine ray")
    labeller = make_labeller(
        spec,
        llm,
        base_url,
        api_key_env=api_key_env,
        timeout_s=timeout_s,
        concurrency=concurrency,
        cache=cache,
        constrain=not no_schema,
        logprobs=logprobs,
        rate_per_s=rate,
        max_cost_usd=max_cost,
        price_model=price_model,
    )
    sender = None
    if engine == "ray":
        from offramp.llm.ray import RayChatClient

        with status("connecting to Ray", quiet):
            sender = labeller.client = RayChatClient(labeller.client, workers, address)  # type: ignore[assignment]
    try:
        if budget is not None:
            from offramp.llm.active import select_and_label

            outcomes: list[Any] = []

            def ask(batch: list[str]) -> list[str | None]:
                got = label_texts(labeller, batch, workers=concurrency, price_model=price_model or llm).outcomes
                outcomes.extend(got)
                return [o.label for o in got]

            with status(f"labelling {budget} of {len(ds.texts)} texts chosen by uncertainty", quiet) as say:
                active = select_and_label(
                    ds.texts, budget, ask, seed=seed, on_progress=lambda d, n: say(f"labelled {d} of {n}")
                )
            run = label_run(labeller, outcomes, price_model or llm)
            info(
                f"{len(active.rounds)} rounds: a random warm start of {active.rounds[0]}, then "
                f"{', '.join(map(str, active.rounds[1:])) or 'none'} texts by uncertainty",
                quiet,
            )
        else:
            with status(f"labelling {len(ds.texts)} texts", quiet) as say:
                run = label_texts(
                    labeller,
                    ds.texts,
                    workers=concurrency,
                    price_model=price_model or llm,
                    on_progress=lambda d, n: say(f"labelled {d} of {n}"),
                )
    finally:
        if sender is not None:
            sender.close()
    rows = [
        {
            "text": o.text,
            "label": o.label or "",
            "confidence": o.confidence,
            "status": "labelled" if o.label is not None else "over_budget" if o.over_budget else "unlabelled",
            "raw": "" if o.label is not None else o.raw,
            "model": llm,
            "latency_ms": o.latency_ms,
        }
        for o in run.outcomes
    ]
    write_records(out_file, rows, raw=raw_csv)
    over = sum(1 for r in rows if r["status"] == "over_budget")
    unlabelled = sum(1 for r in rows if r["status"] != "labelled") - over
    real = "unknown (no price-table row)" if run.cost_usd is None else f"${run.cost_usd:.4f}"
    out.print(
        f"wrote {len(rows)} rows to {out_file}: {len(rows) - unlabelled - over} labelled, {unlabelled} unlabelled "
        f"(raw answers kept); {run.calls} calls sent, {run.cache_hits} answered from the cache; "
        f"{run.prompt_tokens:,} + {run.completion_tokens:,} tokens reported, cost {real} (estimate was {cost})"
    )
    if over:
        assert labeller.budget is not None
        out.print(
            f"{over} texts were not sent: the budget of ${labeller.budget.max_usd:g} was reached "
            f"(${labeller.budget.spent:.4f} spent); run again with a larger --max-cost to label them "
            "(answers already received come from the cache)"
        )
    if sender is not None and sender.requests_by_node:
        nodes = ", ".join(f"{n[:8]} {c:,}" for n, c in sorted(sender.requests_by_node.items()))
        out.print(f"requests sent per Ray node: {nodes}")


def eval_llm(
    data: Path = typer.Argument(..., help="Labelled test file."),
    llm: str = LLM,
    base_url: str = typer.Option(..., "--base-url", help="OpenAI-compatible endpoint."),
    task: Path = typer.Option(..., "--task", help="Task spec YAML (the same labels as the data)."),
    predictions: Optional[Path] = typer.Option(
        None, "--predictions", help="Write the LLM's predictions here (.jsonl) for 'offramp report --llm-predictions'."
    ),
    text_col: str = TEXT_COL,
    label_col: str = LABEL_COL,
    api_key_env: str = API_KEY_ENV,
    concurrency: int = CONCURRENCY,
    timeout_s: float = typer.Option(60.0, "--timeout", help="Seconds to wait for one answer."),
    price_model: Optional[str] = PRICE_MODEL,
    cache: Optional[Path] = ANSWER_CACHE,
    logprobs: bool = LOGPROBS,
    send_chars: int = typer.Option(
        20_000,
        "--max-chars",
        min=1,
        help="Characters of each text sent to the LLM (longer texts are cut for the LLM only; they are scored whole).",
    ),
    examples_from: Optional[Path] = EXAMPLES_FROM,
    examples_per_label: int = EXAMPLES_PER_LABEL,
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    raw_csv: bool = RAW_CSV,
    quiet: bool = QUIET,
) -> None:
    """Measure the LLM on a labelled test set: the same metrics as 'offramp eval', cost from real usage."""
    from offramp.data.io import read_dataset, write_records
    from offramp.llm.label import TaskSpec, make_labeller

    spec = TaskSpec.load(task)
    ds = read_dataset(data, text_col=text_col, label_col=label_col)
    warn(ds.warnings)
    spec = with_examples(spec, examples_from, examples_per_label, ds.texts)
    if predictions is not None and predictions.suffix.lower() not in (".jsonl", ".csv", ".tsv"):
        raise UsageError(f"--predictions {predictions} must end in .jsonl, .csv or .tsv")
    labeller = make_labeller(
        spec,
        llm,
        base_url,
        api_key_env=api_key_env,
        timeout_s=timeout_s,
        concurrency=concurrency,
        cache=cache,
        logprobs=logprobs,
    )
    res, rows = ask_llm(ds, spec, labeller, llm, price_model, send_chars, concurrency, quiet)
    if predictions:
        write_records(predictions, rows, param="predictions", raw=raw_csv)
    if as_json:
        print(json.dumps(res.to_dict()))
        return
    print_side_by_side(res, None, first=f"LLM ({llm})")
    if predictions:
        out.print(
            f"predictions written to {predictions} (use: offramp report MODEL DATA --llm-predictions {predictions})"
        )


def import_logs_cmd(
    log_file: Path = typer.Argument(
        ..., help="JSONL of logged chat completions (request/response, or stored completions)."
    ),
    out_file: Path = typer.Option(..., "--out", "-o", help="Training file to write (.csv or .jsonl) with text,label."),
    role: str = typer.Option("user", "--role", help="Role of the message that is the input."),
    index: int = typer.Option(-1, "--index", help="Which message of that role (-1: the last)."),
    label_field: Optional[str] = typer.Option(
        None, "--label-field", help="Read the label from this key of a JSON reply."
    ),
    labels: Optional[str] = typer.Option(
        None, "--labels", help="Comma-separated label set; replies naming none are skipped."
    ),
    multi_label: bool = typer.Option(
        False, "--multi-label", help="Replies hold several labels: a JSON list, or labels joined by --label-sep."
    ),
    label_sep: str = typer.Option("|", "--label-sep", help="With --multi-label: what joins labels, in and out."),
    raw_csv: bool = RAW_CSV,
) -> None:
    """Turn an LLM's production logs into a training file (text,label), counting what was skipped and why."""
    from offramp.data.io import write_records
    from offramp.llm.logs import import_logs

    if out_file.suffix.lower() not in (".csv", ".jsonl"):
        raise UsageError(f"--out {out_file} must end in .csv or .jsonl")
    label_set = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    res = import_logs(
        log_file,
        role=role,
        index=index,
        label_field=label_field,
        labels=label_set,
        multi_label=multi_label,
        sep=label_sep,
    )
    for reason, count in res.skipped.most_common():
        err.print(f"skipped {count} lines: {reason}", markup=False)
    if not res.rows:
        raise UsageError(
            f"no usable rows in {log_file} ({res.lines} lines read)", "check --role, --index and --label-field"
        )
    write_records(out_file, [{"text": t, "label": lab} for t, lab in res.rows], raw=raw_csv)
    out.print(
        f"wrote {len(res.rows)} rows to {out_file} from {res.lines} log lines ({sum(res.skipped.values())} skipped)"
    )
