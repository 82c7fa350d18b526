"""Teacher and student on the same gold test split: does the small model trained on an LLM's
labels (no gold labels used) beat the LLM that taught it, and how far is it from gold training?

Rows, all scored on the gold test split:

* the teacher: the LLM's own answers on the test texts (recorded or live);
* the student: the small model trained on the teacher's labels of training texts;
* the student trained without the rows ``check-labels`` ranks as mislabelled;
* the same training texts with their gold labels (what the teacher's mistakes cost);
* optionally, a model trained on every gold training label (the ceiling).

Each row's model is chosen by its own search, or, given ``like``, is that model's configuration
refitted on the row's texts and labels (no search: the rows then differ in their labels only, and
cost one fit each).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from offramp.data.io import Dataset, cell_value, read_records
from offramp.data.text import normalize
from offramp.errors import DataError
from offramp.evaluation.results import EvalReport, metrics_report
from offramp.types import JSONDict

_KEY_CHARS = 1000


@dataclass
class DistillRow:
    name: str
    trained_on: str
    macro_f1: float
    accuracy: float
    per_class_f1: dict[str, float]
    n_train: int | None = None


@dataclass
class Distillation:
    rows: list[DistillRow]
    teacher: str
    texts_labelled: int
    teacher_train_accuracy: float  # agreement of the teacher's labels with gold on those texts
    labelling_seconds: float | None  # the teacher's time for those texts, as it reported it
    suspects_dropped: int
    notes: list[str] = field(default_factory=list)
    trained_like: str | None = None  # every row refits this configuration (None: a search per row)

    def to_dict(self) -> JSONDict:
        return asdict(self)

    def table(self) -> tuple[list[str], list[list[str]]]:
        labels = sorted({k for r in self.rows for k in r.per_class_f1})
        head = ["", "trained on", "macro-F1", "accuracy"] + [f"F1 {lab}" for lab in labels]
        body = [
            [r.name, r.trained_on, f"{r.macro_f1:.4f}", f"{r.accuracy:.4f}"]
            + [f"{r.per_class_f1.get(lab, 0.0):.3f}" for lab in labels]
            for r in self.rows
        ]
        return head, body

    def caption(self) -> str:
        t = f"; {self.labelling_seconds / 60:.1f} min of local CPU" if self.labelling_seconds else ""
        return (
            f"{self.teacher} labelled {self.texts_labelled} training texts (no gold label used; its labels agree "
            f"with gold on {self.teacher_train_accuracy:.1%} of them{t}). Every row is scored on the same gold "
            f"test split; check-labels left out {self.suspects_dropped} of the teacher's labels for the third row."
            + (
                f" Every row refits the main model's configuration ({self.trained_like}), so the rows differ in "
                "their labels only."
                if self.trained_like
                else ""
            )
        )


def _row(name: str, trained_on: str, rep: EvalReport, n: int | None) -> DistillRow:
    f1 = {str(k): float(v["f1"]) for k, v in (rep.per_class or {}).items()}
    return DistillRow(name, trained_on, float(rep.macro_f1), float(rep.accuracy), f1, n)


def read_teacher_labels(path: str | os.PathLike[str]) -> tuple[list[str], list[str], float | None, str | None]:
    """(texts, labels, seconds, model) of an ``offramp label`` output; unlabelled rows are left out."""
    columns, records = read_records(path)
    if "text" not in columns or "label" not in columns:
        raise DataError(f"{path} is not an 'offramp label' output: it needs text and label columns")
    texts, labels, ms = [], [], 0.0
    seen_ms = False
    model = None
    for r in records:
        t, lab = cell_value(r.get("text")), cell_value(r.get("label"))
        if r.get("latency_ms") not in (None, ""):
            ms += float(r["latency_ms"])
            seen_ms = True
        model = model or cell_value(r.get("model"))
        if t is not None and lab is not None and (cell_value(r.get("status")) or "labelled") == "labelled":
            texts.append(t)
            labels.append(lab)
    return texts, labels, ms / 1000 if seen_ms else None, model


def teacher_student(
    train_set: Dataset,
    test: Dataset,
    teacher_labels: str | os.PathLike[str],
    teacher_on_test: EvalReport,
    *,
    quality: str = "auto",
    seed: int = 0,
    full_gold: EvalReport | None = None,
    on_progress: Callable[[str], None] | None = None,
    train_fn: Callable[..., Any] | None = None,
    like: Any = None,
    like_name: str | None = None,
) -> Distillation:
    """Train the student on the teacher's labels and score everything on ``test`` (see the module).

    ``like``: an estimator whose configuration every row refits (scikit-learn's ``clone``) in place
    of a model search per row; ``like_name`` names it in the caption."""
    from offramp.training.noise import without_suspects
    from offramp.training.train import train

    texts, labels, seconds, model_name = read_teacher_labels(teacher_labels)

    def key(t: str) -> str:  # texts may have been cut by the labelling run's character limit
        return normalize(t)[:_KEY_CHARS]

    gold = {key(t): y for t, y in zip(train_set.texts, train_set.labels or [])}
    known = [i for i, t in enumerate(texts) if key(t) in gold]
    if len(known) < len(texts):
        raise DataError(
            f"{len(texts) - len(known)} texts of {teacher_labels} are not in the training split {train_set.path}",
            "label texts of the training split",
        )
    gold_labels = [gold[key(t)] for t in texts]
    agree = sum(a == b for a, b in zip(labels, gold_labels)) / max(1, len(texts))
    say = on_progress or (lambda _m: None)
    t0 = time.perf_counter()

    def fit_and_score(x: Sequence[str], y: Sequence[str]) -> EvalReport:
        if like is not None:
            from sklearn.base import clone

            m = clone(like).fit(list(x), list(y))
        elif train_fn is None:  # a student is scored, never served: its speed is not measured
            m, _ = train(list(x), list(y), quality=quality, time_limit=None, seed=seed, measure_speed=False)
        else:
            m, _ = train_fn(list(x), list(y), quality=quality, time_limit=None, seed=seed)
        return metrics_report(list(test.labels or []), [str(p) for p in m.predict(test.texts)])

    teacher = teacher_on_test.model or model_name or "LLM"
    rows = [_row(f"teacher: {teacher}", "(few-shot prompt)", teacher_on_test, None)]
    say("training the student on the teacher's labels")
    rows.append(_row("student", f"{len(texts)} teacher labels", fit_and_score(texts, labels), len(texts)))
    say("checking the teacher's labels")
    kept_x, kept_y, check = without_suspects(texts, labels, quality="fast", seed=seed, near=None)
    rows.append(
        _row(
            "student, suspects dropped",
            f"{len(kept_x)} teacher labels",
            fit_and_score(kept_x, kept_y),
            len(kept_x),
        )
    )
    say("training on the same texts' gold labels")
    rows.append(
        _row("same texts, gold labels", f"{len(texts)} gold labels", fit_and_score(texts, gold_labels), len(texts))
    )
    if full_gold is not None:
        rows.append(_row("all gold labels", f"{len(train_set.texts)} gold labels", full_gold, len(train_set.texts)))
    notes = [f"teacher/student rows trained in {time.perf_counter() - t0:.0f} s"]
    trained_like = (like_name or type(like).__name__) if like is not None else None
    return Distillation(rows, teacher, len(texts), agree, seconds, len(check.suspects), notes, trained_like)
