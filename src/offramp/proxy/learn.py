"""A task file learned from an app's own logs: which prompt is the classification, where its
message goes, and the shape its answer comes back in.

Logged requests are grouped by what stays the same when the task is asked: the system prompt, the
turns before the last user turn (few-shot examples are constant), and what the request asks back
(``response_format``, the tool that was called). In each group the template is the text every user
turn shares at its start and its end (cut back to a word boundary, so a message's first word is
never taken for the template), and the message is what lies between. The answer's shape is read
from the replies: a bare label, a JSON field (the schema's ``enum`` field when there is one, else
the string field with the fewest distinct values), or a tool call's argument. A group whose replies
are free text (a summary, a drafted reply) is not a classification; of the groups that are, the
largest is the task. Nothing is guessed silently: what was read, grouped and left out is reported.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from offramp.data.io import WRITABLE, write_records
from offramp.data.text import clean_text
from offramp.errors import DataError, UsageError
from offramp.llm.logs import LogRecord, read_log
from offramp.llm.prompts import parse_label
from offramp.proxy.match import resolve
from offramp.proxy.task import SLOT, ProxyTask, escape
from offramp.types import JSONDict

MIN_REQUESTS = 20


@dataclass(frozen=True)
class Group:
    """One kind of prompt found in the logs."""

    requests: int
    system: str | None
    shape: str  # label, json_field, tool or free_text
    distinct_answers: int
    template: str | None = None

    def to_dict(self) -> JSONDict:
        return {
            "requests": self.requests,
            "system": _short(self.system) if self.system else None,
            "shape": self.shape,
            "distinct_answers": self.distinct_answers,
            "template": _short(self.template) if self.template else None,
        }


@dataclass
class LearnedTask:
    """The task, the training rows its requests give (the message, the label), and the accounting."""

    task: ProxyTask
    rows: list[tuple[str, str]]
    lines: int
    skipped: Counter[str]
    groups: list[Group]
    unfilled: list[str] = field(default_factory=list)  # other required fields of the schema
    out: str | None = None
    task_out: str | None = None

    def to_dict(self) -> JSONDict:
        t = self.task
        return {
            "out": self.out,
            "task_out": self.task_out,
            "rows": len(self.rows),
            "lines": self.lines,
            "skipped": dict(self.skipped.most_common()),
            "task": task_to_dict(t),
            "unfilled_fields": self.unfilled,
            "groups": [g.to_dict() for g in self.groups],
        }


def _short(s: str, n: int = 60) -> str:
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[: n - 1] + "…"


def _text(msg: object) -> str | None:
    if not isinstance(msg, dict):
        return None
    c = msg.get("content")
    if isinstance(c, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in c):
        return "".join(str(p.get("text", "")) for p in c)
    return c if isinstance(c, str) else None


def _canon(x: object) -> str:
    return json.dumps(x, sort_keys=True, ensure_ascii=False)


@dataclass
class _Seen:
    content: str
    answer: str | None  # the reply's text, or the tool call's arguments
    model: str | None


def _shape_key(rec: LogRecord) -> tuple[str, str, str | None] | str:
    """(shape kind, a canonical form of what the request asks back, tool name), or a skip reason."""
    req, choice = rec.request, rec.choice
    calls = choice.get("tool_calls")
    if isinstance(calls, list) and calls:
        fn = calls[0].get("function") if isinstance(calls[0], dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            return "tool call without a function name"
        raw = req.get("tools")
        tools: list[Any] = raw if isinstance(raw, list) else []
        spec = next(
            (
                t["function"]
                for t in tools
                if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name") == name
            ),
            None,
        )
        return "tool", _canon(spec), name
    fmt = req.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        return "json_schema", _canon(fmt), None
    if kind == "json_object":
        return "json_object", "", None
    if fmt is not None and kind != "text":
        return "response_format is not text, json_object or json_schema"
    if req.get("tools"):
        return "text", _canon(req.get("tools")), None
    return "text", "", None


def _answer(rec: LogRecord, kind: str) -> str | None:
    if kind == "tool":
        fn = rec.choice["tool_calls"][0].get("function") or {}
        args = fn.get("arguments")
        return args if isinstance(args, str) else _canon(args) if isinstance(args, dict) else None
    return _text(rec.choice)


def _common_prefix(items: Sequence[str]) -> str:
    lo, hi = min(items), max(items)
    i = 0
    while i < len(lo) and i < len(hi) and lo[i] == hi[i]:
        i += 1
    return lo[:i]


def _template(contents: Sequence[str]) -> tuple[str, str] | None:
    """(constant start, constant end) of the user turns, or None when nothing varies between them."""
    if len(set(contents)) < 2:
        return None
    pre = _common_prefix(contents)
    # never end the constant start inside a word that goes on in some message
    while pre and pre[-1].isalnum() and any(len(c) > len(pre) and c[len(pre)].isalnum() for c in contents):
        pre = pre[:-1]
    shortest = min(len(c) for c in contents)
    room = shortest - len(pre) - 1  # at least one character of message in every request
    post = _common_prefix([c[len(pre) :][::-1] for c in contents])[::-1]
    post = post[len(post) - max(0, min(len(post), room)) :] if room < len(post) else post
    while (
        post
        and post[0].isalnum()
        and any(len(c) - len(post) > len(pre) and c[-len(post) - 1].isalnum() for c in contents)
    ):
        post = post[1:]
    return pre, post


def _json_key(docs: list[dict[str, Any]], schema: object, forced: str | None) -> str | None:
    """The field of the JSON answers that holds the label."""
    if forced is not None:
        return forced
    props = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(schema, dict) and isinstance(props, dict):
        with_enum = [
            k for k, v in props.items() if isinstance(v, dict) and isinstance(resolve(schema, v).get("enum"), list)
        ]
        if len(with_enum) == 1:
            return with_enum[0]
    counts: dict[str, set[str]] = defaultdict(set)
    for d in docs:
        for k, v in d.items():
            if isinstance(v, (str, int)) and not isinstance(v, bool):
                counts[k].add(str(v))
    present = [k for k in counts if sum(1 for d in docs if k in d) == len(docs)]
    if not present:
        return None
    return min(present, key=lambda k: (len(counts[k]), k))


def _schema_of(kind: str, rec: LogRecord, tool: str | None) -> object:
    req: dict[str, Any] = rec.request
    if kind == "json_schema":
        js = (req.get("response_format") or {}).get("json_schema")
        return js.get("schema") if isinstance(js, dict) else None
    if kind == "tool":
        for t in req.get("tools") or []:
            if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name") == tool:
                return t["function"].get("parameters")
    return None


def learn_task(
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str] | None = None,
    label_field: str | None = None,
    min_requests: int = MIN_REQUESTS,
    name: str | None = None,
    out: str | os.PathLike[str] | None = None,
    task_out: str | os.PathLike[str] | None = None,
    spreadsheet_safe: bool = False,
) -> LearnedTask:
    """The task an app asks its LLM, learned from its chat-completions log at ``path`` (see the
    module docstring), with the (message, label) rows of the requests that asked it.

    ``labels``: when given, replies are matched to them leniently and replies naming none are
    skipped. ``label_field``: the JSON field or tool argument that holds the label, when it should
    not be inferred. ``min_requests``: the fewest requests a prompt needs to count as a task.
    ``out``: write the rows there as a training file (text, label; each message exactly as the app
    sent it); ``task_out``: write the task file there."""
    if out is not None and Path(out).suffix.lower() not in WRITABLE:
        raise UsageError(f"{out} must end in {', '.join(WRITABLE)}", param="out")
    if task_out is not None and Path(task_out).suffix.lower() not in (".yaml", ".yml"):
        raise UsageError(f"{task_out} must end in .yaml or .yml", param="task_out")
    records, skipped, lines = read_log(Path(path))
    groups: dict[tuple[Any, ...], list[tuple[LogRecord, str]]] = defaultdict(list)
    for rec in records:
        msgs = [m for m in rec.messages if isinstance(m, dict)]
        systems = [m for m in msgs if m.get("role") in ("system", "developer")]
        others = [m for m in msgs if m.get("role") not in ("system", "developer")]
        user = _text(others[-1]) if others and others[-1].get("role") == "user" else None
        if user is None or not user.strip():
            skipped["the last turn is not a user message with text"] += 1
            continue
        turns = tuple((str(m.get("role")), _text(m)) for m in others[:-1])
        if any(c is None or r not in ("user", "assistant") for r, c in turns):
            skipped["an earlier turn is not plain user or assistant text"] += 1
            continue
        system = "\n".join(str(_text(m)) for m in systems) if systems else None
        shape = _shape_key(rec)
        if isinstance(shape, str):
            skipped[shape] += 1
            continue
        groups[(system, turns) + shape].append((rec, user))
    if not groups:
        reasons = "; ".join(f"{k} ({v})" for k, v in skipped.most_common(3))
        raise DataError(f"no chat requests to learn a task from in {path} ({lines} lines read; skipped: {reasons})")

    found: list[Group] = []
    best: tuple[int, ProxyTask, list[tuple[str, str]], Counter[str], list[str]] | None = None
    for (system, turns, kind, _, tool), members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        contents = [u for _, u in members]
        tpl = _template(contents)
        answers = [_answer(rec, kind) for rec, _ in members]
        distinct = len({a for a in answers if a is not None})
        shape = {"text": "label", "json_schema": "json_field", "json_object": "json_field", "tool": "tool"}[kind]
        key: str | None = None
        enum: list[str] = []
        unfilled: list[str] = []
        values: list[str | None] = []
        if shape == "label":
            values = [a.strip() if a is not None else None for a in answers]
        else:
            docs: list[dict[str, Any] | None] = []
            for a in answers:
                try:
                    d = json.loads(a) if a is not None else None
                except ValueError:
                    d = None
                docs.append(d if isinstance(d, dict) else None)
            schema = _schema_of(kind, members[0][0], tool)
            key = _json_key([d for d in docs if d is not None], schema, label_field)
            props = schema.get("properties") if isinstance(schema, dict) else None
            prop = props.get(key) if isinstance(props, dict) and key is not None else None
            prop = resolve(schema, prop) if isinstance(schema, dict) and isinstance(prop, dict) else prop
            if isinstance(prop, dict) and isinstance(prop.get("enum"), list):
                enum = [str(x) for x in prop["enum"]]
            required = schema.get("required") if isinstance(schema, dict) else None
            unfilled = [str(r) for r in required or [] if r != key] if isinstance(required, list) else []
            values = [None if d is None or key is None or key not in d else str(d[key]).strip() for d in docs]
        allowed = list(labels or enum)
        if allowed:
            values = [parse_label(v, allowed) if v else None for v in values]
        named = [v for v in values if v]
        is_task = (
            tpl is not None
            and len(members) >= min_requests
            and 2 <= len(set(named)) <= max(2, len(members) // 2)
            and len(named) >= len(members) / 2
        )
        template = escape(tpl[0]) + SLOT + escape(tpl[1]) if tpl is not None else None
        found.append(Group(len(members), system, shape if is_task else "free_text", distinct, template))
        if not is_task or (best is not None and best[0] >= len(members)):
            continue
        assert tpl is not None and template is not None
        pre, post = tpl
        rows: list[tuple[str, str]] = []
        left: Counter[str] = Counter()
        for (_, content), value in zip(members, values):
            if not value:
                left["the reply names no label" if shape == "label" else f"the reply has no '{key}'"] += 1
                continue
            rows.append((clean_text(content[len(pre) : len(content) - len(post)]), value))
        models = Counter(str(rec.request.get("model")) for rec, _ in members if rec.request.get("model"))
        task = ProxyTask(
            template=template,
            name=name or tool or _schema_name(members[0][0]) or "task",
            system=system,
            shape=shape,
            key=key,
            tool=tool,
            labels=tuple(allowed or sorted(set(named))),
            turns=tuple((r, c) for r, c in turns if c is not None),
            model=models.most_common(1)[0][0] if models else None,
        )
        best = (len(members), task, rows, left, unfilled)
    if best is None:
        kinds = "; ".join(
            f"{g.requests} requests{' (system: ' + _short(g.system, 40) + ')' if g.system else ''}, "
            f"{g.distinct_answers} distinct answers"
            for g in found[:3]
        )
        raise DataError(
            f"no stable classification prompt in {path}: {len(found)} kinds of prompt, none asked at least "
            f"{min_requests} times with a constant template and a small set of answers ({kinds})",
            "log more requests of the task, lower --min-requests, or write the task file by hand",
        )
    n, task, rows, left, unfilled = best
    skipped.update(left)
    other = sum(g.requests for g in found) - n
    if other:
        skipped[f"another prompt than the task ({len(found) - 1} kinds)"] += other
    if not rows:
        raise DataError(f"the task's requests in {path} give no (message, label) row ({dict(left)})")
    if out is not None:
        write_records(out, [{"text": t, "label": lab} for t, lab in rows], spreadsheet_safe=spreadsheet_safe)
    if task_out is not None:
        write_task(task, task_out, source=Path(path).name)
    return LearnedTask(
        task,
        rows,
        lines,
        skipped,
        found,
        unfilled,
        str(out) if out is not None else None,
        str(task_out) if task_out is not None else None,
    )


def _schema_name(rec: LogRecord) -> str | None:
    fmt = rec.request.get("response_format")
    js = fmt.get("json_schema") if isinstance(fmt, dict) else None
    name = js.get("name") if isinstance(js, dict) else None
    return name if isinstance(name, str) and name else None


def task_to_dict(task: ProxyTask) -> JSONDict:
    """The task as its task file holds it."""
    doc: JSONDict = {"name": task.name}
    if task.model:
        doc["model"] = task.model
    if task.system is not None:
        doc["system"] = task.system
    if task.turns:
        doc["turns"] = [{"role": r, "content": c} for r, c in task.turns]
    doc["template"] = task.template
    if task.shape == "json_field":
        doc["shape"] = {"json_field": task.key}
    elif task.shape == "tool":
        doc["shape"] = {"tool": task.tool, "argument": task.key}
    else:
        doc["shape"] = "label"
    if task.fill:
        doc["fill"] = dict(task.fill)
    doc["labels"] = list(task.labels)
    return doc


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, s: str) -> yaml.Node:
    # several lines read best as a block; PyYAML falls back to quotes when a block cannot hold it
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


_Dumper.add_representer(str, _str)


def write_task(task: ProxyTask, path: str | os.PathLike[str], source: str | None = None) -> None:
    """Write ``task`` as a task file (readable, editable; it reads back as the same task)."""
    head = "# offramp task file: how the app asks for this classification and the shape it reads back\n"
    if source:
        head += f"# learned from {source}; edit freely (the template's {{text}} slot is where the message goes)\n"
    body = yaml.dump(task_to_dict(task), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    Path(path).write_text(head + body, encoding="utf-8")
