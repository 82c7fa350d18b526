"""Read labelled or unlabelled texts from CSV, TSV, JSONL or Parquet, with clear errors.

Anything wrong with a file is either a :class:`DataError` (one line naming the problem and the
fix; the CLI exits with code 2) or a counted warning on the returned :class:`Dataset` — never a
traceback and never a row silently lost.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from offramp.data.text import clean_text
from offramp.errors import DataError, UsageError
from offramp.formats import csv_safe

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
DEFAULT_MAX_CHARS = 20_000
MAX_FILE_BYTES = 2 * 1024**3


@dataclass
class Dataset:
    """Texts (and labels, when the file has them) plus what reading them had to say."""

    texts: list[str]
    labels: list[str] | None
    path: str = "<memory>"
    warnings: list[str] = field(default_factory=list)
    rows_read: int = 0
    skipped_rows: list[int] = field(default_factory=list)  # 0-based data rows left out (no text or label)

    def __len__(self) -> int:
        return len(self.texts)

    def data_rows(self) -> np.ndarray:
        """The 0-based data row of the file each text came from (rows without a text or a label
        are left out of the texts, so the two differ after the first such row)."""
        keep = np.ones(len(self.texts) + len(self.skipped_rows), dtype=bool)
        keep[np.asarray(self.skipped_rows, dtype=np.int64)] = False
        return np.flatnonzero(keep)


def _fmt_rows(rows: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def decode_utf8(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at line {line} cannot be decoded",
            "re-save the file as UTF-8 (for example: iconv -f latin1 -t utf-8 in > out)",
        ) from None


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` with their endings, as the csv module reads them."""
    start, n = 0, len(text)
    while start < n:
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start : end + 1]
        start = end + 1


def _records_csv(text: str, path: Path, delimiter: str) -> tuple[list[str], list[dict]]:
    csv.field_size_limit(1 << 30)
    # lines cut from the text one at a time: io.StringIO would hold a second, four-bytes-a-character
    # copy of the whole file (about 1 GB for a 240 MB CSV); a file with a lone CR (old Mac line
    # endings) still goes through it
    lone_cr = text.count("\r") != text.count("\r\n")
    lines = io.StringIO(text, newline="") if lone_cr else _lines(text)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path} has no header row", "the first line must name the columns, e.g. text,label") from None
    except csv.Error as e:
        raise DataError(f"{path} is not valid CSV at line 1: {e}") from None
    header = [h.strip() for h in header]
    rows = []
    try:
        for values in reader:
            if not values:
                continue
            rows.append(dict(zip(header, values)))
    except csv.Error as e:
        raise DataError(
            f"{path} is not valid CSV at line {reader.line_num}: {e}", "check the quoting on that line"
        ) from None
    return header, rows


def jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of JSON Lines text: split on ``\n`` only (JSON escapes every other
    line break, but a writer may leave U+2028, U+0085 and the like raw inside strings, which
    ``str.splitlines`` would cut); a ``\r`` before the ``\n`` is JSON whitespace, left to the parser.
    The one JSONL splitter of the package."""
    for i, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield i, line


def _records_jsonl(text: str, path: Path) -> tuple[list[str], list[dict]]:
    rows: list[dict] = []
    cols: dict[str, None] = {}
    for i, line in jsonl_lines(text):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path} line {i} is not valid JSON: {e.msg}", "each line must be one JSON object"
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{path} line {i} is a JSON {type(obj).__name__}, not an object",
                'each line must look like {"text": "...", "label": "..."}',
            )
        rows.append(obj)
        for k in obj:
            cols.setdefault(k, None)
    return list(cols), rows


def _parquet_columns(path: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    except Exception as e:
        raise DataError(f"{path} could not be read as Parquet: {e}", "check that the file is a Parquet file") from None


def data_bytes(path: str | os.PathLike, columns: list[str] | None = None) -> int:
    """About how many bytes of data a file holds once read: its size for text formats, the
    uncompressed size of the wanted columns for Parquet (0 when the file cannot tell)."""
    path = Path(path)
    try:
        if FORMATS.get(path.suffix.lower()) != "parquet":
            return path.stat().st_size
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        total = 0
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                if columns is None or col.path_in_schema in columns:
                    total += col.total_uncompressed_size
        return total
    except Exception:  # unreadable: read_dataset says why
        return 0


def _records_parquet(path: Path, present: list[str]) -> list[dict]:
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if not present:  # none of the wanted columns: rows without fields, so the caller names the column
            return [{} for _ in range(pf.metadata.num_rows)]
        table = pf.read(columns=present)
    except Exception as e:
        raise DataError(f"{path} could not be read as Parquet: {e}", "check that the file is a Parquet file") from None
    columns = {c: table.column(c).to_pylist() for c in present}
    for c, values in columns.items():  # binary columns hold bytes: decode them as text files are
        for row, v in enumerate(values, start=1):
            if isinstance(v, (bytes, bytearray)):
                try:
                    values[row - 1] = bytes(v).decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{path}: column {c!r} row {row} is not UTF-8 text: byte 0x{v[e.start]:02x} cannot be decoded",
                        "store the texts as UTF-8 strings",
                    ) from None
    return [dict(zip(present, vals)) for vals in zip(*columns.values())]


def text_value(value) -> str | None:
    """A text cell as it is (not stripped: data comes out as it went in); None when it is missing,
    NaN or blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    s = clean_text(str(value))
    return s if s.strip() else None


