"""A task file: how an app asks its LLM for this classification, and the shape it reads back.

```yaml
name: route-ticket                     # optional, shown in metrics and logs
model: gpt-4o-mini                     # optional: the model the app asks for (informative)
system: "You route support tickets."   # the system prompt, exactly (leave out: the app sends none)
turns:                                 # optional: example turns the app sends before the message
  - {role: user, content: "Ticket: my card is lost"}
  - {role: assistant, content: "SUPPORT"}
template: "Classify this ticket.\\n\\nTicket: {text}\\n\\nAnswer with one category."
shape: label                           # the answer: the bare label, or
# shape: {json_field: category}        #   a JSON object with the label in this field, or
# shape: {tool: route_ticket, argument: category}   # a call of this tool with the label as this argument
fill: {reason: ""}                     # optional: values for other required fields of a schema
labels: [SUPPORT, GRATITUDE, TRY_TO_HACK, OTHER]   # optional: the labels the app accepts
```

The template's ``{text}`` slot (exactly one; ``{{`` and ``}}`` for literal braces) is where the
message goes; the text the small model classifies is what a request puts there. The system prompt
and the example turns are compared exactly: a request that changes them is not the task.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from offramp.errors import UsageError

SLOT = "{text}"


@dataclass(frozen=True)
class ProxyTask:
    """One task the proxy answers; see the module docstring."""

    template: str
    name: str = "task"
    system: str | None = None
    shape: str = "label"  # label, json_field or tool
    key: str | None = None  # json_field: the label's field; tool: the label's argument
    tool: str | None = None
    fill: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    turns: tuple[tuple[str, str], ...] = ()  # (role, content) of the example turns before the message
    model: str | None = None

    @cached_property
    def prefix(self) -> str:
        return _unescape(self.template[: _slot_at(self.template)])

    @cached_property
    def suffix(self) -> str:
        return _unescape(self.template[_slot_at(self.template) + len(SLOT) :])

    def text_of(self, content: str) -> str | None:
        """The text a user turn puts in the slot, or None when the turn does not fit the template."""
        pre, post = self.prefix, self.suffix
        if len(content) <= len(pre) + len(post) or not content.startswith(pre) or not content.endswith(post):
            return None
        text = content[len(pre) : len(content) - len(post)]
        return text if text.strip() else None


def _unescape(s: str) -> str:
    return s.replace("{{", "{").replace("}}", "}")


def escape(s: str) -> str:
    """``s`` as literal template text (braces doubled)."""
    return s.replace("{", "{{").replace("}", "}}")


def _slots(template: str) -> list[int]:
    """Where the template's unescaped ``{text}`` slots start."""
    found, i = [], 0
    while i < len(template):
        if template.startswith("{{", i) or template.startswith("}}", i):
            i += 2
        elif template.startswith(SLOT, i):
            found.append(i)
            i += len(SLOT)
        else:
            i += 1
    return found


def _slot_at(template: str) -> int:
    return _slots(template)[0]


def task_from_dict(doc: object, where: str) -> ProxyTask:
    """A task from a task file's mapping; a UsageError naming the problem otherwise."""
    if not isinstance(doc, dict):
        raise UsageError(f"{where} must be a YAML mapping with a 'template:'")
    unknown = sorted(set(doc) - {"name", "system", "template", "shape", "fill", "labels", "model", "turns"})
    if unknown:
        raise UsageError(
            f"{where}: unknown key(s) {', '.join(unknown)}", "see 'Put offramp in front of your app' in the docs"
        )
    template = doc.get("template")
    if not isinstance(template, str):
        raise UsageError(f"{where}: 'template:' must be the user turn's text with a {SLOT} slot")
    slots = len(_slots(template))
    if slots != 1:
        raise UsageError(
            f"{where}: the template has {slots} {SLOT} slots; it needs exactly one",
            "mark where the message goes with {text} (write {{ and }} for literal braces)",
        )
    system = doc.get("system")
    if system is not None and not isinstance(system, str):
        raise UsageError(f"{where}: 'system:' must be text")
    shape, fld, tool = "label", None, None
    raw = doc.get("shape", "label")
    if isinstance(raw, dict) and set(raw) == {"json_field"} and isinstance(raw["json_field"], str):
        shape, fld = "json_field", raw["json_field"]
    elif isinstance(raw, dict) and set(raw) == {"tool", "argument"} and all(isinstance(v, str) for v in raw.values()):
        shape, fld, tool = "tool", raw["argument"], raw["tool"]
    elif raw != "label":
        raise UsageError(
            f"{where}: 'shape:' must be label, {{json_field: NAME}} or {{tool: NAME, argument: NAME}}, got {raw!r}"
        )
    fill = doc.get("fill") or {}
    if not isinstance(fill, dict):
        raise UsageError(f"{where}: 'fill:' must map field names to the values to send")
    turns = doc.get("turns") or []
    if not isinstance(turns, list) or not all(
        isinstance(t, dict)
        and set(t) == {"role", "content"}
        and t["role"] in ("user", "assistant")
        and isinstance(t["content"], str)
        for t in turns
    ):
        raise UsageError(f"{where}: 'turns:' must be a list of {{role: user|assistant, content: TEXT}}")
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise UsageError(f"{where}: 'model:' must be the model name the app asks for")
    labels = doc.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, (str, int)) for x in labels):
        raise UsageError(f"{where}: 'labels:' must be a list of labels")
    return ProxyTask(
        template=template,
        name=str(doc.get("name") or "task"),
        system=system,
        shape=shape,
        key=fld,
        tool=tool,
        fill=dict(fill),
        labels=tuple(str(x) for x in labels),
        turns=tuple((t["role"], t["content"]) for t in turns),
        model=model,
    )


def read_task(path: str | os.PathLike[str]) -> ProxyTask:
    from offramp.data.io import read_yaml_file

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"task file {p} does not exist", "write one (see the docs) or name it in the pipeline's task:")
    return task_from_dict(read_yaml_file(p, "task file"), str(p))
