"""``demo``: the whole story on the bundled support-inbox data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from offramp.cli.common import API_KEY_ENV, CONCURRENCY, QUIET, info, out, print_side_by_side, status, warn
from offramp.cli.llm import ask_llm
from offramp.cli.models import choice_line, parse_time_limit, print_cascade, write_report_files
from offramp.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    out_dir: Path = typer.Option(Path("offramp-demo"), "--out", "-o", help="Where to write the model and the report."),
    time_limit: Optional[str] = typer.Option(
        None,
        "--time-limit",
        help="Seconds the model search may take; default none: every candidate is tried, so the choice does not depend on the machine's speed.",
    ),
    quality: str = typer.Option(
        "auto", "--quality", help="fast, balanced, best, or auto (balanced when the encoder is installed)."
    ),
    llm: Optional[str] = typer.Option(
        None, "--llm", help="Rerun the LLM column live with this model (else the recorded predictions are shown)."
    ),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint for --llm."),
    api_key_env: str = API_KEY_ENV,
    concurrency: int = CONCURRENCY,
    send_chars: int = typer.Option(1500, "--max-chars", min=1, help="Characters of each test text sent to the LLM."),
    quiet: bool = QUIET,
) -> None:
    """The whole story on the bundled support-inbox data: train, evaluate, compare, report."""
    from offramp.data.io import read_dataset, write_records
    from offramp.demo.data import demo_paths, demo_task
    from offramp.demo.pipeline import write_demo_pipeline
    from offramp.llm.label import TaskSpec, make_labeller
    from offramp.registry.versions import Registry
    from offramp.training.train import train

    limit = parse_time_limit(time_limit) if time_limit is not None else None  # default: no limit
    if (llm is None) != (base_url is None):
        raise UsageError("--llm and --base-url go together", "give both to rerun the LLM column live, or neither")
    t0 = time.perf_counter()
    train_path, test_path, llm_path = demo_paths()
    ds = read_dataset(train_path)
    info(f"support inbox: {len(ds)} training messages, labels {', '.join(sorted(set(ds.labels or [])))}", quiet)
    model_dir = out_dir / "registry"  # a registry of versions: the console can promote, roll back, retrain
    with status("training", quiet) as say:
        model, rep = train(ds, quality=quality, time_limit=limit, on_progress=say)
        registry = Registry.create(model_dir)
        if registry.gate_set() is None:  # the held-out split is the frozen gate set later retrains face
            test = read_dataset(test_path)
            registry.set_gate(test.texts, test.labels or [], "the demo's test split")
        assert ds.labels is not None
        version = registry.add(model, ds.texts, ds.labels, promote=True)
    warn(rep.warnings)
    out.print(choice_line(rep))
    info(f"trained in {rep.train_seconds:.1f} s", quiet)
    if llm is not None and base_url is not None:
        assert ds.labels is not None  # the recorded column's prompt: 4 examples per label from the training split
        spec = TaskSpec.load(demo_task()).with_examples(ds.texts, ds.labels, 4, seed=0)
        labeller = make_labeller(
            spec, llm, base_url, api_key_env=api_key_env, timeout_s=300.0, concurrency=concurrency, logprobs=False
        )
        _, rows = ask_llm(read_dataset(test_path), spec, labeller, llm, None, send_chars, concurrency, quiet)
        llm_path = out_dir / "llm_predictions.jsonl"
        write_records(llm_path, rows)
    elif llm_path is not None:
        info(f"LLM column: recorded predictions ({llm_path.name}); rerun it live with --llm M --base-url URL", quiet)
    from offramp.demo.data import demo_teacher_labels

    teacher_labels = demo_teacher_labels() if llm is None else None
    distilled: list[Any] = []

    def teacher_and_student(small: Any) -> list[Any]:
        """The recorded teacher's labels of training texts -> a student, scored beside its teacher."""
        from offramp.evaluation.distill import teacher_student
        from offramp.evaluation.report import ReportSection

        if teacher_labels is None or small.llm is None:
            return []
        with status("training a student on the teacher's labels", quiet) as say:
            d = teacher_student(
                ds,
                read_dataset(test_path),
                teacher_labels,
                small.llm,
                quality=quality,
                full_gold=small,
                on_progress=say,
            )
        distilled.append(d)
        return [ReportSection("The student and its teacher", d.caption(), *d.table())]

    html_path, md_path, small = write_report_files(
        model_dir,
        test_path,
        llm_path,
        out_dir / "report.html",
        "text",
        "label",
        100_000,
        quiet,
        sections=teacher_and_student,
    )
    print_side_by_side(small, small.llm)
    for d in distilled:
        print_distillation(d)
    if small.cascade:
        print_cascade(small.cascade)
    pipeline = write_demo_pipeline(out_dir)
    out.print(
        f"model in {model_dir} ({version}); report in {html_path} (and {md_path.name}); whole demo {time.perf_counter() - t0:.1f} s"
    )
    out.print(f"serve it: offramp serve {pipeline}   (then open the console: http://127.0.0.1:8000/ui)")


def print_distillation(d: Any) -> None:
    head, rows = d.table()
    t = Table(title="The student and its teacher (gold test split)", title_justify="left")
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i < 2 else "right")
    for r in rows:
        t.add_row(*r)
    out.print(t)
    out.print(d.caption(), markup=False)
