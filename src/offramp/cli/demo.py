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
        None, "--llm", help=o.LLM.help + " Reruns the LLM column live (else the recorded answers are shown)."
    ),
    base_url: Optional[str] = o.BASE_URL,
    api_key_env: str = o.API_KEY_ENV,
    concurrency: int = o.CONCURRENCY,
    send_chars: int = o.SEND_CHARS,
    old_send_chars: Optional[int] = o.hidden("--max-chars", min=1),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """The whole story on the bundled support-inbox data: train, evaluate, compare, report."""
    from offramp.demo.run import run_demo
    from offramp.training.train import resolve_time_limit

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


def print_distillation(d: Distillation) -> None:
    head, rows = d.table()
    t = Table(title="The student and its teacher (gold test split)", title_justify="left")
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i < 2 else "right")
    for r in rows:
        t.add_row(*r)
    out.print(t)
    out.print(d.caption(), markup=False)
