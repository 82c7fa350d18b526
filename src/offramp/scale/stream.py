"""Predictions streamed through one machine: any number of rows in bounded memory, on all cores.

The main process reads the input in batches (pyarrow for Parquet and CSV, line by line for JSONL)
and hands each batch to a pool of worker processes that each load the model once; at most two
batches per worker are in flight, so memory does not grow with the input. Results come back in
order and are written as they arrive. The output goes to a temporary name and is renamed at the
end, so a killed run leaves nothing that looks complete; a directory output is written one part
per input shard, and ``resume`` keeps the parts a killed run finished.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np

from offramp.data.io import FORMATS, RecordWriter
from offramp.errors import UsageError
from offramp.estimators.predict import Predicted, predict_arrays
from offramp.registry.records import load, resolve_model_dir
from offramp.scale.sources import Batch, Shard, read_batches, resolve_shards
from offramp.types import JSONDict

SINGLE_FILE = (".jsonl", ".csv", ".tsv", ".parquet")
if TYPE_CHECKING:
    from multiprocessing.pool import AsyncResult

    import pyarrow.parquet as pq

    from offramp.estimators.base import TextClassifier

_model: TextClassifier | None = None  # the worker process's model, loaded once by _init


@dataclass
class StreamReport:
    rows_read: int = 0
    predicted: int = 0
    skipped_empty: list[str] = field(default_factory=list)  # "shard row N" of rows without a text
    bad_lines: list[str] = field(default_factory=list)  # JSONL lines that are not a JSON object
    shards: int = 0
    shards_resumed: int = 0
    seconds: float = 0.0
    output: str = ""
    engine: str = "local"
    rows_by_node: dict[str, int] = field(default_factory=dict)  # the Ray engine: rows each node predicted
    workers_replaced: int = 0  # the Ray engine: actors started again after their process died

    @property
    def rows_per_s(self) -> float:
        return self.predicted / self.seconds if self.seconds else 0.0

    def to_dict(self) -> JSONDict:
        return {
            "out": self.output,
            "rows_read": self.rows_read,
            "predicted": self.predicted,
            "skipped_empty": len(self.skipped_empty),
            "bad_lines": len(self.bad_lines),
            "shards": self.shards,
            "shards_resumed": self.shards_resumed,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "engine": self.engine,
            **({"rows_by_node": dict(self.rows_by_node)} if self.rows_by_node else {}),
            "warnings": self.warnings(),
        }

    def warnings(self) -> list[str]:
        out = []
        for what, rows in (
            ("rows with an empty or missing text were skipped", self.skipped_empty),
            ("lines that are not a JSON object were skipped", self.bad_lines),
        ):
            if rows:
                shown = ", ".join(rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
                out.append(f"{len(rows)} {what} ({shown})")
        return out


# ---------------------------------------------------------------------- workers
def _init(model_dir: str) -> None:
    global _model
    _model = load(model_dir)


def _predict(texts: list[str], top: int) -> Predicted:
    assert _model is not None
    return predict_arrays(_model, texts, top)


class Engine(Protocol):
    """Where predictions are computed: ``submit`` a batch, ``get`` its result (in submission order)."""

    def submit(self, texts: list[str], top: int) -> object: ...

    def get(self, handle: object) -> Predicted: ...

    def close(self) -> None: ...


ENGINES = ("local", "ray")


class _Local:
    """The model in this process (workers=1)."""

    def __init__(self, model: TextClassifier):
        self.model = model

    def submit(self, texts: list[str], top: int) -> object:
        return predict_arrays(self.model, texts, top)

    def get(self, handle: object) -> Predicted:
        return cast(Predicted, handle)

    def close(self) -> None:
        pass


class _Pool:
    """Worker processes that each load the model once."""

    def __init__(self, model_dir: Path, workers: int):
        ctx = multiprocessing.get_context("spawn")  # safe with the accurate tier's ONNX runtime
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        for k in saved:  # one thread per worker: the workers are the parallelism
            os.environ[k] = "1"
        try:
            self.pool = ctx.Pool(workers, initializer=_init, initargs=(str(model_dir),))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def submit(self, texts: list[str], top: int) -> object:
        return self.pool.apply_async(_predict, (texts, top))

    def get(self, handle: object) -> Predicted:
        return cast("AsyncResult[Predicted]", handle).get()

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


# ---------------------------------------------------------------------- writers
class _Writer:
    """One output: records to JSONL/CSV/TSV (the input's order) or rows to a Parquet file."""

    def __init__(self, path: Path, kind: str, classes: list[str], keep: list[str], spreadsheet_safe: bool):
        self.path, self.kind, self.classes, self.keep = path, kind, classes, keep
        self._records = RecordWriter(path, "output", spreadsheet_safe) if kind != ".parquet" else None
        self._pq: pq.ParquetWriter | None = None

    def write(self, texts: list[str], kept: dict[str, list[object]], result: Predicted) -> None:
        labels, conf, rejected, order, scores, sets = result
        if self._records is not None:
            for j, t in enumerate(texts):
                rec: JSONDict = {c: kept[c][j] for c in self.keep}
                rec.update(
                    text=t,
                    label=labels[j],
                    confidence=round(float(conf[j]), 6),
                    rejected=bool(rejected[j]),
                    top=[{"label": self.classes[c], "score": round(float(s), 6)} for c, s in zip(order[j], scores[j])],
                )
                if sets is not None:  # a multi-label model: every label over its threshold
                    rec["labels"] = sets[j]
                self._records.write(rec)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols: dict[str, object] = {c: kept[c] for c in self.keep}
        cols["label"] = pa.array(labels, pa.string())
        cols["confidence"] = pa.array(np.asarray(conf, dtype=np.float32))
        cols["rejected"] = pa.array(np.asarray(rejected, dtype=bool))
        if sets is not None:
            cols["labels"] = pa.array(sets, pa.list_(pa.string()))
        table = pa.table(cols)
        if self._pq is None:
            self._pq = pq.ParquetWriter(self.path, table.schema)
        elif table.schema != self._pq.schema:
            table = table.cast(self._pq.schema)
        self._pq.write_table(table)

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
        elif self._pq is not None:
            self._pq.close()
        else:  # no rows at all: an empty file with the columns
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema(
                [(c, pa.string()) for c in self.keep]
                + [("label", pa.string()), ("confidence", pa.float32()), ("rejected", pa.bool_())]
            )
            pq.write_table(schema.empty_table(), self.path)


def _output_kind(output: Path) -> str:
    """ ".jsonl", ".csv", ".tsv", ".parquet" for a file; "dir" for a directory of Parquet parts."""
    suffix = output.suffix.lower()
    if suffix in SINGLE_FILE:
        return suffix
    if suffix and FORMATS.get(suffix) is None:
        raise UsageError(f"--output {output} must end in .jsonl, .csv, .tsv or .parquet, or name a directory")
    return "dir"


# ---------------------------------------------------------------------- the engine
def predict_files(
    model_dir: str | Path,
    input_spec: str | Path,
    output: str | Path,
    *,
    text_col: str = "text",
    keep: list[str] | None = None,
    workers: int | None = None,
    batch_size: int = 8192,
    top: int = 3,
    max_chars: int = 20_000,
    resume: bool = False,
    spreadsheet_safe: bool = False,
    on_progress: Callable[[int, int | None], None] | None = None,
    engine: str = "local",
    address: str | None = None,
) -> StreamReport:
    """Predict every row of ``input_spec`` (a file, a directory or a glob of shards) into ``output``.

    ``output`` is a file (.jsonl, .csv, .tsv: records in the input's order; .parquet: the kept
    columns plus label, confidence, rejected) or a directory (one Parquet part per input shard).
    ``workers`` processes (default: every core) each load the model once. ``on_progress(done,
    total)`` is called after each batch (``total`` None when the input's length is unknown).
    """
    t0 = time.perf_counter()
    keep = list(keep or [])
    model_path, _ = resolve_model_dir(model_dir)
    model = load(model_path)  # a bad model directory is refused now, before any worker starts
    shards = resolve_shards(input_spec)
    output = Path(output)
    kind = _output_kind(output)
    if output.exists() and not resume:
        raise UsageError(f"--output {output} already exists", "choose a new path (or add --resume to a killed run's)")
    if output.exists() and resume:
        raise UsageError(f"--output {output} is already complete; nothing to resume")
    if resume and kind != "dir":
        raise UsageError("--resume needs a directory output (one part per input shard)", "give --output a directory")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r} is not known", "use --engine local or --engine ray")
    if address is not None and engine != "ray":
        raise UsageError("--address goes with --engine ray")
    n_workers = workers or os.cpu_count() or 1
    total = sum(s.rows or 0 for s in shards) if all(s.rows is not None for s in shards) else None
    partial = output.with_name(f".{output.name}.partial")
    report = StreamReport(shards=len(shards), output=str(output), engine=engine)
    runner: Engine
    if engine == "ray":
        from offramp.scale.ray_engine import RayEngine

        runner = RayEngine(model_path, workers, address)
        n_workers = runner.n
    else:
        runner = _Local(model) if n_workers == 1 else _Pool(model_path, n_workers)
    classes = [str(c) for c in model.classes_]

    def run(some: list[Shard], writer: _Writer) -> None:
        _run(runner, some, writer, text_col, keep, batch_size, top, max_chars, n_workers, report, total, on_progress)

    try:
        if kind == "dir":
            if partial.exists() and not resume:
                shutil.rmtree(partial)  # a killed run's leftovers, not asked to be resumed
            partial.mkdir(parents=True, exist_ok=True)
            for i, shard in enumerate(shards):
                part = partial / f"part-{i:05d}.parquet"
                if resume and part.exists():
                    report.shards_resumed += 1
                    report.rows_read += shard.rows or 0
                    report.predicted += _parquet_rows_of(part)
                    continue
                tmp = partial / f".part-{i:05d}.parquet.tmp"
                writer = _Writer(tmp, ".parquet", classes, keep, spreadsheet_safe)
                try:
                    run([shard], writer)
                finally:
                    writer.close()
                os.replace(tmp, part)
            os.replace(partial, output)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            tmp = output.with_name(f".{output.name}.partial{output.suffix}")
            writer = _Writer(tmp, kind, classes, keep, spreadsheet_safe)
            try:
                run(shards, writer)
            except BaseException:
                writer.close()
                tmp.unlink(missing_ok=True)  # a single file cannot be resumed: leave nothing behind
                raise
            writer.close()
            os.replace(tmp, output)
    finally:
        report.rows_by_node = dict(getattr(runner, "rows_by_node", {}))
        report.workers_replaced = int(getattr(runner, "replaced", 0))
        runner.close()
    report.seconds = time.perf_counter() - t0
    return report


