"""Is this chat request one of the tasks, asked the way the task file says? Never a guess.

A request matches a task when its system prompt is the task's (or both have none), its other
turns are the task's example turns (if any) and then one user turn, that user turn fits the template around a
non-empty text, and what it asks back is the task's shape: no ``response_format`` (or ``text``)
for a bare label; ``json_object``, or a ``json_schema`` whose properties hold the label's field
(other required fields only if the task fills them), for a JSON field; the task's tool among the
request's tools (not refused by ``tool_choice: none``) for a tool call. Anything else is a miss,
with the reason it is counted under.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from offramp.proxy.task import ProxyTask

REASONS = ("no_task", "template_changed", "schema_changed", "unfillable_field")


@dataclass(frozen=True)
class Match:
    task: ProxyTask
    text: str
    enum: tuple[str, ...] | None = None  # the labels the request's schema allows, if it lists them


def _content(message: dict[str, Any]) -> str | None:
    c = message.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in c):
        return "".join(str(p.get("text", "")) for p in c)
    return None


def _schema_fit(task: ProxyTask, body: dict[str, Any]) -> tuple[str | None, tuple[str, ...] | None]:
    """(None or the miss reason, the allowed labels) of the request's answer shape for ``task``."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if task.shape == "tool":
        if fmt is not None and kind != "text":
            return "schema_changed", None
        fn = next(
            (
                t.get("function")
                for t in (tools if isinstance(tools, list) else [])
                if isinstance(t, dict)
                and isinstance(t.get("function"), dict)
                and t["function"].get("name") == task.tool
            ),
            None,
        )
        if fn is None or choice == "none":
            return "schema_changed", None
        if isinstance(choice, dict) and (choice.get("function") or {}).get("name") != task.tool:
            return "schema_changed", None
        return _properties_fit(task, fn.get("parameters"))
    if tools:
        return "schema_changed", None
    if task.shape == "label":
        return (None, None) if fmt is None or kind == "text" else ("schema_changed", None)
    if kind == "json_object":
        return None, None
    if kind == "json_schema":
        js = fmt.get("json_schema") if isinstance(fmt, dict) else None
        return _properties_fit(task, js.get("schema") if isinstance(js, dict) else None)
    return "schema_changed", None


def _properties_fit(task: ProxyTask, schema: object) -> tuple[str | None, tuple[str, ...] | None]:
    if not isinstance(schema, dict):
        return "schema_changed", None
    props = schema.get("properties")
    if not isinstance(props, dict) or not isinstance(props.get(task.key), dict):
        return "schema_changed", None
    prop = resolve(schema, props[task.key])
    if prop.get("type") not in (None, "string") and "enum" not in prop:
        return "schema_changed", None
    required = schema.get("required") or []
    if not isinstance(required, list) or any(r != task.key and r not in task.fill for r in required):
        return "unfillable_field", None
    extra = set(task.fill) - set(props)
    if extra and schema.get("additionalProperties") is False:
        return "schema_changed", None
    enum = prop.get("enum")
    return None, tuple(str(x) for x in enum) if isinstance(enum, list) else None


def _same_turns(sent: list[dict[str, Any]], turns: tuple[tuple[str, str], ...]) -> bool:
    return len(sent) == len(turns) and all(
        m.get("role") == role and _content(m) == content and not m.get("tool_calls")
        for m, (role, content) in zip(sent, turns)
    )


def resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` (``#/$defs/Category``, as Pydantic writes an Enum field)
    replaced by what it points to; anything else as it is."""
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: object = root
    for part in ref[2:].split("/"):
        target = target.get(part) if isinstance(target, dict) else None
    return target if isinstance(target, dict) else node


def match(body: dict[str, Any], tasks: Sequence[ProxyTask]) -> Match | str:
    """The task ``body`` (a chat-completions request) asks, with its text; else the miss reason."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return "no_task"
    systems = [m for m in messages if m.get("role") in ("system", "developer")]
    others = [m for m in messages if m.get("role") not in ("system", "developer")]
    system = "\n".join(str(_content(m)) for m in systems) if systems else None
    user = _content(others[-1]) if others and others[-1].get("role") == "user" else None
    best = "no_task"
    for task in tasks:
        text = task.text_of(user) if user is not None else None
        same_system = system == task.system
        if text is None or not same_system or not _same_turns(others[:-1], task.turns):
            # a near miss only when something distinctive of the task is there: its system prompt,
            # or a template with text around the slot (a bare {text} template fits any turn)
            if (text is not None and (task.prefix or task.suffix)) or (same_system and task.system is not None):
                best = "template_changed" if best == "no_task" else best
            continue
        reason, enum = _schema_fit(task, body)
        if reason is None:
            return Match(task, text, enum)
        best = reason if best in ("no_task", "template_changed") else best
    return best
