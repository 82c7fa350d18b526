"""The ``stages:`` of a pipeline file, read and checked before any model answers.

```yaml
label_sep: "/"                  # the full label joins the labelling stages' labels with this
stages:
  - {name: guard, kind: guard}  # the pipeline's privacy guard (its privacy: section)
  - name: abuse                 # a small model of its own
    kind: classify
    model: abuse/               # a model directory or a registry (relative to this file)
    label: false                # its label is not part of the full label ...
    stop: [TRY_TO_HACK]         # ... unless the chain ends here, on one of these labels
  - name: router
    kind: classify
    model: router/
    thresholds: {"*": 0.5}      # under this confidence this stage's question goes to the LLM
  - name: support
    kind: classify
    model: support/
    when: router.label == SUPPORT   # clauses joined by "and": STAGE.label ==, !=, in [..], not in [..];
                                    # STAGE.confidence <, <=, >, >= a number
  - name: ask
    kind: llm                   # the pipeline's llm: picks the full label ...
    below: 0.5                  # ... of the messages whose confidence so far is below this
  - name: act
    kind: action
    actions:                    # keyed by the full label, as in a single model's pipeline
      SUPPORT/card_arrival: {type: reply, text: "Cards arrive within 5 working days."}
```

Stages run in the order listed; a stage whose ``when:`` does not hold (or names a stage that did
not run) is skipped. A ``when:`` may only name a classify stage listed before it, and only labels
that stage's model has; jumping back is impossible by construction. Anything wrong is refused at
load with one line naming the stage and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Dict, List, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offramp.errors import UsageError

KINDS = ("guard", "classify", "llm", "action", "validate")
STAGE_NAME = r"^[A-Za-z_][A-Za-z0-9_-]*$"


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=STAGE_NAME, max_length=64)]
    kind: Literal["guard", "classify", "action", "llm", "validate"]
    model: Optional[str] = None  # classify: a model directory or a registry
    remote: Optional[str] = None  # classify: another offramp service answering this stage (instead of model:)
    labels: Optional[List[str]] = None  # remote: its labels, so the chain can start while it is down
    timeout_s: float = Field(2.0, gt=0, le=600)  # remote: the deadline of one call
    api_key_env: Optional[str] = None  # remote: the variable holding its API key
    replicas: int = Field(1, ge=1, le=64)  # classify, served with --engine ray: the stage's Ray Serve replicas
    when: Optional[str] = None
    thresholds: Optional[Dict[str, Annotated[float, Field(ge=0, le=1.01)]]] = None
    label: bool = True  # classify: its label is a part of the full label
    stop: List[str] = []  # classify: on these labels no later classify stage runs (actions still do)
    suffix: Dict[str, str] = {}  # classify: label -> the part that follows it (a parent with one child)
    actions: Dict[str, Dict[str, Any]] = {}  # action: what to do, per full label
    check: Optional[Literal["guard"]] = None  # validate: the privacy guard on the reply (or model:)
    block: List[str] = []  # validate with a model: the labels that fail the reply
    on_fail: Optional[Literal["block", "replace", "review"]] = None  # validate: what a failed reply gets
    text: Optional[str] = None  # validate, on_fail block: what is said instead
    below: Optional[float] = Field(None, ge=0, le=1)  # llm: only the messages whose confidence so far is below this
    reply: bool = False  # llm: write a reply to the message (a generator) instead of picking its full label
    system: Optional[str] = None  # llm, reply: the system prompt of the reply
    max_tokens: int = Field(256, ge=1, le=8192)  # llm, reply: the reply's length at most


@dataclass(frozen=True)
class Clause:
    """One test of a ``when:``: ``stage.label == SUPPORT``, ``stage.confidence >= 0.8``."""

    stage: str
    field: str  # "label" or "confidence"
    op: str
    value: str | float | tuple[str, ...]

    def holds(self, label: str, confidence: float) -> bool:
        v = self.value
        if self.field == "confidence":
            assert isinstance(v, float)
            return {
                "<": confidence < v,
                "<=": confidence <= v,
                ">": confidence > v,
                ">=": confidence >= v,
                "==": confidence == v,
                "!=": confidence != v,
            }[self.op]
        if self.op == "==":
            return label == v
        if self.op == "!=":
            return label != v
        assert isinstance(v, tuple)
        return (label in v) == (self.op == "in")

    def labels(self) -> tuple[str, ...]:
        if self.field != "label":
            return ()
        return self.value if isinstance(self.value, tuple) else (str(self.value),)


_CLAUSE = re.compile(
    r"^\s*(?P<stage>[A-Za-z_][A-Za-z0-9_-]*)\.(?P<field>[A-Za-z_]+)\s*"
    r"(?P<op>==|!=|<=|>=|<|>|not\s+in|in)\s*(?P<value>.+?)\s*$"
)


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def parse_when(text: str, where: str) -> list[Clause]:
    """The clauses of a ``when:`` (joined by ``and``); a UsageError naming ``where`` otherwise."""
    hint = "write e.g. router.label == SUPPORT, router.label in [A, B] or router.confidence >= 0.8, joined by 'and'"
    clauses = []
    for part in re.split(r"\s+and\s+(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", text.strip()):  # not inside quotes
        m = _CLAUSE.match(part)
        if m is None:
            raise UsageError(f"{where}: cannot read {part.strip()!r}", hint)
        field, op, raw = m["field"], re.sub(r"\s+", " ", m["op"]), m["value"]
        value: str | float | tuple[str, ...]
        if field == "label":
            if op in ("in", "not in"):
                if not (raw.startswith("[") and raw.endswith("]")):
                    raise UsageError(f"{where}: {op} takes a list, e.g. [A, B]", hint)
                value = tuple(_unquote(x) for x in raw[1:-1].split(",") if x.strip())
                if not value:
                    raise UsageError(f"{where}: the list after {op} is empty", hint)
            elif op in ("==", "!="):
                value = _unquote(raw)
            else:
                raise UsageError(f"{where}: a label is compared with ==, !=, in or not in, not {op}", hint)
        elif field == "confidence":
            if op in ("in", "not in"):
                raise UsageError(f"{where}: a confidence is compared with <, <=, >, >=", hint)
            try:
                value = float(raw)
            except ValueError:
                raise UsageError(f"{where}: {raw!r} is not a number", hint) from None
        else:
            raise UsageError(f"{where}: a stage has .label and .confidence, not .{field}", hint)
        clauses.append(Clause(m["stage"], field, op, value))
    return clauses


def _check_validate(st: StageSpec, where: str) -> None:
    if (st.check is None) == (st.model is None):
        raise UsageError(
            f"{where}: a validate stage checks the reply with check: guard or with a model:, one of them",
            "check: guard refuses personal data in the reply; a model: with block: [LABELS] refuses those labels",
        )
    if st.model is not None and not st.block:
        raise UsageError(f"{where}: block: name the model's labels that fail a reply", "for example block: [UNSAFE]")
    if st.check is not None and st.block:
        raise UsageError(f"{where}: block: goes with a model:, and this stage checks with the guard")
    if st.on_fail == "replace" and st.check is None:
        raise UsageError(
            f"{where}: on_fail: replace masks the personal data in the reply, which needs check: guard",
            "a model's verdict can block the reply or send it to review",
        )
    extra = [k for k in ("thresholds", "stop", "suffix") if getattr(st, k)]
    if extra:
        raise UsageError(f"{where}: {extra[0]}: goes with a classify stage, and this is a validate stage")


def _check_llm(st: StageSpec, where: str, later: Sequence[Any]) -> None:
    if st.reply and st.labels:
        raise UsageError(f"{where}: labels: a reply stage writes text; labels: go with an llm stage that labels")
    if not st.reply:
        if st.system is not None:
            raise UsageError(f"{where}: system: is the prompt of a reply (reply: true)")
        # the LLM gives the whole label: a classify stage after it would add a part to an answer already given
        after = next(
            (
                d.get("name")
                for d in later
                if isinstance(d, dict) and d.get("kind") == "classify" and d.get("label", True) is not False
            ),
            None,
        )
        if after is not None:
            raise UsageError(
                f"{where}: an llm stage answers the full label, and classify stage {after} comes after it",
                "list the llm stage after every classify stage that adds a part of the label",
            )


def read_stages(raw: Sequence[Any], path: object) -> list[StageSpec]:
    """The stages of a pipeline file, each checked on its own and against the ones before it (the
    checks that need the models' labels are made when the chain is built)."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise UsageError(f"{path}: stages: must be a non-empty list", "each stage has a name and a kind")
    stages: list[StageSpec] = []
    seen: set[str] = set()
    for i, doc in enumerate(raw):
        if not isinstance(doc, dict):
            raise UsageError(f"{path}: stages[{i}] must be a mapping with a name and a kind")
        name = doc.get("name", f"#{i}")
        try:
            st = StageSpec.model_validate(doc)
        except ValidationError as e:
            first = e.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise UsageError(f"{path}: stage {name}: {key}: {first['msg']}") from None
        where = f"{path}: stage {st.name}"
        if st.name in seen:
            raise UsageError(f"{where}: name: another stage has this name", "give each stage its own name")
        if st.kind == "classify" and (st.model is None) == (st.remote is None):
            raise UsageError(
                f"{where}: model: a classify stage needs a model directory or a registry (model:), or another "
                "offramp service (remote:), one of them"
            )
        if st.kind != "classify" and (st.remote or (st.labels and st.kind != "llm") or st.api_key_env):
            key = next(k for k in ("remote", "labels", "api_key_env") if getattr(st, k))
            raise UsageError(f"{where}: {key}: goes with a classify stage, and this is a {st.kind} stage")
        if st.kind == "llm":
            _check_llm(st, where, raw[i + 1 :])
        else:
            given = {"below": st.below is not None, "reply": st.reply, "system": st.system is not None}
            given["max_tokens"] = "max_tokens" in doc
            misplaced = next((k for k, v in given.items() if v), None)
            if misplaced is not None:
                raise UsageError(f"{where}: {misplaced}: goes with an llm stage, and this is a {st.kind} stage")
        if st.kind == "validate":
            _check_validate(st, where)
        elif any((st.check, st.block, st.on_fail, st.text)):
            key = next(k for k in ("check", "block", "on_fail", "text") if getattr(st, k))
            raise UsageError(f"{where}: {key}: goes with a validate stage, and this is a {st.kind} stage")
        if st.kind not in ("classify", "validate"):
            extra = [k for k in ("model", "thresholds") if getattr(st, k)] + [
                k for k in ("stop", "suffix") if getattr(st, k)
            ]
            if extra:
                raise UsageError(f"{where}: {extra[0]}: goes with a classify stage, and this is a {st.kind} stage")
        if st.kind != "action" and st.actions:
            raise UsageError(f"{where}: actions: go in a stage of kind action")
        if st.kind == "action" and not st.actions:
            raise UsageError(f"{where}: actions: an action stage needs at least one action")
        if st.kind == "guard" and st.when:
            raise UsageError(f"{where}: when: the guard sees every message and takes no condition")
        if st.when:
            for c in parse_when(st.when, f"{where}: when"):
                if c.stage == st.name:
                    raise UsageError(f"{where}: when: names the stage itself", "a condition names an earlier stage")
                if c.stage not in seen:
                    later = any(isinstance(d, dict) and d.get("name") == c.stage for d in raw[i + 1 :])
                    raise UsageError(
                        f"{where}: when: {c.stage} is "
                        + ("a later stage (the chain would go back: a cycle)" if later else "not a stage"),
                        "a condition names a classify stage listed before it",
                    )
                if next(s for s in stages if s.name == c.stage).kind != "classify":
                    raise UsageError(f"{where}: when: {c.stage} is not a classify stage, it has no label")
        seen.add(st.name)
        stages.append(st)
    if not any(s.kind == "classify" for s in stages):
        raise UsageError(f"{path}: stages: no classify stage", "a chain needs at least one small model")
    written: dict[str, str] = {}
    for st in stages:
        for key in st.actions:
            if key in written:
                raise UsageError(
                    f"{path}: stage {st.name}: actions: {key} is also written by stage {written[key]}",
                    "give each label's action in one stage",
                )
            written[key] = st.name
    return stages
