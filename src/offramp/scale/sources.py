"""Input shards: a file, a directory or a glob of Parquet / JSONL (or one CSV / TSV), read in batches.

Every batch is the texts (None where a row has no usable text: counted and reported by the
caller, never silently dropped) and the columns to keep, in the file's order.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from offramp.data.io import FORMATS
from offramp.data.text import clean_text
from offramp.errors import DataError, UsageError

SHARD_KINDS = ("parquet", "jsonl")


@dataclass
class Shard:
    path: Path
    kind: str  # parquet, jsonl, csv, tsv
    rows: int | None = None  # known up front for Parquet


@dataclass
class Batch:
    texts: list[str | None]
    kept: dict[str, list[object]] = field(default_factory=dict)
    first_row: int = 1  # the shard's row number of texts[0] (1-based, after the header)
    bad_json: list[int] = field(default_factory=list)  # JSONL lines that are not a JSON object


def resolve_shards(spec: str | Path) -> list[Shard]:
    """The shards ``spec`` names, sorted: a file, a directory (its Parquet and JSONL files) or a glob."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and FORMATS.get(p.suffix.lower()) in SHARD_KINDS)
        if not files:
            raise DataError(f"directory {path} holds no .parquet or .jsonl files", "point at the shards' directory")
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"the pattern {text!r} matches no file", "check the path and the pattern")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{path} does not exist", "give a file, a directory of shards or a glob")
    shards = []
    for f in files:
        kind = FORMATS.get(f.suffix.lower())
        if kind is None:
            raise DataError(f"{f} has an unknown extension '{f.suffix}'", "use .parquet, .jsonl, .csv or .tsv")
        if len(files) > 1 and kind not in SHARD_KINDS:
            raise DataError(f"{f}: shards must be Parquet or JSONL (a CSV is read as one file)", "convert the shards")
        rows = None
        if kind == "parquet":
            rows = _parquet_rows(f)
        shards.append(Shard(f, kind, rows))
    return shards


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as e:  # pyarrow raises several kinds for a damaged file
        raise DataError(f"{path} is not a readable Parquet file ({type(e).__name__}: {e})") from None


def _cell(value: object, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{where} is not UTF-8 text (byte 0x{value[e.start]:02x})") from None
    text = clean_text(str(value))  # a JSON escape may hold a lone surrogate, which UTF-8 cannot
    return text if text.strip() else None


def read_batches(shard: Shard, text_col: str, keep: list[str], batch_size: int) -> Iterator[Batch]:
    if shard.kind == "parquet":
        yield from _parquet(shard.path, text_col, keep, batch_size)
    elif shard.kind == "jsonl":
        yield from _jsonl(shard.path, text_col, keep, batch_size)
    else:
        yield from _csv(shard.path, text_col, keep, batch_size, "\t" if shard.kind == "tsv" else ",")


def _check_columns(path: Path, have: list[str], text_col: str, keep: list[str]) -> None:
    if text_col not in have:
        raise DataError(
            f"{path} has no column {text_col!r}; its columns are: {', '.join(have) or '(none)'}",
            "choose the text column",
            param="text_col",
        )
    missing = [c for c in keep if c not in have]
    if missing:
        raise UsageError(f"{path} has no column(s) {', '.join(missing)} to keep", f"its columns are: {', '.join(have)}")


def _parquet(path: Path, text_col: str, keep: list[str], batch_size: int) -> Iterator[Batch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        _check_columns(path, pf.schema_arrow.names, text_col, keep)
        row = 1
        for rb in pf.iter_batches(batch_size=batch_size, columns=list(dict.fromkeys([text_col, *keep]))):
            raw = rb.column(text_col).to_pylist()
            texts = [_cell(v, f"{path} row {row + i} column {text_col!r}") for i, v in enumerate(raw)]
            yield Batch(texts, {c: rb.column(c).to_pylist() for c in keep}, row)
            row += len(raw)
    except (DataError, UsageError):
        raise
    except Exception as e:
        raise DataError(f"{path} could not be read as Parquet ({type(e).__name__}: {e})") from None


def _jsonl(path: Path, text_col: str, keep: list[str], batch_size: int) -> Iterator[Batch]:
    texts: list[str | None] = []
    kept: dict[str, list[object]] = {c: [] for c in keep}
    bad: list[int] = []
    first = 1
    try:
        f = open(path, encoding="utf-8-sig", newline="\n")  # as train reads it: a BOM is not data
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror})") from None
    with f:
        lineno = 0
        try:
            for line in f:
                lineno += 1
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None
                if not isinstance(obj, dict):
                    bad.append(lineno)
                    continue
                texts.append(_cell(obj.get(text_col), f"{path} line {lineno}"))
                for c in keep:
                    kept[c].append(obj.get(c))
                if len(texts) >= batch_size:
                    yield Batch(texts, kept, first, bad)
                    first, texts, kept, bad = lineno + 1, [], {c: [] for c in keep}, []
        except UnicodeDecodeError:
            raise DataError(f"{path} is not UTF-8 text (near line {lineno + 1})") from None
    if texts or bad:
        yield Batch(texts, kept, first, bad)


def _csv(path: Path, text_col: str, keep: list[str], batch_size: int, delimiter: str) -> Iterator[Batch]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        with open(path, "rb") as f:
            names = pcsv.open_csv(
                f, parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
            ).schema.names
        _check_columns(path, [n.strip() for n in names], text_col, keep)
        strip = {n.strip(): n for n in names}
        wanted = list(dict.fromkeys([strip[text_col], *[strip[c] for c in keep]]))
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=1 << 22),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                include_columns=wanted, column_types={n: pa.string() for n in wanted}, strings_can_be_null=True
            ),
        )
        row = 1
        pending_t: list[str | None] = []
        pending_k: dict[str, list[object]] = {c: [] for c in keep}
        start = 1
        for rb in reader:
            raw = rb.column(strip[text_col]).to_pylist()
            pending_t += [_cell(v, f"{path} row {row + i}") for i, v in enumerate(raw)]
            for c in keep:
                pending_k[c] += rb.column(strip[c]).to_pylist()
            row += len(raw)
            while len(pending_t) >= batch_size:
                yield Batch(pending_t[:batch_size], {c: v[:batch_size] for c, v in pending_k.items()}, start)
                start += batch_size
                pending_t = pending_t[batch_size:]
                pending_k = {c: v[batch_size:] for c, v in pending_k.items()}
        if pending_t:
            yield Batch(pending_t, pending_k, start)
    except (DataError, UsageError):
        raise
    except Exception as e:
        raise DataError(f"{path} could not be read as CSV ({type(e).__name__}: {str(e).splitlines()[0]})") from None