def _parquet_rows_of(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def _batches(
    shards: list[Shard], text_col: str, keep: list[str], batch_size: int, max_chars: int, report: StreamReport
) -> Iterator[tuple[list[str], dict[str, list[object]]]]:
    for shard in shards:
        for b in read_batches(shard, text_col, keep, batch_size):
            yield _clean(b, shard, keep, max_chars, report)


def _clean(
    b: Batch, shard: Shard, keep: list[str], max_chars: int, report: StreamReport
) -> tuple[list[str], dict[str, list[object]]]:
    report.rows_read += len(b.texts) + len(b.bad_json)
    report.bad_lines += [f"{shard.path.name} line {n}" for n in b.bad_json]
    good = [i for i, t in enumerate(b.texts) if t is not None]
    if len(good) < len(b.texts):
        report.skipped_empty += [f"{shard.path.name} row {b.first_row + i}" for i, t in enumerate(b.texts) if t is None]
    texts = [str(b.texts[i])[:max_chars] for i in good]
    kept = {c: [b.kept[c][i] for i in good] for c in keep}
    return texts, kept


def _run(
    engine: Engine,
    shards: list[Shard],
    writer: _Writer,
    text_col: str,
    keep: list[str],
    batch_size: int,
    top: int,
    max_chars: int,
    n_workers: int,
    report: StreamReport,
    total: int | None,
    on_progress: Callable[[int, int | None], None] | None,
) -> None:
    in_flight: deque[tuple[list[str], dict[str, list[object]], object]] = deque()
    limit = 2 * n_workers  # batches in flight: bounds memory whatever the input's size

    def drain_one() -> None:
        texts, kept, handle = in_flight.popleft()
        writer.write(texts, kept, engine.get(handle))
        report.predicted += len(texts)
        if on_progress is not None:
            on_progress(report.rows_read, total)

    for texts, kept in _batches(shards, text_col, keep, batch_size, max_chars, report):
        if not texts:
            continue
        in_flight.append((texts, kept, engine.submit(texts, top)))
        while len(in_flight) >= limit:
            drain_one()
    while in_flight:
        drain_one()
