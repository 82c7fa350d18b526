"""The capture pool (SQLite): what the LLM answered and what people corrected, for the next retrain.

Each row holds a text **masked** by the guard the pool was opened with (the pool applies it itself,
so a raw text cannot be written), the label given, where it came from (``llm``: the fallback's
answer; ``shadow``: the LLM's answer beside the small model's; ``feedback``: a person's correction),
the small model's own label and confidence, the model version, the request id and the time.

Writes are queued and committed by one background thread in batches, so the request path does not
wait on the disk; a full queue drops the row and counts it (``dropped``). A request has at most one
correction: a later one for the same request id replaces the earlier.

``pool_meta`` also records, per registry, the last row a retrain has used (:meth:`Pool.used_through`),
so rows are never added to a registry twice, across restarts of the service.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, TypedDict, cast

from offramp.errors import DataError, UsageError
from offramp.types import JSONDict

SOURCES = ("llm", "shadow", "feedback")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pool (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    label TEXT NOT NULL,
    local_label TEXT,
    confidence REAL,
    model_version TEXT,
    request_id TEXT
);
CREATE INDEX IF NOT EXISTS pool_time ON pool (time);
CREATE TABLE IF NOT EXISTS pool_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE INDEX IF NOT EXISTS pool_feedback ON pool (request_id) WHERE source = 'feedback';
"""
_FORMAT = "offramp-pool-1"


class StoredRow(TypedDict):
    """A row as :func:`read_rows` gives it (text masked, time in epoch seconds)."""

    id: int
    time: float
    source: str
    text: str
    label: str
    local_label: str | None
    confidence: float | None
    model_version: str | None
    request_id: str | None


class TrainingRow(TypedDict):
    """A row of a training file written from the pool (time as an ISO date and time)."""

    text: str
    label: str
    source: str
    time: str


@dataclass
class PoolRow:
    source: str
    text: str  # masked
    label: str
    local_label: str | None = None
    confidence: float | None = None
    model_version: str | None = None
    request_id: str | None = None
    time: float = 0.0


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=30, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    return con


def open_existing(path: str | Path) -> sqlite3.Connection:
    """A read connection to an existing pool; a DataError naming the problem otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pool {path} does not exist", "point at the file a pipeline's capture.pool names")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        fmt = con.execute("SELECT value FROM pool_meta WHERE key='format'").fetchone()
    except sqlite3.DatabaseError:
        raise DataError(f"{path} is not an offramp capture pool", "point at a pipeline's capture.pool file") from None
    if not fmt or fmt[0] != _FORMAT:
        raise DataError(f"{path} is not an offramp capture pool", "point at a pipeline's capture.pool file")
    return con


class Pool:
    """A capture pool at ``path`` (created if missing). ``mask`` is applied to every text written."""

    def __init__(self, path: str | Path, mask: Callable[[str], str], max_queue: int = 10_000):
        self.path = Path(path)
        self._mask = mask
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = _connect(self.path)
            con.executescript(_SCHEMA)
            fmt = con.execute("SELECT value FROM pool_meta WHERE key='format'").fetchone()
            if fmt is None:
                n = con.execute("SELECT COUNT(*) FROM pool").fetchone()[0]
                if n:
                    raise UsageError(f"{self.path} is not an offramp capture pool")
                con.execute("INSERT INTO pool_meta VALUES ('format', ?)", (_FORMAT,))
                con.commit()
            elif fmt[0] != _FORMAT:
                raise UsageError(f"{self.path} is not an offramp capture pool")
        except sqlite3.DatabaseError as e:
            raise UsageError(
                f"the capture pool {self.path} cannot be opened ({e})", "give capture.pool a new SQLite file"
            ) from None
        except OSError as e:
            raise UsageError(f"the capture pool {self.path} cannot be created ({e.strerror})") from None
        self._con = con
        self._queue: queue.Queue[PoolRow | None] = queue.Queue(max_queue)
        self.dropped = 0
        self.written = 0
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="offramp-pool", daemon=True)
        self._thread.start()

    def add(
        self,
        source: str,
        text: str,
        label: str,
        *,
        local_label: str | None = None,
        confidence: float | None = None,
        model_version: str | None = None,
        request_id: str | None = None,
    ) -> bool:
        """Queue a row (its text masked now); False if the queue was full and the row was dropped."""
        if source not in SOURCES:
            raise ValueError(f"unknown pool source {source!r}")
        row = PoolRow(source, self._mask(text), label, local_label, confidence, model_version, request_id, time.time())
        try:
            self._idle.clear()
            self._queue.put_nowait(row)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued row is committed."""
        deadline = time.monotonic() + timeout
        while not (self._queue.empty() and self._idle.is_set()):
            if time.monotonic() > deadline:
                raise TimeoutError("the capture pool did not commit in time")
            time.sleep(0.01)

    def used_through(self, registry: str) -> int:
        """The id of the last row a retrain of ``registry`` (its resolved path) has used; 0 if none."""
        con = sqlite3.connect(self.path, timeout=30)
        try:
            row = con.execute("SELECT value FROM pool_meta WHERE key = ?", (f"used_through:{registry}",)).fetchone()
        finally:
            con.close()
        try:
            return int(row[0]) if row else 0
        except ValueError:
            return 0

    def mark_used(self, registry: str, last_id: int) -> None:
        """Record that a retrain of ``registry`` used the rows up to ``last_id``."""
        con = sqlite3.connect(self.path, timeout=30)
        try:
            with con:
                con.execute(
                    "INSERT INTO pool_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (f"used_through:{registry}", str(int(last_id))),
                )
        finally:
            con.close()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(10)
        self._con.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while len(batch) < 512:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [r for r in batch if r is not None]
            # the latest correction of a request replaces earlier ones (in this batch and stored)
            corrected = {r.request_id: i for i, r in enumerate(rows) if r.source == "feedback" and r.request_id}
            rows = [
                r
                for i, r in enumerate(rows)
                if not (r.source == "feedback" and r.request_id) or corrected[r.request_id] == i
            ]
            if rows:
                try:
                    with self._con:
                        if corrected:
                            self._con.executemany(
                                "DELETE FROM pool WHERE source = 'feedback' AND request_id = ?",
                                [(rid,) for rid in corrected],
                            )
                        self._con.executemany(
                            "INSERT INTO pool (time, source, text, label, local_label, confidence, model_version,"
                            " request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [
                                (
                                    r.time,
                                    r.source,
                                    r.text,
                                    r.label,
                                    r.local_label,
                                    r.confidence,
                                    r.model_version,
                                    r.request_id,
                                )
                                for r in rows
                            ],
                        )
                    self.written += len(rows)
                except sqlite3.Error:
                    self.dropped += len(rows)
            if self._queue.empty():
                self._idle.set()
            if any(r is None for r in batch):
                return


