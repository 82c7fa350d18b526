"""The whole story on the bundled support inbox, in one call: :func:`run_demo`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from offramp.data.io import read_dataset, write_records
from offramp.demo.data import demo_paths, demo_task, demo_teacher_labels
from offramp.demo.pipeline import write_demo_pipeline
from offramp.errors import UsageError
from offramp.evaluation.distill import Distillation, teacher_student
from offramp.evaluation.llm import run_llm_eval
from offramp.evaluation.report import ReportSection, build_report
from offramp.evaluation.results import EvalReport
from offramp.llm.label import TaskSpec, make_labeller
from offramp.registry.versions import Registry
from offramp.training.report import TrainReport
from offramp.training.train import train
from offramp.types import JSONDict


@dataclass
class DemoResult:
    """What :func:`run_demo` made: the training report, the evaluation beside the LLM (with the
    cascade view), the student trained on the recorded teacher's labels, and the files written."""

    train: TrainReport
    evaluation: EvalReport
    registry: Path
    version: str
    html: Path
    markdown: Path
    pipeline: Path
    seconds: float
    n_train: int
    labels: list[str]
    llm_live: bool
    distilled: list[Distillation] = field(default_factory=list)

    def to_dict(self) -> JSONDict:
        return {
            "train": self.train.to_dict(),
            "evaluation": self.evaluation.to_dict(),
            "cascade": self.evaluation.cascade,
            "registry": str(self.registry),
            "version": self.version,
            "report": str(self.html),
            "report_md": str(self.markdown),
            "pipeline": str(self.pipeline),
            "seconds": round(self.seconds, 3),
            "student": [d.to_dict() for d in self.distilled],
        }


def run_demo(
    out_dir: str | os.PathLike[str] = "offramp-demo",
    *,
    time_limit: float | str | None = None,
    quality: str = "auto",
    llm: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    concurrency: int = 4,
    timeout_s: float = 300.0,
    send_chars: int = 20_000,
    on_progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Train on the bundled inbox (into a registry, the test split frozen as its gate set),
    evaluate on the held-out messages beside an LLM's answers (the recorded ones, or a live rerun
    with ``llm`` and ``base_url``), train a student on the recorded teacher's labels, write the
    report and a pipeline to serve (``out_dir/pipeline.yaml``).

    ``time_limit`` None (the default) tries every candidate, so the same data and seed give the
    same model on any machine.
    """
    if (llm is None) != (base_url is None):
        raise UsageError(
            "an LLM name and its base URL go together", "give both to rerun the LLM column live, or neither"
        )
    say = on_progress or (lambda _m: None)
    t0 = time.perf_counter()
    out = Path(out_dir)
    train_path, test_path, llm_path = demo_paths()
    ds = read_dataset(train_path)
    assert ds.labels is not None
    registry_dir = out / "registry"  # a registry of versions: the console can promote, roll back, retrain
    model, rep = train(ds, quality=quality, time_limit=time_limit, on_progress=on_progress)
    assert isinstance(rep, TrainReport)
    registry = Registry.create(registry_dir)
    test = read_dataset(test_path)
    if registry.gate_set() is None:  # the held-out split is the frozen gate set later retrains face
        registry.set_gate(test.texts, test.labels or [], "the demo's test split")
    version = registry.add(model, ds.texts, ds.labels, promote=True)
    if llm is not None and base_url is not None:
        # the recorded column's prompt: 4 examples per label from the training split
        spec = TaskSpec.load(demo_task()).with_examples(ds.texts, ds.labels, 4, seed=0)
        labeller = make_labeller(
            spec, llm, base_url, api_key_env=api_key_env, timeout_s=timeout_s, concurrency=concurrency, logprobs=False
        )
        say(f"asking {llm} about {len(test.texts)} texts")
        _, rows = run_llm_eval(test, spec, labeller, llm=llm, send_chars=send_chars, workers=concurrency)
        llm_path = out / "llm_predictions.jsonl"
        write_records(llm_path, rows)
    teacher_labels = demo_teacher_labels() if llm is None else None
    distilled: list[Distillation] = []

    def teacher_and_student(small: EvalReport) -> list[ReportSection]:
        """The recorded teacher's labels of training texts -> a student, scored beside its teacher."""
        if teacher_labels is None or small.llm is None:
            return []
        say("training a student on the teacher's labels")
        d = teacher_student(
            ds, test, teacher_labels, small.llm, quality=quality, full_gold=small, on_progress=on_progress,
            like=model, like_name=rep.winner,
        )  # fmt: skip
        distilled.append(d)
        return [ReportSection("The student and its teacher", d.caption(), *d.table())]

    say("evaluating")
    html_path, md_path, small = build_report(
        registry_dir, test, out / "report.html", llm_predictions=llm_path, sections=teacher_and_student
    )
    pipeline = write_demo_pipeline(out)
    return DemoResult(
        rep,
        small,
        registry_dir,
        version,
        html_path,
        md_path,
        pipeline,
        time.perf_counter() - t0,
        len(ds),
        sorted(set(ds.labels)),
        llm is not None,
        distilled,
    )
