"""A hierarchy of labels (``support/card_arrival``) trained as a chain in one call.

:func:`train_hierarchy` trains a router on the parents and one model per parent that has more than
one child, each into a registry of its own under ``DIR/stages/``, and writes ``DIR/pipeline.yaml``
chaining them (guard → router → the parent's model, chosen by ``when: router.label == PARENT``).
A parent with a single child needs no model: the router's stage completes its label (``suffix:``).

Every model trains on the same rows: one stratified share of the full labels is held out first and
frozen as each registry's gate set (the router's with the parents, each child's with its own rows).
A flat model over the full labels is trained beside them, on the same rows, into ``DIR/flat`` —
its gate set holds the full labels, so it is also the chain's end-to-end gate — so that
``offramp eval`` can show the chain beside it.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from offramp.data.io import Dataset, read_dataset
from offramp.errors import DataError, UsageError
from offramp.estimators.features import NgramFeaturizer
from offramp.estimators.tfidf import TfidfLinear
from offramp.registry.versions import gate_split
from offramp.training.train import train

PIPELINE_FILE = "pipeline.yaml"


@dataclass
class StageTrained:
    """One stage's model: what it learned and where it went."""

    stage: str
    labels: list[str]
    rows: int
    winner: str
    cv_macro_f1: float
    registry: str
    version: str
    parent: str | None = None  # a child model: the parent it refines
    seconds: float = 0.0


@dataclass
class HierarchyReport:
    """What :func:`train_hierarchy` trained and wrote."""

    out_dir: str
    pipeline: str
    separator: str
    rows: int  # training rows (the gate rows are held out)
    gate_rows: int
    parents: dict[str, list[str]]  # parent -> its children
    stages: list[StageTrained]
    single_child: dict[str, str]  # parents with one child: no model, the router completes the label
    flat: StageTrained | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_labels(labels: Sequence[str], sep: str, rows: Sequence[int] | None = None) -> tuple[list[str], list[str]]:
    """(parents, children) of labels written ``parent{sep}child`` (split at the first separator);
    a label without the separator, or with an empty side, is refused naming its row."""
    if not sep:
        raise UsageError("the hierarchy separator is empty", 'give the character between parent and child, e.g. "/"')
    if not any(sep in lab for lab in labels):
        raise UsageError(
            f"the separator {sep!r} never appears in a label",
            "write labels as parent" + sep + "child, or give the parent in its own column with --parent-col",
        )
    parents, children = [], []
    for i, lab in enumerate(labels):
        row = rows[i] if rows is not None else i + 1
        parent, found, child = lab.partition(sep)
        if not found:
            raise DataError(f"row {row}: label {lab!r} has no {sep!r}", "give every label as parent" + sep + "child")
        if not parent.strip() or not child.strip():
            side = "parent" if not parent.strip() else "child"
            raise DataError(
                f"row {row}: label {lab!r} has an empty {side}", "give every label as parent" + sep + "child"
            )
        parents.append(parent)
        children.append(child)
    return parents, children


def _stage_name(parent: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]", "_", parent)[:48] or "parent"
    if not re.match(r"[A-Za-z_]", base):
        base = "p_" + base
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _quoted(label: str) -> str:
    return json.dumps(label, ensure_ascii=False) if '"' not in label else "'" + label + "'"


