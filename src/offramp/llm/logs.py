"""Turn an LLM's production logs into a training set.

Each JSONL line is one logged chat completion, either ``{"request": {"messages": [...]},
"response": {"choices": [...]}}`` or the flatter stored-completion shape ``{"messages": [...],
"choices": [...]}`` (``input_messages``/``output`` are accepted too). The input text is one message
of the request (by default the last ``user`` message); the label is read from the reply's content,
either whole or from a JSON field. Rows that cannot give both are skipped and counted by reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from offramp.data.io import WRITABLE, decode_utf8, jsonl_lines, write_records
from offramp.data.text import clean_text
from offramp.errors import DataError, UsageError
from offramp.llm.prompts import parse_label
from offramp.types import JSONDict


@dataclass
class ImportResult:
    """(text, label) rows read from a log file, the lines read and the lines skipped by reason."""

    rows: list[tuple[str, str]]
    skipped: Counter[str]
    lines: int
    out: str | None = None

    def to_dict(self) -> JSONDict:
        return {
            "out": self.out,
            "rows": len(self.rows),
            "lines": self.lines,
            "skipped": dict(self.skipped.most_common()),
        }


def _content(msg) -> str | None:
    if not isinstance(msg, dict):
        return None
    c = msg.get("content")
    if isinstance(c, list):  # content parts
        c = "\n".join(
            str(p.get("text", ""))
            for p in c
            if isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text")
        )
    return c if isinstance(c, str) else None


@dataclass(frozen=True)
class LogRecord:
    """One logged chat completion: its line number, the request, its messages and the first choice."""

    line: int
    request: dict[str, Any]
    messages: list[Any]
    choice: dict[str, Any]


def read_log(path: str | Path) -> tuple[list[LogRecord], Counter[str], int]:
    """(the records, the lines skipped by reason, the lines read) of a chat-completions log file.

    Each line is ``{"request": {...}, "response": {...}}`` or a stored completion with the request's
    and the response's keys side by side (``messages``/``input_messages``, ``choices``/``output``).
    Lines are split as JSON Lines are (only on ``\n``), so text holding U+2028 stays whole."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"log file {p} does not exist")
    text = decode_utf8(p.read_bytes(), p)
    records: list[LogRecord] = []
    skipped: Counter[str] = Counter()
    n = 0
    for _, line in jsonl_lines(text):
        n += 1
        try:
            rec = json.loads(line)
        except ValueError:
            skipped["line is not JSON"] += 1
            continue
        if not isinstance(rec, dict):
            skipped["line is not a JSON object"] += 1
            continue
        req, resp = rec.get("request", rec), rec.get("response", rec)
        messages = (req.get("messages") or req.get("input_messages")) if isinstance(req, dict) else None
        choices = (resp.get("choices") or resp.get("output")) if isinstance(resp, dict) else None
        if not isinstance(messages, list) or not isinstance(req, dict):
            skipped["no request messages"] += 1
            continue
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            skipped["no response choices"] += 1
            continue
        first = choices[0]
        choice = first.get("message", first)
        records.append(LogRecord(n, req, messages, choice if isinstance(choice, dict) else {}))
    if n == 0:
        raise DataError(f"log file {p} has no lines")
    return records, skipped, n


def import_logs(
    path: str | Path,
    *,
    role: str = "user",
    index: int = -1,
    label_field: str | None = None,
    labels: Sequence[str] | None = None,
    multi_label: bool = False,
    sep: str = "|",
    out: str | Path | None = None,
    spreadsheet_safe: bool = False,
) -> ImportResult:
    """(text, label) pairs from a chat-completions log file; with ``out``, written there as a
    training file (.csv, .tsv, .jsonl or .parquet with columns text, label), each text exactly as
    it was logged. A log that gives no usable row is an error naming what was read and skipped.

    ``role``/``index``: which message of the request is the input (the last ``user`` one by default).
    ``label_field``: read the label from this key of a JSON reply (default: the whole reply).
    ``labels``: when given, replies that name none of them are skipped, and matching is lenient
    ("Label: SUPPORT." -> SUPPORT).
    ``multi_label``: the reply (or its ``label_field``) holds several labels, as a JSON list or
    joined by ``sep``; they are written sorted and joined by ``sep``, and an empty list is the
    empty set (a row with an empty label).
    """
    p = Path(path)
    if out is not None and Path(out).suffix.lower() not in WRITABLE:
        raise UsageError(f"{out} must end in {', '.join(WRITABLE)}", param="out")
    records, skipped, n = read_log(p)
    rows: list[tuple[str, str]] = []
    for rec in records:
        messages = rec.messages
        picked = [m for m in messages if isinstance(m, dict) and m.get("role") == role]
        try:
            source = _content(picked[index])
        except IndexError:
            source = None
        if not source or not source.strip():
            skipped[f"no {role} message at index {index}"] += 1
            continue
        reply = _content(rec.choice)
        if reply is None:
            skipped["reply has no text content"] += 1
            continue
        answer: str | None = reply
        if label_field:
            try:
                doc = json.loads(reply)
                value = doc.get(label_field) if isinstance(doc, dict) else None
                answer = None if value is None else json.dumps(value) if isinstance(value, list) else str(value)
            except (ValueError, KeyError):
                answer = None
            if answer is None:
                skipped[f"reply is not JSON with '{label_field}'"] += 1
                continue
        answer = str(answer).strip()
        if multi_label:
            found_set = _label_set(answer, labels, sep)
            if found_set is None:
                skipped["reply is not a list of known labels"] += 1
                continue
            rows.append((clean_text(source), sep.join(found_set)))
            continue
        if labels:
            found = parse_label(answer, labels)
            if found is None:
                skipped["reply names none of the labels"] += 1
                continue
            answer = found
        if not answer:
            skipped["empty reply"] += 1
            continue
        rows.append((clean_text(source), clean_text(answer)))
    if not rows:
        reasons = "; ".join(f"{k} ({v})" for k, v in skipped.most_common(3))
        raise DataError(
            f"no usable rows in {p} ({n} lines read" + (f"; skipped: {reasons})" if reasons else ")"),
            "check which message is the input (role, index) and where the label is (label field)",
        )
    if out is not None:
        write_records(out, [{"text": t, "label": lab} for t, lab in rows], spreadsheet_safe=spreadsheet_safe)
    return ImportResult(rows, skipped, n, str(out) if out is not None else None)


def _label_set(answer: str, labels: Sequence[str] | None, sep: str) -> list[str] | None:
    """A reply's labels: a JSON list (or {"labels": [...]}) or labels joined by ``sep``; None when
    it names a label outside ``labels`` (if given)."""
    items: list[str] | None = None
    try:
        doc = json.loads(answer)
        doc = doc.get("labels") if isinstance(doc, dict) else doc
        if isinstance(doc, list):
            items = [str(x).strip() for x in doc]
    except ValueError:
        pass
    if items is None:
        items = [x.strip() for x in answer.split(sep)]
    items = [x for x in items if x]
    if labels:
        by_lower = {str(lab).lower(): str(lab) for lab in labels}
        if any(x.lower() not in by_lower for x in items):
            return None
        items = [by_lower[x.lower()] for x in items]
    return sorted(set(items))