def cell_value(value) -> str | None:
    """A cell as a stripped string; None when it is missing, NaN or blank."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            value = int(value)
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    s = clean_text(str(value)).strip()
    return s or None


MAX_YAML_BYTES = 1_000_000  # a pipeline or task file is a few kilobytes
MAX_YAML_NODES = 100_000  # nodes once aliases are expanded: an alias bomb of 500 bytes expands to billions


def _expanded_size(node, seen: dict[int, int], limit: int) -> int:
    """How many nodes ``node`` stands for with every alias expanded (stops counting past ``limit``)."""
    key = id(node)
    if key in seen:
        return seen[key]
    seen[key] = 1  # a cycle counts once (safe_load builds it as a shared reference)
    total = 1
    value = node.value
    if isinstance(value, list):
        for item in value:
            children = item if isinstance(item, tuple) else (item,)
            for child in children:
                total += _expanded_size(child, seen, limit)
                if total > limit:
                    break
            if total > limit:
                break
    seen[key] = total
    return total


def read_yaml_file(path: str | os.PathLike, what: str):
    """The parsed content of a YAML file, or a UsageError naming the file (``what``: e.g. "task spec").

    A file over 1 MB, or whose aliases expand to over 100,000 nodes (a "billion laughs"), is
    refused before anything walks it."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} {p} does not exist")
    if p.stat().st_size > MAX_YAML_BYTES:
        raise UsageError(f"{what} {p} is larger than {MAX_YAML_BYTES:,} bytes; a {what} is a few kilobytes")
    try:
        text = p.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node, {}, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise UsageError(
                f"{p} expands to more than {MAX_YAML_NODES:,} values through its aliases (&/*)",
                "write the values out instead of nesting aliases",
            )
        return yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise UsageError(f"{p} is nested too deeply to read") from None


