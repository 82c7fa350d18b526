"""``demo``: the whole story on the bundled support-inbox data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from offramp.cli import options as o
from offramp.cli.render import choice_line, emit, info, out, print_cascade, print_side_by_side, status, warn

if TYPE_CHECKING:
    from offramp.evaluation.distill import Distillation


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    out_dir: Path = typer.Option(Path("offramp-demo"), "--out", "-o", help="Where to write the model and the report."),
    time_limit: Optional[str] = typer.Option(
        None,
        "--time-limit",
        help=o.TIME_LIMIT_HELP + " The demo's default is none, so its choice does not depend on the machine's speed.",
    ),
    quality: str = o.QUALITY,
    llm: Optional[str] = typer.Option(
        None,
        "--llm",
        help=o.LLM.help
        + " Reruns the LLM column live (else the recorded answers are shown); with --chain, it answers what no "
        "stage is sure of and writes the replies to OTHER.",
    ),
    base_url: Optional[str] = o.BASE_URL,
    api_key_env: str = o.API_KEY_ENV,
    concurrency: int = o.CONCURRENCY,
    send_chars: int = o.SEND_CHARS,
    old_send_chars: Optional[int] = o.hidden("--max-chars", min=1),
    chain: bool = typer.Option(
        False,
        "--chain",
        help="The support bot as a chain of small models instead (privacy guard, abuse detector, router, "
        "Banking77's intents, actions, a check on the reply), written to OUT/chain; measured end to end and per stage.",
    ),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """The whole story on the bundled support-inbox data: train, evaluate, compare, report."""
    from offramp.demo.run import run_demo
    from offramp.training.train import resolve_time_limit

    if chain:
        _chain_demo(out_dir / "chain", quality, time_limit, as_json, quiet, llm, base_url, api_key_env)
        return

    send_chars = o.pick(send_chars, old_send_chars, "demo --max-chars", "--send-chars", default=20_000)
    if time_limit is not None:
        resolve_time_limit(time_limit, "fast")  # a bad value is refused before the work starts
    with status("training", quiet) as progress:
        res = run_demo(
            out_dir,
            time_limit=time_limit,
            quality=quality,
            llm=llm,
            base_url=base_url,
            api_key_env=api_key_env,
            concurrency=concurrency,
            send_chars=send_chars,
            on_progress=progress,
        )
    rep, small = res.train, res.evaluation
    warn(rep.warnings + small.warnings + [f"LLM: {w}" for w in (small.llm.warnings if small.llm else [])])
    if as_json:
        emit(res.to_dict())
        return
    info(f"support inbox: {res.n_train} training messages, labels {', '.join(res.labels)}", quiet)
    out.print(choice_line(rep), markup=False)
    info(f"trained in {rep.train_seconds:.1f} s", quiet)
    if not res.llm_live:
        info("LLM column: recorded predictions; rerun it live with --llm M --base-url URL", quiet)
    print_side_by_side(small, small.llm)
    for d in res.distilled:
        print_distillation(d)
    if small.cascade:
        print_cascade(small.cascade)
    out.print(
        f"model in {res.registry} ({res.version}); report in {res.html} (and {res.markdown.name}); "
        f"whole demo {res.seconds:.1f} s",
        markup=False,
    )
    out.print(
        f"serve it: offramp serve {res.pipeline}   (then open the console: http://127.0.0.1:8000/ui)", markup=False
    )


def _chain_demo(
    out_dir: Path,
    quality: str,
    time_limit: Optional[str],
    as_json: bool,
    quiet: bool,
    llm: Optional[str],
    base_url: Optional[str],
    api_key_env: str,
) -> None:
    from offramp.demo.chain import run_chain_demo

    with status("training the chain", quiet) as progress:
        res = run_chain_demo(
            out_dir,
            quality="fast" if quality == "auto" else quality,
            time_limit=time_limit or "auto",
            llm=llm,
            base_url=base_url,
            api_key_env=api_key_env,
            on_progress=progress,
        )
    if as_json:
        emit(res.to_dict())
        return
    for n in res.notes:
        info(n, quiet)
    t = Table(title="The chain, stage by stage (each judged on its own question)", title_justify="left")
    for i, h in enumerate(
        ("stage", "kind", "version", "labels", "reached", "accuracy", "macro-F1", "p50 ms", "p99 ms")
    ):
        t.add_column(h, justify="left" if i < 3 else "right")

    def num(v: object, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    for s in res.stages:
        t.add_row(
            s.stage, s.kind, str(s.version or "—")[:12], str(s.labels or "—"), num(s.reached, ".1%"),
            num(s.accuracy, ".4f"), num(s.macro_f1, ".4f"), num(s.p50_ms, ".3f"), num(s.p99_ms, ".3f"),
        )  # fmt: skip
    out.print(t)
    ev = res.evaluation
    out.print(
        f"end to end on {ev.n:,} messages: accuracy {ev.accuracy:.4f}, macro-F1 {ev.macro_f1:.4f}; "
        f"{res.local_share:.1%} answered with every stage at confidence ≥ {res.llm_threshold:g} (the rest would go "
        f"to the LLM); p50 {ev.latency_ms.get('p50', 0):.3f} ms, p99 {ev.latency_ms.get('p99', 0):.3f} ms, "
        f"{ev.throughput_per_s:,.0f} messages/s in batches; trained in {res.train_seconds:.1f} s, "
        f"whole demo {res.seconds:.1f} s",
        markup=False,
    )
    live = res.live
    if live is not None:
        out.print(
            f"live with {live.llm} on {live.n} sampled test messages: accuracy {live.accuracy:.4f}, macro-F1 "
            f"{live.macro_f1:.4f} (the stages alone {live.stages_accuracy:.4f}, {live.stages_macro_f1:.4f}); the LLM "
            f"gave {live.asked} labels ({live.failed} calls failed) and wrote {live.replies} replies, of which the "
            f"checks masked {live.replies_masked} and blocked {live.replies_blocked}; {live.seconds:.1f} s",
            markup=False,
        )
    else:
        info("add --llm M --base-url URL to let an LLM answer what no stage is sure of and write replies", quiet)
    out.print(f"serve it: offramp serve {res.pipeline}", markup=False)


def print_distillation(d: Distillation) -> None:
    head, rows = d.table()
    t = Table(title="The student and its teacher (gold test split)", title_justify="left")
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i < 2 else "right")
    for r in rows:
        t.add_row(*r)
    out.print(t)
    out.print(d.caption(), markup=False)