def train_hierarchy(
    data: str | os.PathLike[str] | Dataset,
    out_dir: str | os.PathLike[str],
    *,
    sep: str = "/",
    parent_col: str | None = None,
    text_col: str = "text",
    label_col: str = "label",
    max_chars: int | None = None,
    quality: str = "auto",
    time_limit: float | str | None = "auto",
    seed: int = 0,
    flat: bool = True,
    on_progress: Callable[[str], None] | None = None,
) -> HierarchyReport:
    """Train a router and one model per parent with several children, each into its own registry
    under ``out_dir/stages``, and write ``out_dir/pipeline.yaml`` chaining them.

    ``data``: labels written ``parent{sep}child``, or (with ``parent_col``) the child in
    ``label_col`` and the parent in its own column. ``flat``: also train one model over the full
    labels into ``out_dir/flat`` (what the chain is compared with). The other arguments are
    :func:`~offramp.training.train.train`'s, used for every model.

    Example
    -------
    ``train_hierarchy("clinc.csv", "hier/", sep="/", quality="fast")`` then
    ``Chain.from_pipeline("hier/pipeline.yaml").run("what's my balance").label``
    """
    started = time.perf_counter()
    say = on_progress or (lambda _m: None)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty", "give a new directory for the chain (it holds one registry per stage)")
    if isinstance(data, Dataset):
        ds = data
        if ds.labels is None:
            raise UsageError("the data has no labels")
        parents, children = split_labels([str(x) for x in ds.labels], sep)
    else:
        kw: dict[str, Any] = {"text_col": text_col, "label_col": label_col}
        if max_chars is not None:
            kw["max_chars"] = max_chars
        ds = read_dataset(data, **kw)
        if parent_col is None:
            parents, children = split_labels([str(x) for x in ds.labels or []], sep, ds.data_rows().tolist())
        else:
            kw["label_col"] = parent_col
            par = read_dataset(data, **kw)
            if par.texts != ds.texts:
                raise DataError(
                    f"{data}: some rows have a {label_col} but no {parent_col}, or the reverse",
                    "give every row both its parent and its child label",
                )
            parents, children = [str(x) for x in par.labels or []], [str(x) for x in ds.labels or []]
            empty = [i for i, (p, c) in enumerate(zip(parents, children)) if not p.strip() or not c.strip()]
            if empty:
                raise DataError(f"{data}: row {ds.data_rows()[empty[0]]} has an empty parent or child")
    texts = list(ds.texts)
    full = [p + sep + c for p, c in zip(parents, children)]
    tree: dict[str, list[str]] = {}
    for p, c in zip(parents, children):
        if c not in tree.setdefault(p, []):
            tree[p].append(c)
    tree = {p: sorted(cs) for p, cs in sorted(tree.items())}
    if len(tree) < 2:
        raise UsageError(
            f"every label has the parent {next(iter(tree))!r}: a router needs two parents or more",
            "train a flat model instead (offramp train without --hierarchy)",
        )
    warnings = list(ds.warnings)
    single = {p: cs[0] for p, cs in tree.items() if len(cs) == 1}
    if single:
        warnings.append(
            f"{len(single)} parent(s) have one child only and need no model: "
            + ", ".join(f"{p}{sep}{c}" for p, c in list(single.items())[:5])
            + (" ..." if len(single) > 5 else "")
        )
    held = set(gate_split(full, seed=seed).tolist())
    if not held:
        raise UsageError("the data is too small to hold out a gate set (no label has 5 examples)")
    train_rows = [i for i in range(len(texts)) if i not in held]
    gate_rows = sorted(held)
    common: dict[str, Any] = {"quality": quality, "time_limit": time_limit, "seed": seed}
    stages_dir = out / "stages"
    stages_dir.mkdir(parents=True, exist_ok=True)
    trained: list[StageTrained] = []

    shared: list[NgramFeaturizer] = []  # the router's n-gram features, once it has them

    def fit(
        name: str, rows: list[int], gate: list[int], labels: Sequence[str], where: Path, parent: str | None
    ) -> StageTrained:
        say(f"training {name} ({len(rows):,} rows, {len(set(labels[i] for i in rows))} labels)")
        t0 = time.perf_counter()
        model, rep = train(
            [texts[i] for i in rows],
            [labels[i] for i in rows],
            registry=where,
            gate=([texts[i] for i in gate], [labels[i] for i in gate]),
            # a child model built on its router's n-grams: the chain computes a message's features once
            featurizer=shared[0] if shared and parent is not None else None,
            **common,
        )
        if parent is None and name == "router" and type(model) is TfidfLinear:
            shared.append(model.featurizer_)
        assert rep.registry is not None
        return StageTrained(
            name,
            sorted({labels[i] for i in rows}),
            len(rows),
            str(getattr(rep, "winner", "")),
            float(getattr(rep, "cv_macro_f1", 0.0) or 0.0),
            str(where.relative_to(out)),
            rep.registry.version,
            parent,
            round(time.perf_counter() - t0, 2),
        )

    trained.append(fit("router", train_rows, gate_rows, parents, stages_dir / "router", None))
    taken = {"router", "guard"}
    stage_docs: list[dict[str, Any]] = [{"name": "guard", "kind": "guard"}]
    router_doc: dict[str, Any] = {"name": "router", "kind": "classify", "model": "stages/router"}
    if single:
        router_doc["suffix"] = dict(single)
    stage_docs.append(router_doc)
    for parent, kids in tree.items():
        if len(kids) == 1:
            continue
        name = _stage_name(parent, taken)
        rows = [i for i in train_rows if parents[i] == parent]
        gate = [i for i in gate_rows if parents[i] == parent]
        trained.append(fit(name, rows, gate, children, stages_dir / name, parent))
        stage_docs.append(
            {
                "name": name,
                "kind": "classify",
                "model": f"stages/{name}",
                "when": f"router.label == {_quoted(parent)}",
            }
        )
    flat_trained = fit("flat", train_rows, gate_rows, full, out / "flat", None) if flat else None
    pipeline = out / PIPELINE_FILE
    doc = {"label_sep": sep, "stages": stage_docs}
    header = (
        "# a chain trained by offramp: the router picks the parent, the parent's model the child;\n"
        "# each stage's model is a registry of its own (retrain and promote one without the others)\n"
    )
    pipeline.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return HierarchyReport(
        str(out),
        str(pipeline),
        sep,
        len(train_rows),
        len(gate_rows),
        tree,
        trained,
        single,
        flat_trained,
        round(time.perf_counter() - started, 2),
        warnings,
    )
