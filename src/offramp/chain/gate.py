"""A chain's end-to-end gate: a stage's candidate judged by what the whole chain answers with it.

A candidate can help its own stage's gate set and still hurt the chain (it answers its question
better on the messages of its gate set, but worse on the messages the stages before it send it, or
in a way that turns full labels wrong). :func:`chain_gate` returns a judge for
:func:`~offramp.training.retrain.retrain`'s ``also``: the chain's full labels on the end-to-end
gate set with the stage's current model, against the same chain with the candidate in its place
(the other stages keep their versions), compared as any gate compares two models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from offramp.chain.run import Chain, Stage
from offramp.data.io import Dataset, read_dataset
from offramp.errors import UsageError
from offramp.estimators.base import TextClassifier
from offramp.registry.gate import Verdict, compare
from offramp.registry.records import is_registry
from offramp.registry.versions import Registry
from offramp.runtime.cascade import Cascade


def find_stage(chain: Chain, stage: str | os.PathLike[str]) -> Stage:
    """The classify stage named ``stage``, or the one serving the registry at that path."""
    for s in chain.classify_stages:
        if s.name == str(stage):
            return s
    target = Path(stage).resolve()
    for s in chain.classify_stages:
        if s.registry is not None and s.registry.resolve() == target:
            return s
    names = ", ".join(s.name for s in chain.classify_stages)
    raise UsageError(f"no stage of the chain is {stage}", f"name a stage ({names}) or the registry one serves")


def end_to_end_gate(pipeline: Path, gate: Dataset | str | os.PathLike[str] | None) -> tuple[list[str], list[str], str]:
    """(texts, full labels, source): ``gate``, else the frozen gate set of the flat model's registry
    written beside the pipeline by ``train --hierarchy`` (it holds the full labels)."""
    if isinstance(gate, Dataset):
        return list(gate.texts), [str(x) for x in gate.labels or []], gate.path
    if gate is not None:
        ds = read_dataset(gate)
        return list(ds.texts), [str(x) for x in ds.labels or []], str(gate)
    flat = pipeline.parent / "flat"
    stored = Registry(flat).gate_set() if is_registry(flat) else None
    if stored is None:
        raise UsageError(
            f"no end-to-end gate set for {pipeline}",
            "give a labelled file of full labels (--chain-gate FILE), or train the chain with --hierarchy",
        )
    return stored[0], stored[1], f"{flat} (frozen gate set)"


def chain_gate(
    pipeline: str | os.PathLike[str],
    stage: str | os.PathLike[str],
    gate: Dataset | str | os.PathLike[str] | None = None,
    *,
    max_class_drop: float = 0.02,
    n_boot: int = 1000,
) -> Callable[[TextClassifier], Verdict]:
    """A judge of ``stage``'s candidates by the chain's full labels on the end-to-end gate set."""
    path = Path(pipeline)
    chain = Chain.from_pipeline(path, llm=False)
    target = find_stage(chain, stage)
    texts, labels, source = end_to_end_gate(path, gate)
    if not texts:
        raise UsageError(f"the end-to-end gate set ({source}) is empty")
    current = chain.predict(texts)

    def judge(candidate: TextClassifier) -> Verdict:
        kept = target.cascade
        assert kept is not None
        target.cascade = Cascade(candidate, thresholds=dict(kept.thresholds))
        try:
            proposed = chain.predict(texts)
        finally:
            target.cascade = kept
        verdict = compare(labels, current, proposed, max_class_drop=max_class_drop, n_boot=n_boot)
        verdict["source"] = source
        return verdict

    return judge
