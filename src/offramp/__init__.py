"""offramp: move a narrow text task off a paid LLM onto a small local model, and prove the move.

The public API, in the order a migration uses it::

    from offramp import train, evaluate, load, Cascade

    model, report = train(texts, labels, quality="fast")      # choose, calibrate, fit
    print(report.winner, report.cv_macro_f1)
    model.save("model/")                                       # a model directory (JSON + .npz, hashed)
    result = evaluate(load("model/"), test_texts, test_labels)  # EvalReport; .to_dict() is `eval --json`
    decision = Cascade(model).run("thanks a lot!")              # guard -> model -> fallback -> action

The estimators (:class:`TfidfLinear`, :class:`StackedLinear`) follow scikit-learn's contract, so
``clone``, ``cross_val_score`` and ``GridSearchCV`` work on a list of texts.
"""

from typing import TYPE_CHECKING, Any

from offramp.version import __version__

# name -> module; imported on first use, so `python -m offramp --help` does not load scikit-learn
_LAZY = {
    # data
    "Dataset": "offramp.data.io",
    "read_dataset": "offramp.data.io",
    # estimators and training
    "TextClassifier": "offramp.estimators.base",
    "TfidfLinear": "offramp.estimators.tfidf",
    "StackedLinear": "offramp.estimators.stacked",
    "TfidfMultiLabel": "offramp.estimators.multilabel",
    "StackedMultiLabel": "offramp.estimators.multilabel",
    "AutoTextClassifier": "offramp.training.auto",
    "train": "offramp.training.train",
    "TrainReport": "offramp.training.report",
    "check_labels": "offramp.training.noise",
    "retrain": "offramp.training.retrain",
    "RetrainResult": "offramp.training.retrain",
    # model directories and versions
    "load": "offramp.registry.records",
    "save_model": "offramp.modeldir.store",
    "Registry": "offramp.registry.versions",
    # the LLM side
    "label": "offramp.llm.label",
    "import_logs": "offramp.llm.logs",
    "ChatClient": "offramp.llm.client",
    "LLMConfig": "offramp.llm.client",
    "LLMError": "offramp.llm.client",
    # proving it
    "evaluate": "offramp.evaluation.evaluate",
    "evaluate_llm": "offramp.evaluation.llm",
    "build_report": "offramp.evaluation.report",
    "EvalReport": "offramp.evaluation.results",
    "price_the_move": "offramp.costs.calculator",
    "CostInputs": "offramp.costs.calculator",
    "CostReport": "offramp.costs.calculator",
    "compute_costs": "offramp.costs.calculator",
    # serving it
    "Cascade": "offramp.runtime.cascade",
    "Chain": "offramp.chain.run",
    "train_hierarchy": "offramp.chain.hierarchy",
    "Decision": "offramp.runtime.decision",
    "ActionResult": "offramp.runtime.decision",
    "Settings": "offramp.runtime.config",
    "create_app": "offramp.serving.app",
    "PrivacyGuard": "offramp.privacy.guard",
    "mask": "offramp.privacy.files",
    "EgressPolicy": "offramp.egress.policy",
    "EgressRefused": "offramp.egress.policy",
    "AuditLog": "offramp.audit.log",
    # keeping it off the LLM
    "export_pool": "offramp.capture.pool",
    "shadow_report": "offramp.monitoring.shadow",
    "drift_report": "offramp.monitoring.drift",
    # errors
    "OfframpError": "offramp.errors",
    "UsageError": "offramp.errors",
    "DataError": "offramp.errors",
    "InputError": "offramp.errors",
    "ModelDirError": "offramp.errors",
}
# old spellings of a name: still importable, with a DeprecationWarning naming the new one
_DEPRECATED = {"load_model": "load", "LLMClient": "ChatClient"}

__all__ = [
    "Dataset",
    "read_dataset",
    "TextClassifier",
    "TfidfLinear",
    "StackedLinear",
    "TfidfMultiLabel",
    "StackedMultiLabel",
    "AutoTextClassifier",
    "train",
    "TrainReport",
    "check_labels",
    "retrain",
    "RetrainResult",
    "load",
    "save_model",
    "Registry",
    "label",
    "import_logs",
    "ChatClient",
    "LLMConfig",
    "LLMError",
    "evaluate",
    "evaluate_llm",
    "build_report",
    "EvalReport",
    "price_the_move",
    "CostInputs",
    "CostReport",
    "compute_costs",
    "Cascade",
    "Chain",
    "train_hierarchy",
    "Decision",
    "ActionResult",
    "Settings",
    "create_app",
    "PrivacyGuard",
    "mask",
    "EgressPolicy",
    "EgressRefused",
    "AuditLog",
    "export_pool",
    "shadow_report",
    "drift_report",
    "OfframpError",
    "UsageError",
    "DataError",
    "InputError",
    "ModelDirError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _DEPRECATED:
        import warnings

        new = _DEPRECATED[name]
        warnings.warn(f"offramp.{name} is deprecated; use offramp.{new}", DeprecationWarning, stacklevel=2)
        return __getattr__(new)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'offramp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from offramp.audit.log import AuditLog
    from offramp.capture.pool import export_pool
    from offramp.chain.hierarchy import train_hierarchy
    from offramp.chain.run import Chain
    from offramp.costs.calculator import CostInputs, CostReport, compute_costs, price_the_move
    from offramp.data.io import Dataset, read_dataset
    from offramp.egress.policy import EgressPolicy, EgressRefused
    from offramp.errors import DataError, InputError, ModelDirError, OfframpError, UsageError
    from offramp.estimators.base import TextClassifier
    from offramp.estimators.multilabel import StackedMultiLabel, TfidfMultiLabel
    from offramp.estimators.stacked import StackedLinear
    from offramp.estimators.tfidf import TfidfLinear
    from offramp.evaluation.evaluate import evaluate
    from offramp.evaluation.llm import evaluate_llm
    from offramp.evaluation.report import build_report
    from offramp.evaluation.results import EvalReport
    from offramp.llm.client import ChatClient, LLMConfig, LLMError
    from offramp.llm.label import label
    from offramp.llm.logs import import_logs
    from offramp.modeldir.store import save_model
    from offramp.monitoring.drift import drift_report
    from offramp.monitoring.shadow import shadow_report
    from offramp.privacy.files import mask
    from offramp.privacy.guard import PrivacyGuard
    from offramp.registry.records import load
    from offramp.registry.versions import Registry
    from offramp.runtime.cascade import Cascade
    from offramp.runtime.config import Settings
    from offramp.runtime.decision import ActionResult, Decision
    from offramp.serving.app import create_app
    from offramp.training.auto import AutoTextClassifier
    from offramp.training.noise import check_labels
    from offramp.training.report import TrainReport
    from offramp.training.retrain import RetrainResult, retrain
    from offramp.training.train import train