def parse_since(value: str | None, now: float | None = None) -> float | None:
    """``--since``: an ISO date or time (UTC unless it says otherwise), or an age such as 30m, 24h, 7d."""
    if value is None:
        return None
    v = value.strip()
    now = time.time() if now is None else now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if len(v) > 1 and v[-1] in units and v[:-1].replace(".", "", 1).isdigit():
        return now - float(v[:-1]) * units[v[-1]]
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise UsageError(
            f"--since must be an ISO date or time (2026-11-01, 2026-11-01T08:00) or an age (30m, 24h, 7d); got {value!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def read_rows(path: str | Path, sources: Iterable[str] | None = None, since: float | None = None) -> list[StoredRow]:
    """The pool's rows (oldest first) from ``sources`` since ``since`` (epoch seconds)."""
    wanted = list(sources or SOURCES)
    unknown = sorted(set(wanted) - set(SOURCES))
    if unknown:
        raise UsageError(f"unknown pool source(s): {', '.join(unknown)}", f"use any of: {', '.join(SOURCES)}")
    con = open_existing(path)
    try:
        q = (
            "SELECT id, time, source, text, label, local_label, confidence, model_version, request_id FROM pool "
            f"WHERE source IN ({','.join('?' * len(wanted))}) AND time >= ? ORDER BY id"
        )
        cur = con.execute(q, (*wanted, since if since is not None else float("-inf")))
        cols = [d[0] for d in cur.description]
        return [cast(StoredRow, dict(zip(cols, r))) for r in cur.fetchall()]
    finally:
        con.close()


def training_rows(rows: list[StoredRow]) -> list[TrainingRow]:
    """Rows for ``offramp registry retrain``: one per request, a person's correction beating an LLM's answer
    (the latest correction if several); rows without a request id are kept as they are."""
    rank = {"feedback": 2, "llm": 1, "shadow": 1}
    best: dict[str, StoredRow] = {}
    loose: list[StoredRow] = []
    for r in rows:
        rid = r.get("request_id")
        if not rid:
            loose.append(r)
            continue
        old = best.get(rid)
        if old is None or rank[r["source"]] >= rank[old["source"]]:
            best[rid] = r
    kept = sorted(loose + list(best.values()), key=lambda r: r["id"])
    return [
        TrainingRow(
            text=r["text"],
            label=r["label"],
            source=r["source"],
            time=_iso_time(r),
        )
        for r in kept
    ]


def _iso_time(row: StoredRow) -> str:
    """A row's time as an ISO date and time; a DataError naming the row when it cannot be one."""
    try:
        return datetime.fromtimestamp(float(row["time"]), timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError, TypeError):
        raise DataError(
            f"pool row {row['id']} has a time that is not a date ({str(row['time'])[:40]})",
            f"correct or delete that row (DELETE FROM pool WHERE id = {row['id']})",
        ) from None


@dataclass
class PoolExport:
    """What :func:`export_pool` wrote: the rows and how many came from each source."""

    out: str
    rows: int
    by_source: dict[str, int]

    def to_dict(self) -> JSONDict:
        return {"out": self.out, "rows": self.rows, "by_source": dict(self.by_source)}


def export_pool(
    pool: str | Path,
    out: str | Path,
    *,
    sources: Iterable[str] = SOURCES,
    since: float | str | None = None,
    spreadsheet_safe: bool = False,
) -> PoolExport:
    """Write the pool's rows as a training file for :func:`offramp.retrain` (text, label, source,
    time; .csv, .tsv or .jsonl): one row per request, a person's correction beating the LLM's
    answer. ``since``: epoch seconds, or an ISO date/time or an age (24h, 7d)."""
    from offramp.data.io import WRITABLE, write_records

    if Path(out).suffix.lower() not in WRITABLE:
        raise UsageError(f"{out} must end in {', '.join(WRITABLE)}", param="out")
    wanted = [s.strip() for s in sources if s.strip()]
    start = parse_since(since) if isinstance(since, str) else since
    rows = training_rows(read_rows(pool, wanted, start))
    if not rows:
        raise DataError(
            f"pool {pool} has no rows from {', '.join(wanted)}" + (f" since {since}" if since is not None else ""),
            "serve traffic with a capture: section first, or widen the sources or the time",
        )
    write_records(out, rows, spreadsheet_safe=spreadsheet_safe)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    return PoolExport(str(out), len(rows), dict(sorted(counts.items())))