def read_records(path: str | os.PathLike, columns: list[str] | None = None) -> tuple[list[str], list[dict]]:
    """(column names, rows as dicts) of a data file, after the file-level checks.

    ``columns`` limits what a Parquet file reads; text formats always read every column.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist", "check the path")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"data file {path} is empty", "it needs a header and at least one row")
    if size > MAX_FILE_BYTES:
        raise DataError(
            f"data file {path} is {size >> 20} MiB, over the {MAX_FILE_BYTES >> 20} MiB limit",
            "split it into smaller files",
        )
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path} has an unknown extension {path.suffix!r}", "use one of: " + ", ".join(sorted(FORMATS)))
    if kind == "parquet":
        names = _parquet_columns(path)
        return names, _records_parquet(path, [c for c in (columns or names) if c in names])
    text = decode_utf8(path.read_bytes(), path)
    if kind == "jsonl":
        return _records_jsonl(text, path)
    return _records_csv(text, path, "\t" if kind == "tsv" else ",")


def read_dataset(
    path: str | os.PathLike,
    *,
    text_col: str = "text",
    label_col: str | None = "label",
    need_labels: bool = True,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Dataset:
    """Read texts (and labels) from a file.

    Parameters
    ----------
    path : a .csv, .tsv, .jsonl/.ndjson or .parquet file.
    text_col, label_col : column names; label_col may be None when labels are not wanted.
    need_labels : if True, a missing label column is an error and rows without a label are dropped
        with a counted warning; if False, labels are read when present and left None otherwise.
    max_chars : longer texts are cut to this many characters, with a counted warning.

    Example
    -------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "d.csv"; _ = p.write_text("text,label\\nhi,OTHER\\n")
    >>> read_dataset(p).labels
    ['OTHER']
    """
    path = Path(path)
    columns, records = read_records(path, [text_col] + ([label_col] if label_col else []))
    if not records:
        raise DataError(f"{path} has no data rows", "add at least one row below the header")
    if text_col not in columns:
        raise DataError(
            f"{path} has no column {text_col!r}; its columns are: {', '.join(map(str, columns)) or '(none)'}",
            "choose the text column",
            param="text_col",
        )
    has_labels = bool(label_col) and label_col in columns
    if need_labels and not has_labels:
        raise DataError(
            f"{path} has no label column {label_col!r}; its columns are: {', '.join(map(str, columns))}",
            "choose the label column",
            param="label_col",
        )

    texts: list[str] = []
    labels: list[str] | None = [] if has_labels else None
    empty_text, empty_label, cut, spaced = [], [], [], []
    for i, rec in enumerate(records, start=1):
        t = text_value(rec.get(text_col))
        raw_label = rec.get(label_col) if has_labels else None
        lab = cell_value(raw_label) if has_labels else None
        if isinstance(raw_label, str) and lab is not None and raw_label != lab:
            spaced.append(i)
        if t is None:
            empty_text.append(i)
            continue
        if has_labels and lab is None and need_labels:
            empty_label.append(i)
            continue
        if len(t) > max_chars:
            cut.append(i)
            t = t[:max_chars]
        texts.append(t)
        if labels is not None:  # one string per distinct label, not one per row
            labels.append(sys.intern(lab) if lab is not None else "")
    warnings = []
    if spaced:
        warnings.append(
            f"{len(spaced)} labels had spaces around them, which were removed, so ' 1 ' and '1' are one label "
            f"(rows {_fmt_rows(spaced)})"
        )
    if empty_text:
        warnings.append(
            f"{len(empty_text)} rows with an empty or missing text were skipped (rows {_fmt_rows(empty_text)})"
        )
    if empty_label:
        warnings.append(
            f"{len(empty_label)} rows with an empty or missing label were skipped (rows {_fmt_rows(empty_label)})"
        )
    if cut:
        warnings.append(
            f"{len(cut)} texts longer than {max_chars} characters were cut to {max_chars} "
            f"(rows {_fmt_rows(cut)}); raise the character limit to keep more"
        )
    if not texts:
        raise DataError(f"{path} has no usable rows: every row lacks a text" + (" or a label" if need_labels else ""))
    skipped = sorted(i - 1 for i in empty_text + empty_label)
    return Dataset(texts, labels, str(path), warnings, len(records), skipped)


WRITABLE = (".csv", ".tsv", ".jsonl", ".parquet")


def write_records(
    path: str | os.PathLike[str],
    rows: Sequence[Mapping[str, object]],
    param: str = "out",
    spreadsheet_safe: bool = False,
) -> None:
    """Write rows (dicts with the same keys) as CSV, TSV, JSONL or Parquet, chosen by the extension.

    Every cell is written as it is, so offramp (or anything else) reads back exactly what was
    written; in CSV, TSV and Parquet, lists and mappings are written as JSON. ``spreadsheet_safe`` is for
    files meant for people: text a spreadsheet would run as a formula gets a leading apostrophe
    (:func:`offramp.formats.csv_safe`), which changes the data."""
    with RecordWriter(path, param, spreadsheet_safe) as w:
        if not rows and w._f is not None and w.kind != ".jsonl":
            w._f.write("\n")
        for r in rows:
            w.write(r)


class RecordWriter:
    """Rows written one at a time as CSV, TSV, JSONL or Parquet (by the extension). CSV, TSV and
    JSONL are written as they come, for outputs too big to hold; Parquet is written at ``close``.
    Cells follow :func:`write_records`' rules (JSON for lists and mappings, formulas neutralised
    only if ``spreadsheet_safe``); the header comes from the first row."""

    def __init__(self, path: str | os.PathLike, param: str = "out", spreadsheet_safe: bool = False):
        self.path = Path(path)
        self.kind = self.path.suffix.lower()
        if self.kind not in WRITABLE:
            raise UsageError(f"{self.path} must end in {', '.join(WRITABLE)}", param=param)
        self.spreadsheet_safe = spreadsheet_safe
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rows: list[dict[str, object]] = []
        self._f = open(self.path, "w", newline="", encoding="utf-8") if self.kind != ".parquet" else None
        self._csv: csv.DictWriter | None = None

    def write(self, row: Mapping[str, object]) -> None:
        if self._f is None:  # Parquet
            self._rows.append(
                {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v for k, v in row.items()}
            )
            return
        if self.kind == ".jsonl":
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        if self._csv is None:
            self._csv = csv.DictWriter(self._f, fieldnames=list(row), delimiter="\t" if self.kind == ".tsv" else ",")
            self._csv.writeheader()
        cells = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v for k, v in row.items()}
        self._csv.writerow({k: csv_safe(v) for k, v in cells.items()} if self.spreadsheet_safe else cells)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(self._rows), self.path)
        self._rows = []

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
